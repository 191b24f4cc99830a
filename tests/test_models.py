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


@pytest.mark.parametrize("arch", ["cnn", "fcn", "fast"])
@pytest.mark.parametrize("shape", [(60, 80, 3), (240, 320, 1), (10, 12, 3)])
def test_builds_at_any_size(arch, shape):
    model = build_model(ModelConfig(arch, kernels=(3, 2, 4, 2, 2), width=0.125), shape, 5)
    out = model(np.zeros((2, *shape), np.uint8))
    assert out.shape == (2, 5)
    np.testing.assert_allclose(np.asarray(out).sum(axis=1), 1.0, rtol=1e-5)  # probabilities


@pytest.mark.parametrize("arch", ["cnn", "fcn", "fast"])
def test_tiny_model_learns_synthetic_shapes(arch):
    from preprocessing.synthetic import draw

    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    y = np.arange(64) % 4
    x = np.stack([draw(int(c), rng, (16, 16)) for c in y])
    model = build_model(ModelConfig(arch, kernels=(3,) * 5, dropout=0.0, width=0.25, dense_units=16,
                                    batch_norm=arch == "fast"),
                        (16, 16, 3), 4, scaling=("global", np.array(180.0), np.array(60.0)))
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    first = model.evaluate(x, y, verbose=0)[0]
    history = model.fit(x, y, batch_size=16, epochs=15, verbose=0)
    assert history.history["loss"][-1] < 0.5 * first


def test_unknown_architecture():
    with pytest.raises(ValueError, match="unknown architecture 'vit'"):
        build_model(ModelConfig("vit"), (8, 8, 3), 4)


@pytest.mark.parametrize("options", [dict(batch_norm=True, separable=True, pooling="avg", augment="flip"),
                                     dict(batch_norm=False, separable=False, pooling="max", augment="dihedral"),
                                     dict(batch_norm=True, separable=False, pooling="avg", augment="rotate")])
def test_fast_net_options_save_load_and_augment_only_in_training(tmp_path, options):
    from models import load_model
    from models.layers import SparseSmoothedCrossentropy

    model = build_model(ModelConfig("fast", kernels=(3,) * 4, width=0.25, dropout=0.2, **options), (16, 16, 3), 4)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert ("SeparableConv2D" in kinds) == options["separable"] and ("BatchNormalization" in kinds) == options["batch_norm"]
    assert "GlobalAveragePooling2D" in kinds if options["pooling"] == "avg" else "GlobalMaxPooling2D" in kinds
    x = np.random.default_rng(0).integers(0, 255, (8, 16, 16, 3)).astype(np.uint8)
    np.testing.assert_allclose(model.predict(x, verbose=0), model.predict(x, verbose=0))  # no augmentation
    augmented = [np.asarray(model.layers[2](model.layers[1](x), training=True)) for _ in range(4)]
    assert any(not np.allclose(a, np.asarray(model.layers[1](x))) for a in augmented)  # flips in training
    model.compile("adam", SparseSmoothedCrossentropy(0.1, 4), metrics=["accuracy"])
    model.save(tmp_path / "m.keras")
    again = load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5)


def test_dihedral_augmentation_needs_square_images():
    with pytest.raises(ValueError, match="augment=dihedral needs square images"):
        build_model(ModelConfig("fast", kernels=(3,) * 3, augment="dihedral"), (16, 20, 3), 4)


def test_smoothed_crossentropy_matches_the_formula():
    from models.layers import SparseSmoothedCrossentropy

    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], np.float32)
    y = np.array([0, 2])
    eps = 0.15
    target = np.full((2, 3), eps / 3) + (1 - eps) * np.eye(3)[y]
    expected = float(np.mean(-(target * np.log(probs)).sum(axis=1)))
    assert float(SparseSmoothedCrossentropy(eps, 3)(y, probs)) == pytest.approx(expected, rel=1e-5)
    assert float(SparseSmoothedCrossentropy(0.0, 3)(y, probs)) == pytest.approx(
        float(keras.losses.SparseCategoricalCrossentropy()(y, probs)), rel=1e-5)
