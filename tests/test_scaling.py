import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler

from preprocessing import DataError, ScalingStats
from preprocessing.scaling import fit_scaling_stream


@pytest.fixture
def stack():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (37, 5, 6, 3), dtype=np.uint8)
    x[:, 0, 0, 0] = 17  # a constant pixel: std 0
    return x


def _fit(kind, stack, chunk=8):
    return fit_scaling_stream(kind, (stack[i:i + chunk] for i in range(0, len(stack), chunk)), stack.shape[1:])


def test_pixel_matches_standard_scaler_on_flattened_images(stack):
    stats = _fit("pixel", stack)
    flat = stack.reshape(len(stack), -1).astype(np.float64)
    expected = StandardScaler().fit_transform(flat).reshape(stack.shape)
    np.testing.assert_allclose(stats.apply(stack), expected, rtol=1e-5, atol=1e-5)
    assert stats.std[0, 0, 0] == 1.0  # like StandardScaler: a constant feature is left unscaled


def test_global_matches_numpy(stack):
    stats = _fit("global", stack)
    x = stack.astype(np.float64)
    np.testing.assert_allclose(stats.apply(stack), (x - x.mean()) / x.std(), rtol=1e-5, atol=1e-5)


def test_channel_matches_numpy(stack):
    stats = _fit("channel", stack)
    x = stack.astype(np.float64)
    mean, std = x.mean(axis=(0, 1, 2)), x.std(axis=(0, 1, 2))
    np.testing.assert_allclose(stats.apply(stack), (x - mean) / std, rtol=1e-5, atol=1e-5)
    assert stats.mean.shape == (1, 1, 3)


def test_unit_divides_by_255(stack):
    np.testing.assert_allclose(_fit("unit", stack).apply(stack), stack / 255.0, rtol=1e-6)


@pytest.mark.parametrize("kind", ["pixel", "global", "channel", "unit"])
def test_chunking_does_not_matter_and_saves_round_trip(stack, kind, tmp_path):
    a, b = _fit(kind, stack, chunk=1), _fit(kind, stack, chunk=100)
    np.testing.assert_allclose(a.mean, b.mean)
    np.testing.assert_allclose(a.std, b.std)
    a.save(tmp_path / "s.json")
    c = ScalingStats.load(tmp_path / "s.json")
    np.testing.assert_array_equal(c.apply(stack), a.apply(stack))


@pytest.mark.parametrize("kind", ["pixel", "global", "channel", "unit"])
def test_model_layer_applies_the_same_scaling(stack, kind):
    from models.scaling import scaling_layer

    stats = _fit(kind, stack)
    layer = scaling_layer(kind, stats.mean, stats.std)
    np.testing.assert_allclose(np.asarray(layer(stack)), stats.apply(stack), rtol=1e-4, atol=1e-4)


def test_errors(tmp_path):
    with pytest.raises(DataError, match="scaling 'minmax'"):
        fit_scaling_stream("minmax", [], (1, 1, 1))
    with pytest.raises(DataError, match="empty training split"):
        fit_scaling_stream("pixel", [], (1, 1, 1))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DataError, match="bad.json"):
        ScalingStats.load(tmp_path / "bad.json")
