"""Resumable training: a phase's whole state backed up every epoch, restored on restart.

With ``TrainConfig.backup_dir`` set, each training phase keeps a backup in
``{backup_dir}/{phase}/``, written at the end of every epoch:

  - ``vars-<epoch>.npz``: every model variable (weights, BatchNorm statistics, the
    augmentation and dropout seed states), every optimizer variable (Adam's moments,
    its iteration count and the learning rate, as ReduceLROnPlateau left it) and the
    arrays of callbacks that keep some (``get_arrays``/``set_arrays``: the epochs
    ``EpochTailAverage`` will average);
  - ``best-<epoch>.npz``: EarlyStopping's best weights, rewritten only when they change;
  - ``state.json``: epochs done, the history so far, EarlyStopping's and
    ReduceLROnPlateau's counters, and a fingerprint of the phase's inputs. Written last
    and atomically (temporary name, then rename): it is the commit point, so a process
    killed at any moment leaves either the previous epoch's backup or the new one,
    never a torn mix.

A process started again with the same arguments (same fingerprint: phase, config,
epochs, learning rate, training and validation samples) restores all of that before
its first epoch and trains only the epochs still to do, so it ends with the same
number of epochs, the same history length and the same callback decisions as a run
that was never interrupted. The epoch that was running when the process died is
started again from its beginning. Not restored: the position of the training-data
shuffle (the restarted epoch sees the first shuffle order of a fresh input
pipeline), so the weights of a resumed run are close to, not bit-identical with,
those of an uninterrupted one. A backup whose fingerprint differs is ignored (with a
warning) and overwritten. The phase deletes its backup once ``model.keras`` and
``history.json`` are written.

Keras' own ``BackupAndRestore`` keeps weights and epoch only: it loses the history
before the interruption and resets EarlyStopping and ReduceLROnPlateau, which changes
how many epochs a resumed run trains.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import keras
import numpy as np

from fer_pipeline.errors import ConfigError

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"
STATE_VERSION = 2  # raised whenever a saved callback state changes shape (2: TimeBudget's traced / paced lists)
# Plain counters of the built-in callbacks whose decisions depend on earlier epochs.
_CALLBACK_FIELDS = {
    "EarlyStopping": ("wait", "stopped_epoch", "best", "best_epoch"),
    "ReduceLROnPlateau": ("wait", "cooldown_counter", "best"),
}


class PhaseBackup:
    """The backup of one training phase: where it lives and what it must match.

    After ``fit``, ``history`` holds the whole phase's history (epochs before the
    interruption included) and ``resumed_from`` the epochs restored from the backup
    (0 for a fresh start).
    """

    def __init__(self, directory: str | Path, fingerprint: dict[str, Any]):
        self.directory = Path(directory)
        self.fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))
        self.history: dict[str, list[float]] = {}
        self.resumed_from = 0

    @classmethod
    def for_phase(cls, cfg, phase: str, data, epochs: int, learning_rate: float) -> PhaseBackup | None:
        """The phase's backup under ``cfg.backup_dir``; None when backups are off ("")."""
        if not cfg.backup_dir:
            return None
        if "://" in cfg.backup_dir:
            raise ConfigError(
                f"backup_dir must be a local path (or a Cloud Storage FUSE path such as /gcs/BUCKET/...), "
                f"got {cfg.backup_dir!r}."
            )
        settings = {k: v for k, v in cfg.to_dict().items() if k != "backup_dir"}
        fingerprint = {
            "phase": phase,
            "epochs": int(epochs),
            "learning_rate": float(learning_rate),
            "config": settings,
            "train": _digest(data.train_indices),
            "val": _digest(data.val_indices),
        }
        return cls(Path(cfg.backup_dir) / phase, fingerprint)

    def callback(self, callbacks: list[keras.callbacks.Callback]) -> keras.callbacks.Callback:
        """The Keras callback that saves and restores this backup; put it last.

        Args:
            callbacks: the phase's other callbacks; the states of EarlyStopping,
                ReduceLROnPlateau and of any callback with ``get_state``/``set_state``
                are saved and restored with the model.
        """
        return _BackupCallback(self, list(callbacks))

    def clear(self) -> None:
        """Delete the backup (the phase's outputs are written)."""
        shutil.rmtree(self.directory, ignore_errors=True)

    def read_state(self) -> dict[str, Any] | None:
        """The committed state, or None when there is none or it is for other inputs."""
        path = self.directory / STATE_FILE
        if not path.is_file():
            return None
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            logger.warning("Ignoring unreadable training backup %s (%s); starting the phase afresh.", path, exc)
            return None
        if state.get("version") != STATE_VERSION:
            logger.warning(
                "Ignoring the training backup in %s: it was written by another version of fer-pipeline (backup "
                "format %s, this one reads %s); starting the phase afresh and overwriting it.",
                self.directory,
                state.get("version"),
                STATE_VERSION,
            )
            return None
        if state.get("fingerprint") != self.fingerprint:
            logger.warning(
                "Ignoring the training backup in %s: it was written for other inputs (phase, config, epochs "
                "or samples differ); starting the phase afresh and overwriting it.",
                self.directory,
            )
            return None
        return state


