"""Our models the MLflow way: one MLflow model per trial, fold bag, ensemble or export.

The model is a pyfunc whose `predict` takes raw images and applies the trial's own
preprocessing (decode, size, fit, colour, Otsu or U-Net mask; TTA and the bag are inside the
network, scaling is its first layer), because it is a `Predictor` rebuilt from an export
folder (`model.keras` + `preprocess.json` [+ `unet.keras`]) carried as the model's artifact
`export`. Nothing of the preprocessing is written twice.

    input:  a pandas DataFrame with a column `image`: encoded image bytes (JPEG, PNG, ...),
            the same bytes as a base64 string (what a REST client sends), or a file path
    output: a DataFrame with `class`, one probability column per class, and `error` (None,
            or why that row's image could not be read: one bad image never fails the batch)

The network of a single model (not of an ensemble, whose members each have their own
preprocessing) is the same MLmodel's `keras` flavour: `mlflow.keras.load_model(uri)` returns
it (import `models` first: it registers our custom layers), pointing at the very file the
pyfunc serves (`artifacts/export/model.keras`), so it is stored once.

The model carries its code (`code/`: search, preprocessing, models, studies) and pins the
versions of the packages it imports (requirements.txt), so it loads where bloodsearch is not
installed too.
"""
from __future__ import annotations

import base64
import binascii
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import mlflow.pyfunc
import pandas as pd

IMAGE_COLUMN = "image"
ARTIFACT = "export"
ROOT = Path(__file__).resolve().parents[2]
CODE = ("search", "preprocessing", "models", "studies")
# What our code imports, pinned to the versions installed where the model is logged.
REQUIREMENTS = ("mlflow", "tensorflow", "keras", "numpy", "pandas", "pillow", "opencv-python", "scikit-learn",
                "optuna", "sqlalchemy", "click", "requests")
