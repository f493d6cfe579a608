"""The model ``fer-pipeline serve`` answers for: finding and loading it (a registry
reference or a local path, exported to a SavedModel when only the Keras file is there),
warming it up, and TensorFlow Serving's status and metadata answers about it."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fer_pipeline.errors import FerError
from fer_pipeline.export import SIGNATURE_NAME
from fer_pipeline.files import MODEL_FILE
from fer_pipeline.serve_requests import run_signature

log = logging.getLogger("fer_pipeline.serve")  # the server's logger, one name for all its modules

SAVED_MODEL_FILE = "saved_model.pb"
# The name TensorFlow Serving gives a model served from a bare path (no registry name).
DEFAULT_MODEL_NAME = "default"
DEFAULT_SIDE = 48  # FER-2013's; a model loaded from Keras says its own


@dataclass
class ServedModel:
    """A loaded model: the SavedModel's serving signature (for :predict) and, when the
    folder has one, the Keras model (for :detect)."""

    name: str
    version: int
    source: str
    signature: Any
    keras_model: Any | None
    saved_model: Any = None  # the signature's variables live as long as this object
    prediction_log: Any = None  # a prediction_log.PredictionLog with --log
    side: int = DEFAULT_SIDE  # the model's input side (for the logged crops)

    @property
    def version_text(self) -> str:
        return str(self.version)


# ---- loading ---------------------------------------------------------------------------


def locate_model(ref: str, registry_root: Path | None) -> tuple[str, int, Path]:
    """``(name, version, path)`` for a local path or a registry reference.

    Raises:
        FerError: neither a path nor a registered version (the message says what exists).
    """
    from fer_pipeline.registry import resolve_registered

    if ref.startswith("gs://"):
        raise FerError(
            f"serve reads local models; copy {ref} to a folder first (gcloud storage cp -r) or serve a registry reference."
        )
    path = Path(ref)
    if path.exists():
        return DEFAULT_MODEL_NAME, 1, path
    version = resolve_registered(ref, registry_root, tried="not a local path")
    return version.name, version.version, version.path


def saved_model_folder(path: Path, scratch: Path) -> Path:
    """The SavedModel for ``path``: the folder itself when it holds one, otherwise its
    ``model.keras`` (or the ``.keras`` file) exported into ``scratch`` as the pipeline exports it."""
    from fer_pipeline.export import export_serving_model, resolve_keras_file

    if path.is_dir() and (path / SAVED_MODEL_FILE).is_file():
        return path
    keras_file = resolve_keras_file(path)  # FerError naming what is missing
    log.info("No %s beside %s: exporting it for serving", SAVED_MODEL_FILE, keras_file)
    return export_serving_model(keras_file, scratch / "serving")


def keras_file_for(path: Path) -> Path | None:
    """The Keras file :detect runs, when ``path`` has one."""
    if path.is_file() and path.suffix == ".keras":
        return path
    candidate = path / MODEL_FILE
    return candidate if candidate.is_file() else None


def load_served_model(
    ref: str, registry_root: Path | None, scratch: Path, name: str | None = None, log_path: Path | None = None
) -> ServedModel:
    """Load the serving signature (and the Keras model beside it) of ``ref``; with
    ``log_path``, every face it classifies is appended to that prediction log."""
    import tensorflow as tf

    from fer_pipeline.export import load_keras_model, model_input_side
    from fer_pipeline.prediction_log import PredictionLog, model_version_for

    registered_name, version, path = locate_model(ref, registry_root)
    folder = saved_model_folder(path, scratch)
    saved_model = tf.saved_model.load(str(folder))
    if SIGNATURE_NAME not in saved_model.signatures:
        raise FerError(f"{folder} has no {SIGNATURE_NAME!r} signature; export it with fer_pipeline.export.")
    keras_file = keras_file_for(path)
    keras_model = load_keras_model(keras_file) if keras_file else None
    model = ServedModel(
        name=name or registered_name,
        version=version,
        source=str(path),
        signature=saved_model.signatures[SIGNATURE_NAME],
        keras_model=keras_model,
        saved_model=saved_model,
        side=model_input_side(keras_model, keras_file) if keras_model is not None else DEFAULT_SIDE,
    )
    warm_up(model)  # before the log opens: the warm-up's blank image is no prediction
    if log_path is not None:
        model.prediction_log = PredictionLog(log_path, model_version_for(ref, registry_root))
    return model


def warm_up(model: ServedModel) -> None:
    """One call of each path before the first request, so that it does not pay the set-up."""
    import numpy as np

    from fer_pipeline.predict import ModelOutputError, classify_photo

    run_signature(model, [blank_png()])
    if model.keras_model is not None:
        try:
            classify_photo(model.keras_model, np.zeros((48, 48), np.uint8), skip_detection=True)
        except ModelOutputError as exc:  # NaN or logits: refused before serving, the model named
            raise ModelOutputError(exc.problem, f"Model {model.source}") from None
        load_face_detector()


def load_face_detector() -> None:
    """Load the default face detector now (seconds: MTCNN's networks, BlazeFace, CenterFace), not on
    the first :detect request; a detector that cannot load leaves :predict serving."""
    import numpy as np

    from fer_pipeline.faces import DEFAULT_OPTIONS, detect_faces

    try:
        detect_faces(np.full((96, 96), 128, np.uint8), DEFAULT_OPTIONS)
    except FerError as exc:
        log.warning("The face detector did not load, so :detect requests will fail: %s", exc)


def blank_png(side: int = 48) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (side, side), 128).save(buffer, format="PNG")
    return buffer.getvalue()


# ---- status and metadata (TF Serving's GET answers) -------------------------------------


def model_status(model: ServedModel) -> dict[str, Any]:
    """TF Serving's GetModelStatusResponse as JSON."""
    return {
        "model_version_status": [
            {"version": model.version_text, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }


def model_metadata(model: ServedModel) -> dict[str, Any]:
    """TF Serving's GetModelMetadataResponse as JSON: the serving signature's tensors."""
    inputs = model.signature.structured_input_signature[1]
    outputs = model.signature.structured_outputs
    return {
        "model_spec": {"name": model.name, "signature_name": "", "version": model.version_text},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    SIGNATURE_NAME: {
                        "inputs": {key: tensor_info(spec, spec.name or key) for key, spec in inputs.items()},
                        "outputs": {key: tensor_info(tensor, tensor.name) for key, tensor in outputs.items()},
                        "method_name": "tensorflow/serving/predict",
                    }
                }
            }
        },
    }


def tensor_info(tensor: Any, name: str) -> dict[str, Any]:
    from tensorflow.core.framework import types_pb2

    dims = tensor.shape.as_list() if tensor.shape.rank is not None else []
    return {
        "dtype": types_pb2.DataType.Name(tensor.dtype.as_datatype_enum),
        "tensor_shape": {
            "dim": [{"size": str(-1 if d is None else d), "name": ""} for d in dims],
            "unknown_rank": tensor.shape.rank is None,
        },
        "name": name,
    }
