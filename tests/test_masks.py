import numpy as np
import pytest

from preprocessing import DataError, PreprocessConfig
from preprocessing.masks import apply_mask, otsu_foreground, otsu_mask


def _known_foreground(channels=3):
    rng = np.random.default_rng(0)
    img = rng.normal(200, 8, (40, 60, channels)).clip(0, 255).astype(np.uint8)
    truth = np.zeros((40, 60), bool)
    truth[10:30, 20:45] = True
    img[truth] = rng.normal(70, 8, (truth.sum(), channels)).clip(0, 255).astype(np.uint8)
    return img, truth


@pytest.mark.parametrize("channels", [3, 1])
def test_otsu_keeps_the_cell_and_zeroes_the_background(channels):
    img, truth = _known_foreground(channels)
    for c in range(channels):
        assert np.array_equal(otsu_foreground(np.ascontiguousarray(img[:, :, c])), truth)
    out = otsu_mask(img)
    assert np.all(out[~truth] == 0)
    assert np.array_equal(out[truth], img[truth])


def test_each_channel_thresholded_on_its_own():
    img, truth = _known_foreground(3)
    img[:, :, 2] = 128  # flat channel: Otsu puts everything on one side
    img[:5, :5, 2] = 250
    out = apply_mask(img, "otsu")
    assert np.all(out[:, :, 0][~truth] == 0) and np.all(out[:, :, 0][truth] > 0)


def test_unknown_masks_are_clear_errors():
    assert PreprocessConfig(mask="unet").mask == "unet"
    with pytest.raises(DataError, match="mask 'blur' is not one of none, otsu, unet"):
        PreprocessConfig(mask="blur")
    with pytest.raises(DataError, match="runs on whole batches"):
        apply_mask(np.zeros((4, 4, 3), np.uint8), "unet")


def test_black_rotation_corners_do_not_hide_the_cell():
    img, truth = _known_foreground(3)
    img[:8, :8] = 0  # a rotated augmentation's black corner
    img[-6:, -10:] = 0
    out = otsu_mask(img)
    assert np.array_equal(out[truth], img[truth])  # the cell is kept
    assert np.all(out[~truth] == 0)
