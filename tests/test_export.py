"""The serving export: encoded image bytes in, the same probabilities as the Keras model out."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_pipeline import synthetic
from fer_pipeline.classes import CLASSES
from fer_pipeline.errors import FerError
from fer_pipeline.export import INPUT_NAME, SIGNATURE_NAME, export_serving_model

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")


def build_tiny_model(num_classes: int = len(CLASSES)):
    """A stand-in with fer_pipeline.model's contract: (48, 48, 1) raw pixels -> softmax."""
    inputs = keras.Input((48, 48, 1), name="image")
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A briefly trained tiny model saved as <dir>/model.keras, as trainer.py writes it."""
    keras.utils.set_random_seed(0)
    images, labels = synthetic.make_images(8, seed=0)
    model = build_tiny_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(images[..., None].astype("float32"), labels, epochs=3, batch_size=16, verbose=0)
    directory = tmp_path_factory.mktemp("trained")
    model.save(directory / "model.keras")
    return directory


@pytest.fixture(scope="module")
def keras_model(model_dir):
    return keras.models.load_model(model_dir / "model.keras", compile=False)


@pytest.fixture(scope="module")
def serving_dir(model_dir, tmp_path_factory) -> Path:
    return export_serving_model(model_dir, tmp_path_factory.mktemp("export") / "serving")


@pytest.fixture(scope="module")
def serve(serving_dir):
    return tf.saved_model.load(str(serving_dir)).signatures[SIGNATURE_NAME]


@pytest.fixture(scope="module")
def face_pixels() -> np.ndarray:
    """One 48x48 uint8 test image with structure (a synthetic 'happy' sample)."""
    images, labels = synthetic.make_images(1, seed=7)
    return images[list(labels).index(CLASSES.index("happy"))]


def encode(array: np.ndarray, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def upscale(gray: np.ndarray, fy: int, fx: int) -> np.ndarray:
    """Nearest-neighbour upscale by whole factors: area-resizing back gives the original."""
    return np.repeat(np.repeat(gray, fy, axis=0), fx, axis=1)


def as_gray_rgb(gray: np.ndarray) -> np.ndarray:
    return np.stack([gray, gray, gray], axis=-1)


def vertex_request(blobs: list[bytes]) -> str:
    """The JSON body Vertex online prediction receives for a bytes input."""
    return json.dumps({"instances": [{INPUT_NAME: {"b64": base64.b64encode(b).decode()}} for b in blobs]})


def call_like_tf_serving(serve, request_body: str) -> dict[str, np.ndarray]:
    """Decode {"b64": ...} values to bytes as TF Serving's REST API does, then call the signature."""
    instances = json.loads(request_body)["instances"]
    blobs = [base64.b64decode(instance[INPUT_NAME]["b64"]) for instance in instances]
    outputs = serve(**{INPUT_NAME: tf.constant(blobs)})
    return {name: tensor.numpy() for name, tensor in outputs.items()}


def keras_scores(model, gray_images: list[np.ndarray]) -> np.ndarray:
    batch = np.stack([g.astype(np.float32) for g in gray_images])[..., None]
    return model.predict(batch, verbose=0)


def test_signature_takes_image_bytes_and_returns_scores_label_classes(serve):
    inputs = serve.structured_input_signature[1]
    assert list(inputs) == [INPUT_NAME]
    assert inputs[INPUT_NAME].dtype == tf.string and inputs[INPUT_NAME].shape.as_list() == [None]
    outputs = serve.structured_outputs
    assert set(outputs) == {"scores", "label", "classes"}
    assert outputs["scores"].dtype == tf.float32 and outputs["scores"].shape.as_list() == [None, len(CLASSES)]


def test_png_of_any_size_and_color_gives_the_keras_probabilities(serve, keras_model, face_pixels):
    blobs = [
        encode(face_pixels),  # 48x48 grayscale, as FER-2013
        encode(upscale(face_pixels, 2, 2)),  # 96x96 grayscale
        encode(as_gray_rgb(upscale(face_pixels, 2, 3))),  # 144x96 color PNG, gray content
        encode(np.dstack([as_gray_rgb(face_pixels), np.full((48, 48), 255, np.uint8)])),  # RGBA
    ]
    out = call_like_tf_serving(serve, vertex_request(blobs))

    expected = keras_scores(keras_model, [face_pixels])[0]
    assert out["scores"].shape == (4, len(CLASSES))
    np.testing.assert_allclose(out["scores"], np.tile(expected, (4, 1)), rtol=0, atol=1e-6)
    label = CLASSES[int(np.argmax(expected))]
    assert [v.decode() for v in out["label"]] == [label] * 4
    assert [[c.decode() for c in row] for row in out["classes"]] == [list(CLASSES)] * 4


