"""The serving contract with Vertex AI's default prediction image: every kind of model the
pipeline exports (the compact CNN with and without each test-time view set, DenseNet169
inside the flip wrapper) loads in that image's TensorFlow (2.15, `tf2-cpu.2-15`) and scores
a Vertex-format request body exactly as the exporting TensorFlow does. (The bare DenseNet169
is not exported on its own: its layers are the wrapped one's, and each export costs about a
minute; the bare export path is the compact CNN's.)

The older TensorFlow lives in its own virtualenv (`make serving-compat`:
build/serving-compat-venv, pinned by requirements-serving-compat.lock), which `make test`
builds once; FER_COMPAT_PYTHON names another Python instead. Without either the tests
skip, saying how to build it."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_pipeline import synthetic
from fer_pipeline.config import TrainConfig
from fer_pipeline.export import INPUT_NAME, SIGNATURE_NAME, export_serving_model

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

ROOT = Path(__file__).resolve().parents[1]
VENV_PYTHON = ROOT / "build" / "serving-compat-venv" / "bin" / "python"
COMPAT_PYTHON = os.environ.get("FER_COMPAT_PYTHON") or (str(VENV_PYTHON) if VENV_PYTHON.exists() else "")
LOCK = ROOT / "requirements-serving-compat.lock"

# Run in the older TensorFlow: read the request body as TF Serving's REST API does
# ({"b64": ...} values become bytes), call the signature, print the scores.
SCORE_REQUEST = textwrap.dedent(
    """
    import base64, json, sys
    import tensorflow as tf
    serve = tf.saved_model.load(sys.argv[1]).signatures[sys.argv[2]]
    body = json.load(open(sys.argv[3]))
    blobs = [base64.b64decode(instance[sys.argv[4]]["b64"]) for instance in body["instances"]]
    out = serve(**{sys.argv[4]: tf.constant(blobs)})
    print(json.dumps({"version": tf.__version__, "scores": out["scores"].numpy().tolist()}))
    """
)

MODELS = {
    "densenet169-tta": TrainConfig(backbone="densenet169", weights="none", tta=True),
    "compact": TrainConfig(backbone="compact", weights="none", compact_widths=(8, 16)),
    "compact-tta10": TrainConfig(backbone="compact", weights="none", compact_widths=(8, 16), tta=True, tta_shift=1),
    "compact-tta-crops": TrainConfig(
        backbone="compact", weights="none", compact_widths=(8, 16), tta=True, tta_crops=0.8
    ),
    "compact-tta20": TrainConfig(  # both ten-view sets (tta_shift with tta_crops)
        backbone="compact", weights="none", compact_widths=(8, 16), tta=True, tta_shift=1, tta_crops=0.8
    ),
}


def serving_image_tensorflow() -> str:
    """The TensorFlow version of the pipeline's default serving image (tf2-cpu.2-15 -> 2.15)."""
    import inspect

    from pipelines.training import make_pipeline

    default = inspect.signature(make_pipeline("vertex").pipeline_func).parameters["serving_image"].default
    major, minor = re.search(r"tf2-(?:cpu|gpu)\.(\d+)-(\d+)", default).groups()
    return f"{major}.{minor}"


def test_the_side_venv_pins_the_serving_images_tensorflow():
    pinned = re.search(r"^tensorflow-cpu==(\S+)$", LOCK.read_text(), re.M).group(1)
    assert pinned.startswith(serving_image_tensorflow() + "."), (pinned, serving_image_tensorflow())


def vertex_body(images: list[np.ndarray]) -> dict:
    blobs = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        blobs.append(base64.b64encode(buffer.getvalue()).decode())
    return {"instances": [{INPUT_NAME: {"b64": b}} for b in blobs]}


@pytest.fixture(scope="module")
def request_body() -> dict:
    images, _ = synthetic.make_images(2, seed=3)  # 14 images, two per class
    return vertex_body(list(images))


@pytest.mark.slow
@pytest.mark.skipif(not COMPAT_PYTHON, reason="no TF 2.15 virtualenv: `make serving-compat` builds it (make test does)")
@pytest.mark.parametrize("name", sorted(MODELS))
def test_export_scores_the_same_in_the_serving_images_tensorflow(name, request_body, tmp_path):
    from fer_pipeline.model import build_model, with_flip_tta

    cfg = MODELS[name]
    keras.utils.set_random_seed(1)
    model = build_model(cfg)
    if cfg.tta:
        model = with_flip_tta(model, shift=cfg.tta_shift, crop=cfg.tta_crops)
    model.save(tmp_path / "model.keras")
    serving = export_serving_model(tmp_path / "model.keras", tmp_path / "serving")
    body = tmp_path / "request.json"
    body.write_text(json.dumps(request_body))
    script = tmp_path / "score.py"
    script.write_text(SCORE_REQUEST)

    run = subprocess.run(
        [COMPAT_PYTHON, str(script), str(serving), SIGNATURE_NAME, str(body), INPUT_NAME],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    older = json.loads(run.stdout.strip().splitlines()[-1])
    assert older["version"].startswith(serving_image_tensorflow() + "."), older["version"]

    serve = tf.saved_model.load(str(serving)).signatures[SIGNATURE_NAME]
    blobs = [base64.b64decode(i[INPUT_NAME]["b64"]) for i in request_body["instances"]]
    here = serve(**{INPUT_NAME: tf.constant(blobs)})["scores"].numpy()
    assert here.shape == (len(blobs), 7)
    np.testing.assert_allclose(np.asarray(older["scores"]), here, atol=1e-5)
