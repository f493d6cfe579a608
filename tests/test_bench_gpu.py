"""bench/gpu.py trains through the library's trainer on Keras' JAX backend (as on the GPU
machines, which have no TensorFlow): a one-epoch sweep on a tiny data file."""

from __future__ import annotations

import io
import json
import lzma
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fer_pipeline import synthetic
from fer_pipeline.classes import CLASSES
from fer_pipeline.model import load_model

pytest.importorskip("jax", reason="bench/gpu.py runs Keras on JAX (the dev extra installs it)")
ROOT = Path(__file__).resolve().parents[1]


def test_a_sweep_candidate_trains_through_the_trainer_and_records_its_scores(tmp_path):
    x, y = synthetic.make_images(12, seed=1)
    xv, yv = synthetic.make_images(3, seed=2)
    buffer = io.BytesIO()
    np.savez(buffer, x_train=x, y_train=y, x_val=xv, y_val=yv)
    (tmp_path / "data.npz.xz").write_bytes(lzma.compress(buffer.getvalue()))
    env = dict(
        os.environ,
        KERAS_BACKEND="jax",
        JAX_PLATFORMS="cpu",
        FER_GPU_DATA=str(tmp_path / "data.npz.xz"),
        FER_GPU_RESULTS=str(tmp_path / "results.jsonl"),
        FER_GPU_EPOCH_SCALE="0.02",
        FER_GPU_MODELS=str(tmp_path / "models"),
    )
    done = subprocess.run(
        # One candidate: each costs ~50 s, most of it compiling the scored view wrappers. (Erasing on the
        # NumPy feed, which anchor_augmentation added here, is tests/test_augment.py's.)
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "sweep", "cutmix@3"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = (tmp_path / "results.jsonl").read_text().splitlines()
    result = json.loads(line)
    assert result["kind"] == "sweep" and result["seed"] == 3 and result["epochs"] == [1, 0]
    assert result["overrides"] == {"mix": "cutmix", "mix_alpha": 1.0}  # mixed batches on JAX, through the trainer
    assert result["phases"]["frozen"]["epochs"] == 1 and "finetune" not in result["phases"]
    assert 0.0 <= result["val_accuracy_tta10"] <= 1.0
    assert 0.0 <= result["val_accuracy_tta20"] <= 1.0  # both ten-view sets averaged
    # the trained network is kept for test-time comparisons, and loads with the library's loader
    kept = load_model(tmp_path / "models" / "cutmix@3.keras")
    assert kept.output_shape == (None, len(CLASSES))


def test_every_sweep_candidate_is_a_valid_recipe_and_no_stop_runs_its_whole_schedule():
    from dataclasses import replace

    from bench import gpu
    from fer_pipeline.recipe import resolve

    configs = {name: replace(gpu.COMPACT_BASE, **overrides) for name, overrides in gpu.CANDIDATES.items()}  # checked
    no_stop = configs["crop_epochs_69_no_stop"]
    assert no_stop.early_stopping_patience >= no_stop.frozen_epochs == configs["crop_epochs_69"].frozen_epochs
    patience = gpu.BF16_EPOCHS["early_stopping_patience"]
    assert replace(no_stop, early_stopping_patience=patience) == configs["crop_epochs_69"]  # the only difference
    # the "preset" candidate is the cpu preset's training but scored on held-out images over its whole schedule,
    # and its mixup row differs from it in mixing only
    held_out = replace(resolve("cpu").train, train_on_validation=False, time_budget_minutes=0)
    assert configs["preset"] == held_out
    run9 = configs["preset_run9"]  # run 9's preset differs from it in its epochs only
    assert replace(run9, frozen_epochs=100, early_stopping_patience=100) == configs["preset"]
    assert replace(configs["preset_mixup_0.2"], mix="none", mix_alpha=run9.mix_alpha) == run9
    # the others keep their best epoch, so the record's "restored" weights are that epoch's, beside the averages
    others = {name: c for name, c in configs.items() if not name.startswith("preset")}
    assert {c.average_last_epochs for c in others.values()} == {0}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sweep", "crop@13", "mixup_alpha_0.3@13"], "unknown sweep candidate 'mixup_alpha_0.3'; choose from: "),
        (["sweep", "crop@thirteen"], "'crop@thirteen': the seed after @ must be a whole number, e.g. crop@13"),
        (["sweeps"], "unknown command 'sweeps'; choose from: throughput, sweep, densenet, probe"),
    ],
)
def test_a_wrong_candidate_seed_or_command_is_refused_before_any_data_is_read(tmp_path, argv, message):
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", FER_GPU_DATA=str(tmp_path / "absent.npz.xz"))
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(message)  # not the missing data file, read later
    assert "Traceback" not in done.stderr and not list(tmp_path.iterdir())