def test_color_png_is_converted_with_luma_weights(serve, keras_model, face_pixels):
    # Saturated colors, where luma conventions differ most (pure green: 150 in ITU-R 601,
    # 182 in Rec. 709), drawn in the face's pattern.
    rgb = np.zeros((48, 48, 3), np.uint8)
    rgb[face_pixels > 110] = (0, 255, 0)
    rgb[face_pixels <= 110] = (255, 0, 64)
    out = call_like_tf_serving(serve, vertex_request([encode(rgb)]))
    pil_gray = np.asarray(Image.fromarray(rgb).convert("L"))  # ITU-R 601-2, what training JPEGs used
    np.testing.assert_allclose(out["scores"][0], keras_scores(keras_model, [pil_gray])[0], atol=1e-6)


def test_odd_sized_color_png_is_area_resized_to_48(serve, keras_model, face_pixels):
    cv2 = pytest.importorskip("cv2")
    big = cv2.resize(face_pixels, (120, 100), interpolation=cv2.INTER_CUBIC)  # w=120, h=100
    out = call_like_tf_serving(serve, vertex_request([encode(as_gray_rgb(big))]))
    # Area averaging in float, as the export does (OpenCV would round uint8 output).
    expected_pixels = cv2.resize(big.astype(np.float32), (48, 48), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(out["scores"][0], keras_scores(keras_model, [expected_pixels])[0], atol=1e-6)


def test_jpeg_bytes_match_within_compression_tolerance(serve, keras_model, face_pixels):
    blob = encode(face_pixels, "JPEG", quality=90)
    out = call_like_tf_serving(serve, vertex_request([blob]))
    decoded = np.asarray(Image.open(io.BytesIO(blob)).convert("L"))
    # TF's and PIL's libjpeg builds may round a few pixels differently; lossy vs the original.
    np.testing.assert_allclose(out["scores"][0], keras_scores(keras_model, [decoded])[0], atol=2e-4)
    np.testing.assert_allclose(out["scores"][0], keras_scores(keras_model, [face_pixels])[0], atol=1e-3)


def test_reexport_replaces_an_earlier_savedmodel(model_dir, tmp_path):
    target = tmp_path / "serving"
    export_serving_model(model_dir / "model.keras", target)  # the .keras file itself works too
    (target / "stale.txt").write_text("from an older export")
    export_serving_model(model_dir, target)
    assert (target / "saved_model.pb").is_file() and not (target / "stale.txt").exists()


def test_export_refuses_a_folder_that_is_not_a_savedmodel(model_dir, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FerError, match="not empty"):
        export_serving_model(model_dir, tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_export_rejects_a_model_without_seven_classes(tmp_path):
    build_tiny_model(num_classes=3).save(tmp_path / "model.keras")
    with pytest.raises(FerError, match="7 classes"):
        export_serving_model(tmp_path, tmp_path / "serving")


def test_export_names_a_missing_model_file(tmp_path):
    with pytest.raises(FerError, match="no model.keras"):
        export_serving_model(tmp_path, tmp_path / "serving")


def test_a_ten_crop_tta_model_exports_and_serves_its_keras_probabilities(model_dir, face_pixels, tmp_path):
    from fer_pipeline.model import load_model, with_flip_tta

    tta = with_flip_tta(load_model(model_dir / "model.keras"), crop=0.8)
    tta.save(tmp_path / "model.keras")
    serve = tf.saved_model.load(str(export_serving_model(tmp_path, tmp_path / "serving"))).signatures[SIGNATURE_NAME]
    out = call_like_tf_serving(serve, vertex_request([encode(face_pixels), encode(face_pixels[:, ::-1])]))
    expected = keras_scores(tta, [face_pixels])[0]
    np.testing.assert_allclose(out["scores"], np.tile(expected, (2, 1)), rtol=0, atol=1e-5)  # the mirror scores alike


# Loading in the serving image's TensorFlow (2.15), for every kind of model: tests/test_serving_compat.py
