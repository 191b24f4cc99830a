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

# A short real search on the bundled sample with the embedded stores (SQLite + local MLflow).
demo: install
	mkdir -p $(DEMO)
	cd $(DEMO) && ../$(VENV)/bin/search launch --study fcn --trials 4 --data-dir ../sample/blood-cells \
		--cache-dir .cache --param size=60x80 --param batch_size=32 --epochs 4 --patience 3
	cd $(DEMO) && ../$(VENV)/bin/search studies
	@echo "MLflow UI: cd $(DEMO) && ../$(VENV)/bin/search ui"

# Two processes: the end-to-end tests spend much of their time starting TensorFlow and
# servers. Tests that share a server or a study stay together (xdist_group).
test: install
	$(PY) -m pytest -n 2 --dist loadgroup

test-fast: install
	$(PY) -m pytest -m "not slow"

clean:
	rm -rf $(DEMO) .pytest_cache
