"""The serving export computes in float32 whatever dtype policy the model trained under."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fer_pipeline import synthetic
from fer_pipeline.config import TrainConfig
from fer_pipeline.export import SIGNATURE_NAME, export_serving_model
from fer_pipeline.model import build_model, float32_copy, load_model, with_flip_tta

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

TINY = TrainConfig(backbone="compact", weights="none", compact_widths=(4, 4, 8, 8), dense_units=(8, 8))


def all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)


@pytest.fixture(scope="module")
def bf16_model_file(tmp_path_factory):
    """A TTA-wrapped compact model built and saved under mixed_bfloat16, as precision=auto
    trains on CPUs with AVX-512-BF16."""
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = with_flip_tta(build_model(TINY), shift=1)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    path = tmp_path_factory.mktemp("bf16") / "model.keras"
    model.save(path)
    return path


def pixels(n: int = 4) -> np.ndarray:
    images, _ = synthetic.make_images(1, seed=3)
    return images[:n, ..., None].astype("float32")


def test_the_copy_computes_in_float32_with_the_trained_weights(bf16_model_file):
    trained = load_model(bf16_model_file)
    assert any(layer.dtype_policy.name == "mixed_bfloat16" for layer in all_layers(trained))
    copy = float32_copy(trained)
    assert {layer.dtype_policy.name for layer in all_layers(copy)} == {"float32"}
    for ours, theirs in zip(copy.get_weights(), trained.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    # bfloat16 keeps 8 bits of mantissa: the two agree to bfloat16's rounding, not to float32's
    np.testing.assert_allclose(copy.predict(pixels(), verbose=0), trained.predict(pixels(), verbose=0), atol=0.03)


def test_a_float32_model_is_served_as_it_is():
    model = build_model(TINY)
    assert float32_copy(model) is model


def test_the_saved_model_serves_the_float32_copy(bf16_model_file, tmp_path):
    serving = export_serving_model(bf16_model_file, tmp_path / "serving")
    serve = tf.saved_model.load(str(serving)).signatures[SIGNATURE_NAME]
    images = pixels(3)
    encoded = []
    for image in images[..., 0].astype("uint8"):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    scores = serve(image_bytes=tf.constant(encoded))["scores"].numpy()
    expected = float32_copy(load_model(bf16_model_file)).predict(images, verbose=0)
    np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_predict_and_serve_load_the_float32_copy(bf16_model_file):
    from fer_pipeline.export import load_keras_model

    assert {layer.dtype_policy.name for layer in all_layers(load_keras_model(bf16_model_file))} == {"float32"}
