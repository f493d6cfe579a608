"""Interrupted training resumes from its last backup and ends like an uninterrupted run.

1. A real `fer-pipeline train-frozen` process (DenseNet169, tiny generated data) is
   killed with SIGKILL in its second epoch, once the first epoch's backup exists,
   started again with the same arguments, and must resume there and end with the same
   number of epochs as an uninterrupted run of the same command: EPOCHS, since early
   stopping (patience 10) cannot end a run of EPOCHS < 10 epochs sooner. (A third
   process for the uninterrupted run would add ~20 s; part 2 compares with
   uninterrupted runs in every detail.)
2. On a small Keras model (milliseconds per epoch) every interruption point is tried:
   the resumed run must stop at the same epoch (EarlyStopping), reduce the learning
   rate at the same epochs (ReduceLROnPlateau), and end with the same history and the
   same weights, bit for bit, as the uninterrupted run (no shuffling there, so nothing
   differs but the interruption).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fer_pipeline import synthetic
from fer_pipeline.checkpoint import STATE_FILE, PhaseBackup
from fer_pipeline.config import SplitConfig, TrainConfig
from fer_pipeline.steps import ingest_step, split_step
from fer_pipeline.weight_average import EpochTailAverage

EPOCHS = 2


# --------------------------------------------------------------------------- 1. real process
@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A canonical dataset (4 train + 2 test images per class) and its split."""
    root = tmp_path_factory.mktemp("resume")
    source = synthetic.write_kaggle_zip(root / "fer.zip", n_train=4, n_test=2)
    ingest_step(str(source), root / "dataset")
    split_step(str(root / "dataset"), root / "split.json", SplitConfig(val_fraction=0.25, seed=1))
    return root