class _BackupCallback(keras.callbacks.Callback):
    """Saves the phase's state at each epoch end; restores it at the start of ``fit``."""

    def __init__(self, backup: PhaseBackup, others: list[keras.callbacks.Callback]):
        super().__init__()
        self.backup = backup
        self.others = others
        self._best_file: str | None = None
        self._best_epoch: int | None = None

    # -- restore ------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        # Runs after the other callbacks' on_train_begin (it is last), which reset their counters.
        backup = self.backup
        backup.history, backup.resumed_from = {}, 0
        state = backup.read_state()
        if state is None:
            return
        try:
            self._restore(state)
        except (OSError, ValueError, KeyError) as exc:
            logger.warning(
                "Could not restore the training backup in %s (%s); starting the phase afresh.", backup.directory, exc
            )
            backup.history, backup.resumed_from = {}, 0
            return
        done = int(state["epochs_done"])
        backup.history = {k: [float(v) for v in values] for k, values in state["history"].items()}
        backup.resumed_from = done
        total = backup.fingerprint["epochs"]
        # Where fit starts counting, as Keras' BackupAndRestore sets it. A phase that had
        # stopped early (or finished) trains no further epoch.
        self.model._initial_epoch = total if state.get("stopped") else done
        logger.info(
            "Resuming phase %s from its backup in %s: %d of %d epoch(s) done%s.",
            backup.fingerprint["phase"],
            backup.directory,
            done,
            total,
            ", early stopping had ended it" if state.get("stopped") else "",
        )

    def _restore(self, state: dict[str, Any]) -> None:
        directory = self.backup.directory
        with np.load(directory / state["variables_file"]) as saved:
            model_values = [saved[f"m{i}"] for i in range(int(saved["n_model"]))]
            optimizer_values = [saved[f"o{i}"] for i in range(int(saved["n_optimizer"]))]
            callback_arrays = {
                j: [saved[f"c{j}_{i}"] for i in range(int(saved[f"n_c{j}"]))]
                for j in range(len(self.others))
                if f"n_c{j}" in saved.files
            }
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        _check_shapes("model", self.model.variables, model_values)
        _check_shapes("optimizer", optimizer.variables, optimizer_values)
        for variable, value in zip(self.model.variables, model_values):
            variable.assign(value)
        for variable, value in zip(optimizer.variables, optimizer_values):
            variable.assign(value)
        best_weights = None
        if state.get("best_file"):
            with np.load(directory / state["best_file"]) as saved:
                best_weights = [saved[f"w{i}"] for i in range(len(saved.files))]
            self._best_file, self._best_epoch = state["best_file"], state.get("best_weights_epoch")
        for j, callback in enumerate(self.others):
            if hasattr(callback, "set_arrays"):
                callback.set_arrays(callback_arrays.get(j, []))
            saved_state = state["callbacks"].get(_callback_key(callback, self.others))
            if saved_state is None:
                continue
            if hasattr(callback, "set_state"):
                callback.set_state(saved_state)
                continue
            for name, value in saved_state.items():
                setattr(callback, name, value)
            if isinstance(callback, keras.callbacks.EarlyStopping):
                callback.best_weights = best_weights

    # -- save ---------------------------------------------------------------------------
    def on_epoch_end(self, epoch, logs=None):
        # Runs after the other callbacks' on_epoch_end: their decisions for this epoch are in.
        backup = self.backup
        for key, value in (logs or {}).items():
            backup.history.setdefault(key, []).append(float(value))
        directory = backup.directory
        directory.mkdir(parents=True, exist_ok=True)
        done = epoch + 1
        variables_file = f"vars-{done}.npz"
        optimizer = self.model.optimizer
        arrays = {f"m{i}": np.asarray(v.numpy()) for i, v in enumerate(self.model.variables)}
        arrays |= {f"o{i}": np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)}
        arrays |= {
            "n_model": np.asarray(len(self.model.variables)),
            "n_optimizer": np.asarray(len(optimizer.variables)),
        }
        for j, callback in enumerate(self.others):
            if hasattr(callback, "get_arrays"):
                kept = callback.get_arrays()
                arrays |= {f"c{j}_{i}": np.asarray(a) for i, a in enumerate(kept)} | {f"n_c{j}": np.asarray(len(kept))}
        _write_npz(directory / variables_file, arrays)
        callbacks_state = {}
        for callback in self.others:
            state = _callback_state(callback)
            if state is not None:
                callbacks_state[_callback_key(callback, self.others)] = state
            if isinstance(callback, keras.callbacks.EarlyStopping) and callback.best_weights is not None:
                if callback.best_epoch != self._best_epoch or self._best_file is None:
                    self._best_file, self._best_epoch = f"best-{done}.npz", int(callback.best_epoch)
                    _write_npz(directory / self._best_file, {f"w{i}": w for i, w in enumerate(callback.best_weights)})
        state = {
            "version": STATE_VERSION,
            "fingerprint": backup.fingerprint,
            "epochs_done": done,
            "stopped": bool(self.model.stop_training),
            "history": backup.history,
            "variables_file": variables_file,
            "best_file": self._best_file,
            "best_weights_epoch": self._best_epoch,
            "callbacks": callbacks_state,
        }
        _write_atomic(directory / STATE_FILE, json.dumps(state, indent=1).encode())
        keep = {variables_file, self._best_file, STATE_FILE}
        for path in directory.iterdir():  # files of earlier epochs, and temporaries of a killed write
            if path.name not in keep:
                path.unlink(missing_ok=True)
        logger.debug("Backed up epoch %d to %s.", done, directory)


