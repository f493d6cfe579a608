"""When a long training phase will end: a log line at each tenth of it.

Keras' own line per epoch gives that epoch's seconds; a user who started a 100-epoch CPU
run wants the end time without doing the sum (hosts of the same type differ by 1.5x).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import keras

from fer_pipeline.time_budget import EpochPlan

logger = logging.getLogger(__name__)

MIN_EPOCHS = 10  # shorter phases: Keras' per-epoch lines say enough


class PhaseProgress(keras.callbacks.Callback):
    """Logs epochs done, minutes so far and the expected end at the mean pace so far.

    Epochs a resumed phase ran before this process count toward ``epochs`` but not the
    pace. ``may_stop_early`` (patience shorter than the phase) makes the end an upper bound.
    """

    def __init__(
        self,
        phase: str,
        epochs: int | EpochPlan,
        may_stop_early: bool = False,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ):
        super().__init__()
        self.phase, self.may_stop_early = phase, may_stop_early
        self.plan = epochs if isinstance(epochs, EpochPlan) else EpochPlan(epochs)
        self.every = max(1, round(self.plan.epochs / 10))
        self._clock, self._now = clock, now
        self._start: float = 0.0
        self._first_epoch: int | None = None

    @property
    def epochs(self) -> int:
        """The phase's epochs as planned now (a time budget may have cut them)."""
        return self.plan.epochs

    def on_train_begin(self, logs=None):
        self._start, self._first_epoch = self._clock(), None  # set by the first epoch this run begins

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch is None:
            self._first_epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        if self.epochs < MIN_EPOCHS or done % self.every or done >= self.epochs:
            return
        elapsed = self._clock() - self._start
        per_epoch = elapsed / (done - self._first_epoch)
        left = per_epoch * (self.epochs - done)
        end = self._now() + timedelta(seconds=left)
        logger.info(
            "Phase %s: epoch %d/%d, %.0f min in this run, %.0f s an epoch; %s%.0f min left, about %s.",
            self.phase,
            done,
            self.epochs,
            elapsed / 60,
            per_epoch,
            "at most " if self.may_stop_early else "",
            left / 60,
            end.strftime("%H:%M %Z"),
        )
