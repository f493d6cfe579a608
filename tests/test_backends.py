"""One trainer, two backends: the library's phase loop (callbacks, class weights, schedule,
early stopping, history) trains the same tiny model to the same numbers on Keras'
TensorFlow and JAX backends. Keras fixes its backend per process, so each backend
trains in a process of its own, from the same initial weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax", reason="the JAX backend needs jax (the dev extra installs it)")

ROOT = Path(__file__).resolve().parents[1]

TRAIN_ONE_PHASE = r"""
import json, sys
from pathlib import Path

import keras
import numpy as np

from fer_pipeline import synthetic
from fer_pipeline.config import SplitConfig, TrainConfig
from fer_pipeline.dataset import FerDataset
from fer_pipeline.feed_numpy import NumpyFeed
from fer_pipeline.model import build_model
from fer_pipeline.split import make_split
from fer_pipeline.trainer import run_phase

out, weights = Path(sys.argv[1]), Path(sys.argv[2])
images, labels = synthetic.make_images(12, seed=4)
keep = np.concatenate([np.flatnonzero(labels == k)[:n] for k, n in enumerate([12, 4, 12, 12, 8, 12, 12])])
n = len(keep)  # unequal classes, so the class weights count
dataset = FerDataset(images=images[keep], labels=labels[keep], splits=np.array(["train"] * n),
                     source_splits=np.array(["Training"] * n), keys=np.array([f"s{i}" for i in range(n)]))
split = make_split(dataset, SplitConfig(val_fraction=0.25, seed=4))
# Dropout off, no augmentation, float32 (auto may pick bfloat16): random draws and 16-bit kernels differ
# between backends, the arithmetic must not.
cfg = TrainConfig(backbone="compact", weights="none", compact_widths=(4, 8), dense_units=(16,), dropouts=(0.0,),
                  horizontal_flip=False, width_shift=0.0, height_shift=0.0, batch_size=16, frozen_epochs=3,
                  frozen_lr=3e-3, schedule="plateau", reduce_lr_patience=1, class_weighting=True,
                  class_weight_power=0.5, label_smoothing=0.1, seed=4, precision="float32")
feed = NumpyFeed()

def make_model():
    model = build_model(feed.model_config(cfg))
    if weights.exists():
        model.load_weights(weights)
    else:
        model.save_weights(weights)
    return model

result = run_phase("frozen", make_model, dataset, split, cfg, out, cfg.frozen_epochs, cfg.frozen_lr, feed)
images = dataset.images[split.val_indices][..., None].astype("float32")
print(json.dumps({"backend": keras.backend.backend(), "history": result.history,
                  "predictions": keras.ops.convert_to_numpy(result.model(images)).tolist()}))
"""


def _train(backend: str, tmp_path: Path, weights: Path) -> dict:
    env = dict(
        os.environ,
        KERAS_BACKEND=backend,
        PYTHONPATH=str(ROOT / "src"),
        TF_CPP_MIN_LOG_LEVEL="3",
        JAX_PLATFORMS="cpu",
        CUDA_VISIBLE_DEVICES="",
    )
    done = subprocess.run(
        [sys.executable, "-c", TRAIN_ONE_PHASE, str(tmp_path / backend), str(weights)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_same_tiny_model_trains_to_the_same_numbers_on_tensorflow_and_jax(tmp_path):
    weights = tmp_path / "initial.weights.h5"
    on_tf = _train("tensorflow", tmp_path, weights)  # writes the initial weights
    on_jax = _train("jax", tmp_path, weights)  # starts from them
    assert (on_tf["backend"], on_jax["backend"]) == ("tensorflow", "jax")
    assert set(on_tf["history"]) == set(on_jax["history"]) >= {"loss", "val_loss", "accuracy", "learning_rate"}
    for key, values in on_tf["history"].items():
        np.testing.assert_allclose(on_jax["history"][key], values, rtol=2e-3, atol=2e-4, err_msg=key)
    assert on_tf["history"]["loss"][-1] < on_tf["history"]["loss"][0]  # it did train
    np.testing.assert_allclose(np.array(on_jax["predictions"]), np.array(on_tf["predictions"]), atol=2e-3)
    for backend in ("tensorflow", "jax"):  # the phase's files, written alike on both
        record = json.loads((tmp_path / backend / "history.json").read_text())
        assert record["epochs_run"] == 3 and record["config"]["frozen_lr"] == 3e-3