def train_command(root: Path, out: str, backup: str) -> list[str]:
    """`fer-pipeline train-frozen` on the prepared data: one batch per epoch, no early stop."""
    return [
        sys.executable,
        "-m",
        "fer_pipeline.cli",
        "train-frozen",
        str(root / "dataset"),
        "--split",
        str(root / "split.json"),
        "--out",
        str(root / out),
        "--backup-dir",
        str(root / backup),
        "--weights",
        "none",
        "--dense-units",
        "8",
        "--dropouts",
        "0.1",
        "--batch-size",
        "32",
        "--frozen-epochs",
        str(EPOCHS),
        "--early-stopping-patience",
        "10",
        "--run-eagerly",
        "true",
        "--seed",
        "3",
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


def _epochs_done(state_path: Path) -> int:
    try:
        return int(json.loads(state_path.read_text())["epochs_done"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.slow
def test_killed_training_process_resumes_and_ends_with_the_same_epoch_count(prepared: Path):
    root = prepared
    state_path = root / "backup" / "frozen" / STATE_FILE
    log = (root / "killed.log").open("w")
    process = subprocess.Popen(train_command(root, "run", "backup"), stdout=log, stderr=subprocess.STDOUT, env=_env())
    try:
        deadline = time.monotonic() + 240

        def in_second_epoch() -> bool:
            return _epochs_done(state_path) >= 1 and f"Epoch 2/{EPOCHS}" in _read(root / "killed.log")

        while not in_second_epoch() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.poll() is None, f"training ended before it could be killed: {_read(root / 'killed.log')}"
        assert in_second_epoch(), "no backup within the time limit"
        process.send_signal(signal.SIGKILL)  # mid-epoch: epoch 2 has begun, its backup is not written
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    assert process.returncode == -signal.SIGKILL
    killed_state = json.loads(state_path.read_text())
    done = killed_state["epochs_done"]
    assert 1 <= done < EPOCHS and not (root / "run" / "model.keras").exists()

    resumed = subprocess.run(
        train_command(root, "run", "backup"), capture_output=True, text=True, env=_env(), timeout=300
    )
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output
    assert (
        f"Resuming phase frozen from its backup in {root / 'backup' / 'frozen'}: {done} of {EPOCHS} epoch(s) done"
        in output
    )
    epochs_trained = [line for line in output.splitlines() if line.startswith("Epoch ")]
    assert epochs_trained == [f"Epoch {n}/{EPOCHS}" for n in range(done + 1, EPOCHS + 1)], output

    record = json.loads((root / "run" / "history.json").read_text())
    assert record["epochs_run"] == EPOCHS and record["best_epoch"] >= 1
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(record["history"])
    assert all(len(values) == EPOCHS for values in record["history"].values())
    # the epochs before the kill are the killed process's own numbers, kept across the restart
    for key, values in killed_state["history"].items():
        assert record["history"][key][:done] == values
    assert (root / "run" / "model.keras").is_file()
    assert not (root / "backup" / "frozen").exists(), "the backup is deleted once the outputs are written"


# --------------------------------------------------------------------------- 2. every interruption point
class Interrupt(Exception):
    """Stands in for a killed process."""


def _small_fit(backup_dir: Path, epochs: int, interrupt_at: int | None = None, lr: float = 0.01, average: int = 0):
    """Fit a small seeded model with the pipeline's callbacks; raise Interrupt when epoch ``interrupt_at`` begins."""
    import keras

    keras.mixed_precision.set_global_policy("float32")  # whatever an earlier test left
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = (x[:, 0] + 0.5 * rng.normal(size=64) > 0).astype("int32")
    vx, vy = x[:16] + 0.6 * rng.normal(size=(16, 6)).astype("float32"), y[:16]
    # Seeded initializers: unseeded ones draw their seeds from Python's global `random`, which a
    # thread left behind by an earlier test can advance between set_random_seed and here.
    glorot = keras.initializers.GlorotUniform
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(16, activation="relu", kernel_initializer=glorot(seed=202)),
            keras.layers.Dropout(0.3, seed=1),
            keras.layers.Dense(2, activation="softmax", kernel_initializer=glorot(seed=203)),
        ]
    )
    model.compile(keras.optimizers.Adam(lr), "sparse_categorical_crossentropy")
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1),
    ]
    if average:  # the trainer's place for it: after EarlyStopping
        callbacks.insert(1, EpochTailAverage(average))

    class Stop(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == interrupt_at:
                raise Interrupt(epoch)

    backup = PhaseBackup(backup_dir, {"phase": "small", "epochs": epochs, "lr": lr})
    stop = Stop()
    callbacks += [stop, backup.callback(callbacks + [stop])]
    model.fit(
        x, y, validation_data=(vx, vy), batch_size=16, epochs=epochs, shuffle=False, verbose=0, callbacks=callbacks
    )
    return model, backup.history, backup.resumed_from


def test_every_interruption_point_resumes_to_the_uninterrupted_result(tmp_path: Path):
    epochs = 12
    reference_model, reference, _ = _small_fit(tmp_path / "reference", epochs)
    n_reference = len(reference["loss"])
    # Early stopping ends it at epoch 10 of 12 here, with the learning rate reduced twice on
    # the way; either decision is enough to show that the callbacks' state survives a resume.
    assert n_reference < epochs or len(set(reference["learning_rate"])) >= 2, reference

    resumes = []
    for point in range(1, n_reference):
        backup_dir = tmp_path / f"cut-{point}"
        with pytest.raises(Interrupt):
            _small_fit(backup_dir, epochs, interrupt_at=point)
        assert json.loads((backup_dir / STATE_FILE).read_text())["epochs_done"] == point
        model, history, resumed_from = _small_fit(backup_dir, epochs)
        assert resumed_from == point
        assert history == reference, f"interrupted at epoch {point}"
        for a, b in zip(model.variables, reference_model.variables):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        resumes.append(point)
    assert resumes == list(range(1, n_reference))


def test_a_resumed_phase_averages_the_same_epochs_as_an_uninterrupted_one(tmp_path: Path):
    epochs, average = 12, 4
    reference_model, reference, _ = _small_fit(tmp_path / "reference", epochs, average=average)
    best_only, _, _ = _small_fit(tmp_path / "best", epochs)
    assert any(not np.array_equal(a.numpy(), b.numpy()) for a, b in zip(reference_model.variables, best_only.variables))
    for point in (1, average, len(reference["loss"]) - 1):  # before, at and after the tail fills
        backup_dir = tmp_path / f"cut-{point}"
        with pytest.raises(Interrupt):
            _small_fit(backup_dir, epochs, interrupt_at=point, average=average)
        model, history, resumed_from = _small_fit(backup_dir, epochs, average=average)
        assert resumed_from == point and history == reference
        for a, b in zip(model.variables, reference_model.variables):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_restart_after_the_last_epoch_trains_nothing_more(tmp_path: Path):
    _, reference, _ = _small_fit(tmp_path / "reference", 12)
    _small_fit(tmp_path / "done", 12)  # completes; the state stays until the phase deletes it
    model, history, resumed_from = _small_fit(tmp_path / "done", 12)
    assert resumed_from == len(reference["loss"]) and history == reference


def test_a_backup_for_other_inputs_is_ignored(tmp_path: Path, caplog):
    with pytest.raises(Interrupt):
        _small_fit(tmp_path / "b", 12, interrupt_at=2)
    caplog.set_level("WARNING", logger="fer_pipeline.checkpoint")
    _, history, resumed_from = _small_fit(tmp_path / "b", 12, lr=0.02)  # other learning rate: other fingerprint
    assert resumed_from == 0 and "written for other inputs" in caplog.text
    assert len(history["loss"]) >= 1


def test_a_backup_in_another_format_is_ignored_not_misread(tmp_path: Path, caplog):
    """A saved state whose shape changed (a callback's fields) is refused by its version, whatever it holds."""
    import json

    from fer_pipeline.checkpoint import STATE_FILE, STATE_VERSION

    with pytest.raises(Interrupt):
        _small_fit(tmp_path / "b", 12, interrupt_at=2)
    state_file = tmp_path / "b" / STATE_FILE
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "version": STATE_VERSION - 1}))
    caplog.set_level("WARNING", logger="fer_pipeline.checkpoint")
    _, history, resumed_from = _small_fit(tmp_path / "b", 12)
    assert resumed_from == 0 and f"backup format {STATE_VERSION - 1}, this one reads {STATE_VERSION}" in caplog.text
    assert len(history["loss"]) >= 1


