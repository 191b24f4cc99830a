import keras
import numpy as np
import pytest

from models import ModelConfig, build_model, count_trainable
from models.layers import pool_sizes


@pytest.mark.parametrize("arch, expected", [("cnn", 3_312_964), ("fcn", 2_853_892)])
def test_the_studys_parameter_counts(arch, expected):
    model = build_model(ModelConfig(arch, kernels=(2,) * 5), (120, 160, 3), 4)
    assert count_trainable(model) == expected


def test_first_pool_makes_120x160_square():
    assert pool_sizes(120, 160, 5) == [(3, 4), (2, 2), (2, 2), (2, 2), (2, 2)]
    assert pool_sizes(6, 8, 5)[-1] == (1, 1)


@pytest.mark.parametrize("arch", ["cnn", "fcn"])
@pytest.mark.parametrize("shape", [(60, 80, 3), (240, 320, 1), (10, 12, 3)])
def test_builds_at_any_size(arch, shape):
    model = build_model(ModelConfig(arch, kernels=(3, 2, 4, 2, 2), width=0.125), shape, 5)
    out = model(np.zeros((2, *shape), np.uint8))
    assert out.shape == (2, 5)
    np.testing.assert_allclose(np.asarray(out).sum(axis=1), 1.0, rtol=1e-5)  # probabilities


@pytest.mark.parametrize("arch", ["cnn", "fcn"])
def test_tiny_model_learns_synthetic_shapes(arch):
    from synthetic import draw

    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    y = np.arange(64) % 4
    x = np.stack([draw(int(c), rng, (16, 16)) for c in y])
    model = build_model(ModelConfig(arch, kernels=(3,) * 5, dropout=0.0, width=0.25, dense_units=16),
                        (16, 16, 3), 4, scaling=("global", np.array(180.0), np.array(60.0)))
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    first = model.evaluate(x, y, verbose=0)[0]
    history = model.fit(x, y, batch_size=16, epochs=15, verbose=0)
    assert history.history["loss"][-1] < 0.5 * first


def test_unknown_architecture():
    with pytest.raises(ValueError, match="unknown architecture 'vit'"):
        build_model(ModelConfig("vit"), (8, 8, 3), 4)
