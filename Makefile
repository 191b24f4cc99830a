# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
DEMO   ?= demo-run

.PHONY: install demo test test-fast ui clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# A short real search that learns, on the bundled sample, with the embedded stores (SQLite +
# local MLflow): the `fast` study at 60x80 with most choices fixed; the trials differ in
# dropout, label smoothing and weight decay.
DEMO_PARAMS = --param depth=4 --param kernel=3 --param width=0.5 --param batch_norm=true \
	--param separable=false --param pooling=avg --param augment=flip --param mask=none \
	--param scaling=pixel --param batch_size=32 --param learning_rate=0.003 --param lr_schedule=cosine
demo: install
	mkdir -p $(DEMO)
	cd $(DEMO) && ../$(VENV)/bin/search launch --study fast --trials 4 --data-dir ../sample/blood-cells \
		--cache-dir .cache $(DEMO_PARAMS) --epochs 20 --patience 8
	cd $(DEMO) && ../$(VENV)/bin/search best --study-name fast --top 4
	@echo
	@echo "Next:"
	@echo "  cd $(DEMO) && ../$(VENV)/bin/search ui                       # MLflow UI + optuna-dashboard, a link per study"
	@echo "  cd $(DEMO) && ../$(VENV)/bin/search evaluate --study-name fast   # the best trial on the sample's TEST fields"
	@echo "  cd $(DEMO) && ../$(VENV)/bin/search predict --study-name fast ../sample/blood-cells/TEST/MONOCYTE"

# Two processes: the end-to-end tests spend much of their time starting TensorFlow and
# servers. Tests that share a server or a study stay together (xdist_group).
test: install
	$(PY) -m pytest -n 2 --dist loadgroup

test-fast: install
	$(PY) -m pytest -m "not slow"

clean:
	rm -rf $(DEMO) .pytest_cache