def test_backup_dir_is_per_phase_and_off_by_default():
    class Data:
        train_indices = np.arange(5)
        val_indices = np.arange(5, 7)

    assert PhaseBackup.for_phase(TrainConfig(), "frozen", Data, 3, 1e-4) is None
    cfg = TrainConfig(backup_dir="/x/backup")
    frozen = PhaseBackup.for_phase(cfg, "frozen", Data, 3, 1e-4)
    tuned = PhaseBackup.for_phase(cfg, "finetune", Data, 3, 1e-5)
    assert frozen.directory == Path("/x/backup/frozen") and tuned.directory == Path("/x/backup/finetune")
    assert frozen.fingerprint != tuned.fingerprint
    moved = PhaseBackup.for_phase(TrainConfig(backup_dir="/elsewhere"), "frozen", Data, 3, 1e-4)
    assert moved.fingerprint == frozen.fingerprint  # the backup's location is not part of what it must match


def test_a_backup_needs_a_file_system_path():
    from fer_pipeline.errors import ConfigError

    class Data:
        train_indices = val_indices = np.arange(3)

    with pytest.raises(ConfigError, match=r"local path \(or a Cloud Storage FUSE path"):
        PhaseBackup.for_phase(TrainConfig(backup_dir="gs://bucket/backup"), "frozen", Data, 3, 1e-4)
