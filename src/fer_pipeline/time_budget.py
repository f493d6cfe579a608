"""A training phase that ends within a time budget (``time_budget_minutes``).

The same two CPU cores have run the cpu preset's epochs at 40 s on one day and 95 s on
another, so a fixed epoch count cannot promise a time. After every epoch the phase counts
how many more fit in what is left of the budget at the pace measured so far and ends
there; a cosine schedule is re-planned to reach its low end at that epoch, so a cut run
still finishes its decay (and ``average_last_epochs`` averages a low-rate tail). A pace
that recovers (a start slowed by other work on the cores) wins cut epochs back, up to the
phase's own count.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import keras

logger = logging.getLogger(__name__)


@dataclass
class EpochPlan:
    """The epoch (1-based) a phase ends after; a budget moves it, never past the phase's epochs."""

    epochs: int


def cosine_rate(rate: float, epoch: int, epochs: int) -> float:
    """Cosine decay from ``rate`` to 0 over ``epochs``, at the middle of 0-based ``epoch``:
    one rate per epoch, within 0.5% of the starting rate of a per-step decay's mean over it."""
    progress = min((epoch + 0.5) / max(epochs, 1), 1.0)
    return rate * 0.5 * (1.0 + math.cos(math.pi * progress))


class CosineByEpoch(keras.callbacks.Callback):
    """Sets each epoch's rate on the cosine over ``plan.epochs``, read when the epoch begins,
    so a plan cut short mid-phase bends the rest of the decay to end with it."""

    def __init__(self, rate: float, plan: EpochPlan):
        super().__init__()
        self.rate, self.plan = rate, plan

    def on_epoch_begin(self, epoch, logs=None):
        self.model.optimizer.learning_rate = cosine_rate(self.rate, epoch, self.plan.epochs)


class TimeBudget(keras.callbacks.Callback):
    """Ends the phase at the last epoch that fits in ``minutes`` of epochs, planned after each.

    The pace is the mean epoch so far without the first of each start (fresh or resumed from
    a backup), which also traces the step; those still count as time spent. Epoch times
    travel with a training backup (``get_state``), so a resumed phase keeps counting what it
    spent before.
    """

    def __init__(self, minutes: float, plan: EpochPlan, phase: str, clock: Callable[[], float] | None = None):
        super().__init__()
        self.seconds, self.plan, self.phase, self._clock = minutes * 60, plan, phase, clock or time.monotonic
        self.planned = plan.epochs  # before any cut
        self.traced: list[float] = []  # each start's first epoch: time spent, not pace
        self.paced: list[float] = []
        self._began = 0.0
        self._tracing = True  # this fit's first epoch (a resumed phase builds a new TimeBudget)

    def on_epoch_begin(self, epoch, logs=None):
        self._began = self._clock()

    def on_epoch_end(self, epoch, logs=None):
        (self.traced if self._tracing else self.paced).append(self._clock() - self._began)
        self._tracing = False
        done, spent = epoch + 1, sum(self.traced) + sum(self.paced)
        pace = statistics.fmean(self.paced) if self.paced else 0.0
        if pace > 0:
            fits = min(self.planned, max(done, done + int((self.seconds - spent) // pace)))
        else:  # a first epoch alone (it traces too), or a clock too coarse to see an epoch, gives no
            # pace, only whether the budget is gone
            fits = done if spent >= self.seconds else self.plan.epochs
        if fits != self.plan.epochs:
            self._replan(fits, pace, spent)
        if done >= self.plan.epochs < self.planned:  # an uncut phase ends at fit's own last epoch
            self.model.stop_training = True

    def _replan(self, fits: int, pace: float, spent: float) -> None:
        # The first cut and a return to the full count say why at INFO; moves in between at DEBUG,
        # since the phase's end log says where it ended.
        first_cut, restored = self.plan.epochs == self.planned, fits == self.planned
        if pace > 0:
            count = f"all {fits} of its" if restored else f"{fits} of its {self.planned}"
            why = f"{pace:.0f} s an epoch here, so {count} epochs fit in"
        else:
            why = f"{spent:.0f} s of epochs have spent"
        (logger.info if first_cut or restored else logger.debug)(
            "Phase %s: %s the %g-minute budget (time_budget_minutes); it now ends after epoch %d.",
            self.phase,
            why,
            self.seconds / 60,
            fits,
        )
        self.plan.epochs = fits

    # -- backup (fer_pipeline.checkpoint) ------------------------------------------------
    def get_state(self) -> dict:
        return {"traced": list(self.traced), "paced": list(self.paced), "epochs": self.plan.epochs}

    def set_state(self, state: dict) -> None:
        self.traced = [float(d) for d in state["traced"]]
        self.paced = [float(d) for d in state["paced"]]
        self.plan.epochs = int(state["epochs"])


def budget_callbacks(
    minutes: float, schedule: str, rate: float, plan: EpochPlan, phase: str
) -> list[keras.callbacks.Callback]:
    """With a budget: the cosine schedule by epoch (it must follow the plan) and the budget;
    without one, none (the schedule stays the optimizer's per-step decay)."""
    if not minutes:
        return []
    return [*([CosineByEpoch(rate, plan)] if schedule == "cosine" else []), TimeBudget(minutes, plan, phase)]
