"""Network families: each is its configuration and its builder, registered by name. A family
defined here, outside models/, builds and trains through the registry and the worker's
trainer, and is stored and read back, with no edit to models/config.py or to any shipped
family. Records of the flat days (every family's fields in one dict) still load."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from models import FAMILIES, CnnConfig, FastConfig, FcnConfig, ModelConfig, register_family
from preprocessing import PreprocessConfig
from studies import TrialConfig

FLAT_FAST = {"arch": "fast", "kernels": [3, 3, 3], "dropout": 0.2, "width": 0.5, "dense_units": 128,
             "batch_norm": True, "separable": True, "pooling": "max", "augment": "flip"}


@dataclass(frozen=True)
class TinyConfig(ModelConfig):
    """One conv layer of `filters` (times width), global average pooling, softmax."""

    arch = "tiny"
    filters: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.filters < 1:
            raise ValueError(f"filters {self.filters} must be at least 1")


def tiny_head(x, config: TinyConfig, num_classes: int):
    from keras import layers

    x = layers.Conv2D(max(1, round(config.filters * config.width)), config.kernels[0], activation="relu",
                      name="conv")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(config.dropout, name="dropout")(x)
    return layers.Dense(num_classes, activation="softmax", name="predictions")(x)


@pytest.fixture
def tiny():
    register_family(TinyConfig, tiny_head)
    yield TinyConfig
    FAMILIES.pop("tiny", None)


def test_a_family_registered_outside_models_is_stored_and_read_back(tiny):
    config = TrialConfig(PreprocessConfig(size=(16, 16)), TinyConfig(kernels=(3,), filters=4, dropout=0.0))
    again = TrialConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and type(again.model) is TinyConfig
    assert config.to_dict()["model"] == {"arch": "tiny", "kernels": [3], "dropout": 0.0, "width": 1.0, "filters": 4}
    assert config.flat()["model.filters"] == 4 and config.flat(sections=False)["filters"] == 4
    assert ModelConfig("tiny", kernels=(3,), filters=2) == TinyConfig(kernels=(3,), filters=2)
    with pytest.raises(ValueError, match="filters 0"):
        TinyConfig(filters=0)


def test_a_family_registered_outside_models_builds_and_trains_in_the_workers_trainer(tiny, tmp_path):
    from preprocessing.synthetic import make_split_dataset
    from search.running.data import DataProvider
    from search.running.training import train

    make_split_dataset(tmp_path / "data", cells_per_class=4, copies=2, size=(16, 16))
    config = TrialConfig(PreprocessConfig(size=(16, 16)), TinyConfig(kernels=(3,), filters=4, dropout=0.0),
                         batch_size=8, learning_rate=3e-3)
    data = DataProvider(str(tmp_path / "data"), None, 0.25, 0).get(config.preprocess)
    result = train(config, data, epochs=3, patience=3, seed=0)
    assert result.model.name == "tiny" and result.epochs_run == 3 and not result.diverged
    assert {layer.name for layer in result.model.layers} >= {"conv", "pool", "predictions"}
    assert result.params_count == (3 * 3 * 3 * 4 + 4) + (4 * data.num_classes + data.num_classes)


def test_one_name_one_family(tiny):
    @dataclass(frozen=True)
    class Impostor(ModelConfig):
        arch = "tiny"

    with pytest.raises(ValueError, match="family 'tiny' is already"):
        register_family(Impostor, tiny_head)
    register_family(TinyConfig, tiny_head)  # the same class again (a module imported anew) replaces it
    with pytest.raises(ValueError, match="unknown architecture 'vit'; known: cnn, fcn, fast, tiny"):
        ModelConfig.from_dict({"arch": "vit"})


def test_a_flat_record_loads_as_its_family_dropping_what_it_does_not_use():
    assert ModelConfig.from_dict(FLAT_FAST) == FastConfig(kernels=(3, 3, 3), dropout=0.2, width=0.5, batch_norm=True,
                                                          separable=True, pooling="max", augment="flip")
    fcn = ModelConfig.from_dict({**FLAT_FAST, "arch": "fcn"})
    assert fcn == FcnConfig(kernels=(3, 3, 3), dropout=0.2, width=0.5)
    assert fcn.to_dict() == fcn.used() == {"arch": "fcn", "kernels": [3, 3, 3], "dropout": 0.2, "width": 0.5}
    assert ModelConfig.from_dict({**FLAT_FAST, "arch": "cnn"}).to_dict()["dense_units"] == 128
    assert ModelConfig.from_dict({"kernels": [2, 2]}) == FcnConfig(kernels=(2, 2))  # no arch: the old default
    with pytest.raises(ValueError, match="a fcn configuration is not a CnnConfig"):
        CnnConfig.from_dict({"arch": "fcn"})


def test_the_old_constructor_builds_the_familys_configuration():
    """.py studies written against the one flat ModelConfig run unchanged (their digest is
    fixed for their study)."""
    assert ModelConfig("fcn", (2,) * 5, 0.2, 1.0, 128) == FcnConfig(kernels=(2,) * 5, dropout=0.2)
    assert ModelConfig(arch="cnn", dense_units=64, augment="flip") == CnnConfig(dense_units=64)
    assert ModelConfig() == FcnConfig()
    with pytest.raises(TypeError, match="FastConfig has no field 'dense_unit'"):
        ModelConfig(arch="fast", dense_unit=3)


def test_check_input_is_the_familys():
    with pytest.raises(ValueError, match="augment dihedral turns images by 90 degrees"):
        TrialConfig(PreprocessConfig(size=(16, 20)), FastConfig(augment="dihedral"))
    TrialConfig(PreprocessConfig(size=(16, 16)), FastConfig(augment="dihedral"))
    TrialConfig(PreprocessConfig(size=(16, 20)), FcnConfig())


def test_mlflow_params_and_best_json_are_one_flattening():
    config = TrialConfig(PreprocessConfig(size=(60, 80)), FastConfig(kernels=(3,) * 3, augment="flip"))
    sectioned, plain = config.flat(), config.flat(sections=False)
    assert list(plain) == [k.split(".", 1)[1] if k.startswith(("pre.", "model.")) else k for k in sectioned]
    assert list(plain.values()) == list(sectioned.values())
    assert sectioned["pre.size"] == plain["size"] == "60x80" and sectioned["model.augment"] == "flip"
    assert "model.dense_units" not in sectioned  # the fast net has no dense layer: nothing to log


def test_configurations_import_without_tensorflow():
    code = ("import sys; from studies import load_study, check_params; "
            "check_params(load_study('campaign'), {}, 'campaign'); "
            "from models import FAMILIES, build_model; "
            "print(sorted(FAMILIES), 'keras' in sys.modules, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[1]).stdout
    assert out.split() == ["['cnn',", "'fast',", "'fcn']", "False", "False"]
