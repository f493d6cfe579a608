"""Stochastic weight averaging over a phase's last epochs (``TrainConfig.average_last_epochs``).

The phase ends with the uniform mean of its last N epoch-end weights in place of the one
epoch early stopping kept: over the low-rate tail of a cosine schedule, the mean sits nearer
the middle of the region those epochs wander in (Izmailov et al., 2018, "Averaging Weights
Leads to Wider Optima and Better Generalization"). BatchNorm's moving statistics are averaged
like the weights, not re-estimated: that is the variant measured (bench/gpu.py's
``WeightAverages``, docs/model-quality.md). Integer variables (random-seed states) keep their
last value.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import keras
import numpy as np


def mean_weights(snapshots: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
    """The element-wise mean of several ``get_weights()`` lists; non-float arrays from the last one."""
    return [
        np.mean(arrays, axis=0).astype(arrays[-1].dtype) if np.issubdtype(arrays[-1].dtype, np.floating) else arrays[-1]
        for arrays in zip(*snapshots)
    ]


class EpochTailAverage(keras.callbacks.Callback):
    """Keeps the last ``epochs`` epoch-end weights; at the end of ``fit`` the model takes their mean.

    Put it after EarlyStopping, whose restored best weights it then replaces. Fewer epochs
    than ``epochs`` run: the mean of those that did. ``averaged`` is the 1-based
    ``(first, last)`` epoch of the mean once ``fit`` has ended. The kept weights are part of
    a training backup (``get_arrays`` / ``set_arrays``, fer_pipeline.checkpoint), so a
    resumed phase averages the same epochs as an uninterrupted one.
    """

    def __init__(self, epochs: int):
        super().__init__()
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        self.epochs = epochs
        self.tail: deque[list[np.ndarray]] = deque(maxlen=epochs)
        self.last_epoch = 0
        self.averaged: tuple[int, int] | None = None

    def on_train_begin(self, logs=None):
        self.tail.clear()
        self.last_epoch, self.averaged = 0, None

    def on_epoch_end(self, epoch, logs=None):
        self.tail.append(self.model.get_weights())
        self.last_epoch = epoch + 1

    def on_train_end(self, logs=None):
        if not self.tail:
            return
        self.model.set_weights(mean_weights(self.tail))
        self.averaged = (self.last_epoch - len(self.tail) + 1, self.last_epoch)

    # -- backup (fer_pipeline.checkpoint) ------------------------------------------------
    def get_state(self) -> dict:  # the kept weights themselves travel as arrays
        return {"last_epoch": self.last_epoch}

    def set_state(self, state: dict) -> None:
        self.last_epoch = int(state["last_epoch"])

    def get_arrays(self) -> list[np.ndarray]:
        return [array for weights in self.tail for array in weights]

    def set_arrays(self, arrays: list[np.ndarray]) -> None:
        per_epoch = len(self.model.get_weights())
        if len(arrays) % per_epoch:
            raise ValueError(f"{len(arrays)} kept arrays are not whole epochs of {per_epoch} weights")
        self.tail.clear()
        for start in range(0, len(arrays), per_epoch):
            self.tail.append(list(arrays[start : start + per_epoch]))