ENTRY = Path(__file__).with_name("mlflow_entry.py")  # models from code: the model is this file, no pickle
PATH_MAX = 4096  # longer strings are never paths: base64 only


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """The pyfunc: a Predictor (or EnsemblePredictor) from the export folder it carries."""

    def load_context(self, context) -> None:
        from search.serving.folders import load_folder

        self.predictor = load_folder(context.artifacts[ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return predict_frame(self.predictor, model_input)


def _image(value) -> Path | bytes | str:
    """A cell of the `image` column as Predictor takes it (a path or bytes), or an error."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if not isinstance(value, str):
        return f"expected encoded image bytes, a base64 string or a file path, got {type(value).__name__}"
    text = value.strip()
    if len(text) < PATH_MAX and "\n" not in text and os.path.isfile(text):
        return Path(text)
    if text.startswith("data:") and "," in text:  # a data URL: data:image/jpeg;base64,...
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return "neither a file that exists nor base64" if len(text) < PATH_MAX else "not base64"


def predict_frame(predictor, model_input):
    """The pyfunc's predict: the DataFrame (or list) of images in, one row per image out."""
    import numpy as np

    if isinstance(model_input, pd.DataFrame):
        if IMAGE_COLUMN not in model_input.columns:
            raise ValueError(f"the input needs a column {IMAGE_COLUMN!r} (encoded image bytes, base64 or a path); "
                             f"got {list(model_input.columns)}")
        values = list(model_input[IMAGE_COLUMN])
    elif isinstance(model_input, dict) and IMAGE_COLUMN in model_input:
        values = list(model_input[IMAGE_COLUMN])
    else:
        values = list(model_input)
    items = [_image(v) for v in values]
    readable = [i for i, item in enumerate(items) if not isinstance(item, str)]
    rows = predictor.predict([items[i] for i in readable]) if readable else []
    out = [{"error": item} if isinstance(item, str) else None for item in items]
    for i, row in zip(readable, rows):
        out[i] = row
    classes = list(predictor.classes)
    # Object columns keep None (pandas' string columns would make it NaN); with an unreadable
    # image the probabilities are objects too, so JSON gets null, never the invalid NaN.
    frame = {"class": pd.Series([r.get("class") for r in out], dtype=object)}
    bad = any("error" in r for r in out)
    for c in classes:
        values = [r["probabilities"][c] if "probabilities" in r else None for r in out]
        frame[c] = pd.Series(values, dtype=object if bad else np.float64)
    frame["error"] = pd.Series([r.get("error") for r in out], dtype=object)
    return pd.DataFrame(frame, columns=["class", *classes, "error"])


def signature(classes):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema

    return ModelSignature(
        inputs=Schema([ColSpec(DataType.string, IMAGE_COLUMN)]),
        outputs=Schema([ColSpec(DataType.string, "class", required=False),
                        *[ColSpec(DataType.double, c, required=False) for c in classes],
                        ColSpec(DataType.string, "error", required=False)]))


def input_example(image: Path | None):
    """One image as base64, as a REST client sends it; a blank PNG without a sample image."""
    if image is not None and Path(image).is_file():
        data = Path(image).read_bytes()
    else:
        import io

        from PIL import Image

        buffer = io.BytesIO()
        Image.new("RGB", (32, 24), (128, 128, 128)).save(buffer, format="PNG")
        data = buffer.getvalue()
    return pd.DataFrame({IMAGE_COLUMN: [base64.b64encode(data).decode("ascii")]})


def first_image(folder) -> Path | None:
    """The first image file under folder (its TRAIN split's, sorted), for an input example."""
    from preprocessing.dataset import IMAGE_SUFFIXES

    if not folder or not Path(folder).is_dir():
        return None
    if (Path(folder) / "TRAIN").is_dir():  # the split layout: a training image, never TEST's
        folder = Path(folder) / "TRAIN"
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES:
                return Path(root) / f
    return None


def requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in REQUIREMENTS:
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            out.append(name)
    return out


class _Flavor:
    """What Model.log calls to write the model: the pyfunc, then the keras flavour over the
    same network file."""

    __name__ = "bloodsearch"

    @staticmethod
    def save_model(path, mlflow_model, folder, single, validate_serving_input=True, **kwargs):
        import keras

        mlflow.pyfunc.save_model(path=path, mlflow_model=mlflow_model, python_model=str(ENTRY),
                                 artifacts={ARTIFACT: str(folder)}, code_paths=[str(ROOT / c) for c in CODE],
                                 **kwargs)
        if single:
            conf = mlflow_model.flavors["python_function"]["artifacts"][ARTIFACT]["path"]
            (Path(path) / conf / "keras_module.txt").write_text("keras")
            mlflow_model.add_flavor("keras", data=conf, keras_version=keras.__version__,
                                    keras_backend=keras.backend.backend(), save_exported_model=False)
            mlflow_model.save(os.path.join(path, "MLmodel"))


@dataclass(frozen=True)
class LoggedModel:
    model_id: str
    uri: str  # models:/<model_id>


def log_model(tracker, run_id: str, predictor, name: str, example_image: Path | None = None,
              validate: bool = True, tags: dict | None = None) -> LoggedModel:
    """Log predictor (a Predictor or EnsemblePredictor) as one MLflow model of run_id, in the
    run's experiment; validate: load it back and predict the input example once (seconds)."""
    from mlflow.models import Model
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    from search.serving.predictor import Predictor

    client = tracker.client
    run = client.get_run(run_id)
    # Made here, in the run's experiment: left to Model.log without an active (fluent) run, the
    # model would land in the Default experiment. Model.log resolves the tracking URI globally,
    # hence MLflow's own (private) _use_tracking_uri around it; nothing else here is global.
    model = client.create_logged_model(run.info.experiment_id, name=name, source_run_id=run_id,
                                       tags={"bloodsearch.model": "pyfunc", **{k: str(v) for k, v in (tags or {}).items()}},
                                       params={k: str(v) for k, v in run.data.params.items()})
    with tempfile.TemporaryDirectory(prefix="bloodsearch-mlflow-model-") as tmp:
        folder = predictor.save(Path(tmp) / ARTIFACT)
        with _use_tracking_uri(tracker.uri):
            Model.log(artifact_path=None, name=name, flavor=_Flavor, run_id=run_id, model_id=model.model_id, folder=folder,
                      single=isinstance(predictor, Predictor), signature=signature(predictor.classes),
                      input_example=input_example(example_image), pip_requirements=requirements(),
                      validate_serving_input=validate)
    return LoggedModel(model.model_id, f"models:/{model.model_id}")


def log_and_register(tracker, run_id: str, predictor, name: str, data_dir: str, register_name: str | None,
                     alias: str | None, tags: dict, say: Callable[[str], None] = lambda line: None) -> dict:
    """Log predictor as an MLflow model of run_id and register it (and its alias) when asked:
    what `export --log-model/--register` and `ensemble --register` share. A failure is one line."""
    from search.errors import SearchError
    from search.stores.tracking import one_line

    try:
        logged = log_model(tracker, run_id, predictor, name, first_image(data_dir), tags=tags)
    except SearchError:
        raise
    except Exception as exc:
        raise SearchError(f"cannot log the MLflow model to run {run_id}: {type(exc).__name__}: {one_line(exc)}") from None
    out = {"model_id": logged.model_id, "model_uri": logged.uri, "run_id": run_id}
    say(f"logged MLflow model {logged.uri} to run {run_id}")
    if register_name:
        version = tracker.register(logged.model_id, register_name, run_id, alias)
        out["registered"] = {"name": register_name, "version": version, "alias": alias}
        say(f"registered as model {register_name!r} version {version}"
            + (f", alias {alias!r}: models:/{register_name}@{alias}" if alias else f": models:/{register_name}/{version}"))
    return out