def _callback_key(callback, callbacks) -> str:
    """A name for a callback, unique within the list (class name, numbered if repeated)."""
    name = type(callback).__name__
    same = [c for c in callbacks if type(c).__name__ == name]
    return name if len(same) == 1 else f"{name}#{same.index(callback)}"


def _callback_state(callback) -> dict[str, Any] | None:
    """JSON-able state of a callback whose decisions depend on earlier epochs."""
    if hasattr(callback, "get_state"):
        return callback.get_state()
    fields = _CALLBACK_FIELDS.get(type(callback).__name__)
    if fields is None:
        return None
    return {name: _plain(getattr(callback, name, None)) for name in fields}


def _plain(value):
    """numpy scalars as Python numbers, so json can write them (inf included)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, np.integer):
        return int(value)
    return float(value)


def _check_shapes(what: str, variables, values) -> None:
    if len(variables) != len(values):
        raise ValueError(f"{what} has {len(variables)} variables, the backup {len(values)}")
    for variable, value in zip(variables, values):
        if tuple(variable.shape) != tuple(value.shape):
            raise ValueError(f"{what} variable {variable.path} is {tuple(variable.shape)}, the backup {value.shape}")


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez to a local temporary file, then moved into place under its final name."""
    fd, tmp = tempfile.mkstemp(suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
        _move_into_place(Path(tmp), path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        _move_into_place(Path(tmp), path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _move_into_place(local: Path, path: Path) -> None:
    """Copy to ``path``'s folder under a temporary name, then rename: readers never see half a file.

    (The backup folder may be a Cloud Storage FUSE mount, where a rename from the local
    temporary directory would be a cross-device copy.)
    """
    staging = path.with_name(f".{path.name}.partial")
    shutil.copyfile(local, staging)
    os.replace(staging, path)


def _digest(indices: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.asarray(indices, dtype=np.int64)).tobytes()).hexdigest()[:16]
