"""Export a trained Keras model as a TensorFlow SavedModel for Vertex AI online prediction.

The exported ``serving_default`` signature takes what Vertex sends for a bytes input,
``{"instances": [{"image_bytes": {"b64": "..."}}]}``: a batch of encoded images (JPEG,
PNG, GIF or BMP; any size; color or grayscale). Each image is decoded, converted to
grayscale with the ITU-R 601 weights (as PIL's ``convert("L")`` and OpenCV's
``COLOR_BGR2GRAY``), rounded to whole 8-bit levels as the training JPEGs are, and
resized to the model's input side with area averaging. The outputs are:

  - ``scores``: (N, 7) float32 class probabilities, in ``CLASSES`` order;
  - ``label``: (N,) string, the most probable class;
  - ``classes``: (N, 7) string, the class names, so each prediction is self-describing.

Only standard TensorFlow ops are used, so the SavedModel can be served by the Vertex
prebuilt TensorFlow containers; no Python or Keras is needed at serving time.

The SavedModel always computes in float32 (``float32_copy``): a model trained under
``precision=auto`` keeps its training dtype policy (bfloat16 on CPUs with AVX-512-BF16 or
AMX, float16 on older GPUs), and the machines that serve it may emulate those slowly.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from fer_pipeline.classes import CLASSES
from fer_pipeline.errors import FerError, UnusableFileError
from fer_pipeline.files import MODEL_FILE, resolve_keras_file
from fer_pipeline.model import float32_copy, load_model

log = logging.getLogger(__name__)

KERAS_MODEL_FILE = MODEL_FILE  # the name predict.py imports
INPUT_NAME = "image_bytes"  # Vertex base64-decodes {"b64": ...} into this input
SIGNATURE_NAME = "serving_default"
# ITU-R 601-2 luma, the weights PIL and OpenCV use for RGB -> L.
_LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def load_keras_model(path: Path):
    """Load a saved Keras model (no optimizer state) for inference, computing in float32
    as the exported SavedModel does (``float32_copy``)."""

    return float32_copy(load_model(resolve_keras_file(path)))


def model_input_side(model, source: str | Path | None = None) -> int:
    """The square input side of a model taking (side, side, 1) images and giving the classes.

    Args:
        source: what the model was loaded from (its file, a registry reference), named in
            the message; "The model" without it.

    Raises:
        UnusableFileError: when the model's input or output does not match the project's contract.
    """
    named = f"Model {source}" if source is not None else "The model"
    advice = f"pass a model.keras written by training (fer_pipeline.model.build_model: 48x48 grayscale in, {len(CLASSES)} classes out)"
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 1 or shape[1] is None:
        raise UnusableFileError(
            f"{named} takes input of shape {shape}, not (None, side, side, 1) gray images; {advice}."
        )
    out = tuple(model.output_shape)
    if out[-1] != len(CLASSES):
        raise UnusableFileError(
            f"{named} gives output of shape {out}, not {len(CLASSES)} class scores ({', '.join(CLASSES)}); {advice}."
        )
    return int(shape[1])


def decode_to_model_input(image_bytes, side: int):
    """Decode one encoded image to a (side, side, 1) float32 tensor of 0..255 gray levels."""
    import tensorflow as tf

    rgb = tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8, expand_animations=False)
    rgb = tf.cast(rgb, tf.float32)
    # Round to whole levels: the model was trained on 8-bit grayscale, and this keeps
    # gray-content color images bit-identical to their grayscale twins.
    gray = tf.round(tf.tensordot(rgb, tf.constant(_LUMA_WEIGHTS, tf.float32), axes=[[2], [0]]))[..., tf.newaxis]
    resized = tf.image.resize(gray, (side, side), method="area")
    return tf.ensure_shape(resized, (side, side, 1))


def build_serving_fn(model, side: int):
    """A function from a batch of encoded images to ``{"scores", "label", "classes"}``."""
    import tensorflow as tf

    class_names = tf.constant(list(CLASSES))

    def serve(image_bytes):
        pixels = tf.map_fn(
            lambda one: decode_to_model_input(one, side),
            image_bytes,
            fn_output_signature=tf.TensorSpec((side, side, 1), tf.float32),
        )
        scores = tf.cast(model(pixels, training=False), tf.float32)
        batch = tf.shape(scores)[0]
        return {
            "scores": scores,
            "label": tf.gather(class_names, tf.argmax(scores, axis=-1)),
            "classes": tf.tile(class_names[tf.newaxis, :], [batch, 1]),
        }

    return serve


def export_serving_model(keras_model_path: Path, export_dir: Path) -> Path:
    """Write a SavedModel whose ``serving_default`` signature classifies encoded images.

    Args:
        keras_model_path: a ``.keras`` file or a folder holding ``model.keras``.
        export_dir: where the SavedModel goes. It must not exist, be empty, or hold an
            earlier SavedModel (which is replaced).

    Returns:
        ``export_dir``, holding ``saved_model.pb`` and ``variables/``.

    Raises:
        FerError: the model does not match the project's input/output contract, or
            ``export_dir`` holds something other than a SavedModel.
    """
    import keras
    import tensorflow as tf

    export_dir = Path(export_dir)
    check_export_dir_replaceable(export_dir)
    model = load_keras_model(keras_model_path)
    side = model_input_side(model, source=keras_model_path)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name=SIGNATURE_NAME,
        fn=build_serving_fn(model, side),
        input_signature=[tf.TensorSpec(shape=(None,), dtype=tf.string, name=INPUT_NAME)],
    )
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target, then swap in, so a failed export leaves no half model.
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=export_dir.parent))
    try:
        archive.write_out(str(staging), verbose=False)
        if export_dir.exists():
            shutil.rmtree(export_dir)
        os.replace(staging, export_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("Exported serving SavedModel (input %r, %dx%d) to %s", INPUT_NAME, side, side, export_dir)
    return export_dir


def check_export_dir_replaceable(export_dir: Path) -> None:
    """Refuse to overwrite a folder that is neither empty nor an earlier SavedModel."""
    if not export_dir.exists():
        return
    if not export_dir.is_dir():
        raise FerError(f"Export target {export_dir} is a file; pass a folder path.")
    if any(export_dir.iterdir()) and not (export_dir / "saved_model.pb").is_file():
        raise FerError(
            f"Export target {export_dir} is not empty and holds no saved_model.pb; "
            "choose an empty or new folder so nothing else gets overwritten."
        )
