import json
import subprocess
import sys

import numpy as np
import pytest

from models.unet import build_unet, padding_for
from preprocessing import PreprocessConfig, build_cache, load_dataset
from search.running.unet import dice_iou, ensure_unet, masker_for
from preprocessing.synthetic import make_image_set, make_split_dataset


def test_unet_any_size_is_padded_to_multiples_of_8_and_cropped_back():
    assert padding_for(120, 160) == (0, 0) and padding_for(60, 80) == (4, 0) and padding_for(13, 17) == (3, 7)
    model = build_unet(13, 17)
    assert model.output_shape == (None, 13, 17, 1)
    assert model.get_layer("pad_to_8") is not None


def test_dice_and_iou():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2], b[1:3] = True, True  # 8 and 8 pixels, 4 shared
    assert dice_iou(a, b) == pytest.approx((0.5, 1 / 3))
    assert dice_iou(a, a) == (1.0, 1.0)


def test_unet_learns_the_true_foreground(tmp_path):
    truth = {}
    make_image_set(tmp_path / "data" / "TRAIN", cells_per_class=10, copies=4, masks=truth, seed=3)
    data = load_dataset(tmp_path / "data")
    report = ensure_unet(data.train, (24, 32), tmp_path / "cache", epochs=25, patience=25, batch_size=16)
    import keras

    model = keras.saving.load_model(report.model_dir / "model.keras")
    gray = build_cache(data.train, PreprocessConfig(size=(24, 32), color="gray"), tmp_path / "cache")
    predicted = model.predict(gray.read(np.arange(len(gray))), verbose=0)[..., 0] > 0.5
    true = np.stack([truth[f] for f in data.train.files])
    _, iou = dice_iou(predicted, true)
    assert iou > 0.8, iou
    assert report.iou > 0.8  # against the Otsu masks it was trained on


def test_unet_is_trained_once_even_by_concurrent_workers(tmp_path):
    make_split_dataset(tmp_path / "data", cells_per_class=5, copies=2)
    # Enough steps for these 16x16 shapes to pass the Dice check (the defaults' 10 epochs of
    # 2 batches do not); both processes ask for it at once, one trains it.
    script = (
        "import sys; from preprocessing import load_dataset, ImageSpec, build_cache;"
        "from search.running.unet import ensure_unet, masker_for;"
        "train = load_dataset(sys.argv[1]).train; spec = ImageSpec(size=(16, 16), mask='unet');"
        "ensure_unet(train, (16, 16), sys.argv[2], epochs=25, patience=25, batch_size=8);"
        "c = build_cache(train, spec, sys.argv[2], masker=masker_for(spec, train, sys.argv[2]));"
        "print(int(c.read(range(len(c))).sum()))")
    env_root = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "data"), str(tmp_path / "cache")],
                              cwd=env_root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs[0][1][-2000:]
    assert outs[0][0] == outs[1][0]  # the same masked images
    logs = outs[0][1] + outs[1][1]
    assert logs.count("training the U-Net") == 1
    data = load_dataset(tmp_path / "data")
    meta = ensure_unet(data.train, (16, 16), tmp_path / "cache").meta  # the stored one, not a new one
    assert meta["padding"] == {"bottom": 0, "right": 0} and meta["epochs"] == 25
    spec = PreprocessConfig(size=(16, 16), mask="unet").image
    masked = build_cache(data.train, spec, tmp_path / "cache", masker=masker_for(spec, data.train, tmp_path / "cache"))
    plain = build_cache(data.train, PreprocessConfig(size=(16, 16)), tmp_path / "cache")
    idx = np.arange(len(masked))
    m, p = masked.read(idx), plain.read(idx)
    assert np.all((m == p) | (m == 0))  # masking only zeroes pixels
    assert (m == 0).sum() > (p == 0).sum()


def test_a_refused_unet_is_remembered_for_its_data_size_and_settings(tmp_path, caplog):
    """Issue 24, point 15: every mask=unet trial asks for the same U-Net; one refused for low
    Dice is refused again at once, not trained again per trial."""
    from search.running.unet import REFUSED, UnetError

    make_split_dataset(tmp_path / "data", cells_per_class=3, copies=2)
    train = load_dataset(tmp_path / "data").train
    ask = dict(epochs=1, patience=1, batch_size=8)  # one epoch at 16x16 stays far below MIN_DICE

    def trainings(**extra) -> int:
        caplog.clear()
        with pytest.raises(UnetError, match="below 0.5") as refused:
            ensure_unet(train, (16, 16), tmp_path / "cache", **{**ask, **extra})
        trained = sum("training the U-Net" in r.getMessage() for r in caplog.records)
        return trained, str(refused.value)

    assert trainings()[0] == 1
    again, why = trainings()
    assert again == 0 and "refused earlier with the same settings" in why and REFUSED in why
    assert trainings(retrain=True)[0] == 1  # asked for: trained again
    assert trainings(seed=1)[0] == 1  # other settings are another attempt
