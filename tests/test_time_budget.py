"""A phase ends within its time budget, and its cosine schedule is re-planned to end with it."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from fer_pipeline import trainer
from fer_pipeline.classes import NUM_CLASSES
from fer_pipeline.config import SplitConfig, TrainConfig
from fer_pipeline.dataset import FerDataset
from fer_pipeline.errors import ConfigError
from fer_pipeline.split import make_split
from fer_pipeline.synthetic import make_images
from fer_pipeline.time_budget import CosineByEpoch, EpochPlan, TimeBudget, cosine_rate


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _epochs(callbacks, clock: Clock, seconds: list[float], model, first: int = 0) -> int:
    """Runs epochs of the given lengths from 0-based epoch ``first`` (where fit resumes) until a
    callback stops training; returns how many ran."""
    for epoch, length in enumerate(seconds, start=first):
        for callback in callbacks:
            callback.on_epoch_begin(epoch)
        clock.now += length
        for callback in callbacks:
            callback.on_epoch_end(epoch, {})
        if model.stop_training:
            return epoch + 1 - first
    return len(seconds)


def _model():
    return SimpleNamespace(stop_training=False, optimizer=SimpleNamespace(learning_rate=None))


def test_the_phase_ends_at_the_last_epoch_its_budget_holds_at_the_measured_pace(caplog):
    caplog.set_level("INFO", logger="fer_pipeline.time_budget")
    clock, plan, model = Clock(), EpochPlan(100), _model()
    budget = TimeBudget(1.0, plan, "frozen", clock=clock)
    budget.set_model(model)

    # The first epoch traces (20 s) and gives no pace; at 10 s an epoch, 60 s hold 5 epochs.
    ran = _epochs([budget], clock, [20.0] + [10.0] * 99, model)

    assert ran == 5 and plan.epochs == 5 and clock.now == 60.0
    assert "10 s an epoch here, so 5 of its 100 epochs fit in the 1-minute budget" in caplog.text


def test_epochs_too_short_for_the_clock_keep_the_plan_until_the_budget_is_spent():
    clock, plan, model = Clock(), EpochPlan(6), _model()
    budget = TimeBudget(1.0, plan, "frozen", clock=clock)
    budget.set_model(model)

    # a trace, then epochs the clock cannot see: no pace to plan by, so all six run...
    assert _epochs([budget], clock, [30.0] + [0.0] * 5, model) == 6 and plan.epochs == 6
    # ...while a resumed phase whose time is spent ends at once, its zero pace notwithstanding
    clock, plan, model = Clock(), EpochPlan(6), _model()
    budget = TimeBudget(1.0, plan, "frozen", clock=clock)
    budget.set_model(model)
    budget.set_state({"traced": [50.0], "paced": [0.0], "epochs": 6})
    assert _epochs([budget], clock, [20.0, 0.0, 0.0, 0.0], model, first=2) == 1 and plan.epochs == 3


def test_a_budget_that_holds_every_epoch_changes_nothing():
    clock, plan, model = Clock(), EpochPlan(4), _model()
    budget = TimeBudget(10.0, plan, "frozen", clock=clock)
    budget.set_model(model)
    assert _epochs([budget], clock, [30.0, 20.0, 20.0, 20.0], model) == 4 and plan.epochs == 4
    assert not model.stop_training  # fit ends the phase at its own last epoch


def test_a_pace_that_recovers_wins_back_cut_epochs_but_never_more_than_the_phase_s(caplog):
    caplog.set_level("INFO", logger="fer_pipeline.time_budget")
    clock, plan, model = Clock(), EpochPlan(10), _model()
    budget = TimeBudget(2.0, plan, "frozen", clock=clock)
    budget.set_model(model)
    rate = CosineByEpoch(1e-3, plan)
    rate.set_model(model)

    # Epoch 2 shares the cores (30 s, the first epoch traces): 4 of 10 fit. Then 5 s epochs bring
    # the mean pace down, 7, then 9, then all 10 fit again in 120 s (10 + 30 + 8 x 5 = 80 s run).
    ran = _epochs([rate, budget], clock, [10.0, 30.0] + [5.0] * 8, model)

    assert ran == 10 and plan.epochs == 10 and not model.stop_training  # fit ends it, at its own last epoch
    assert "so 4 of its 10 epochs fit in the 2-minute budget" in caplog.text
    assert "so all 10 of its epochs fit in the 2-minute budget (time_budget_minutes); it now ends after epoch 10." in (
        caplog.text
    )
    assert model.optimizer.learning_rate == cosine_rate(1e-3, 9, 10)  # the decay ends with the full plan


def test_a_first_epoch_past_the_budget_ends_the_phase_there(caplog):
    caplog.set_level("INFO", logger="fer_pipeline.time_budget")
    clock, plan, model = Clock(), EpochPlan(10), _model()
    budget = TimeBudget(0.5, plan, "frozen", clock=clock)
    budget.set_model(model)
    assert _epochs([budget], clock, [45.0] * 10, model) == 1
    # no pace yet, so the log gives the time spent, not an epoch's
    assert (
        "Phase frozen: 45 s of epochs have spent the 0.5-minute budget (time_budget_minutes); it now ends after epoch 1."
        in caplog.text
    )


def test_the_cosine_bends_to_end_at_the_cut_and_its_last_epoch_runs_near_zero():
    clock, plan, model = Clock(), EpochPlan(100), _model()
    callbacks = [CosineByEpoch(1e-3, plan), TimeBudget(1.0, plan, "frozen", clock=clock)]
    rates = []
    for callback in callbacks:
        callback.set_model(model)
    for epoch in range(100):
        for callback in callbacks:
            callback.on_epoch_begin(epoch)
        rates.append(model.optimizer.learning_rate)
        clock.now += 20.0 if epoch == 0 else 10.0
        for callback in callbacks:
            callback.on_epoch_end(epoch, {})
        if model.stop_training:
            break

    assert len(rates) == 5
    assert rates[:2] == [cosine_rate(1e-3, 0, 100), cosine_rate(1e-3, 1, 100)]  # planned for 100 until the cut
    assert rates[2:] == [cosine_rate(1e-3, e, 5) for e in (2, 3, 4)]
    assert all(a > b for a, b in zip(rates, rates[1:])) and rates[-1] < 0.03 * 1e-3


def test_cosine_rate_is_about_the_mean_of_a_per_step_decay_over_the_epoch():
    per_step = [1e-3 * 0.5 * (1 + np.cos(np.pi * s / 1000)) for s in range(1000)]  # 10 epochs of 100 steps
    per_epoch = [cosine_rate(1e-3, e, 10) for e in range(10)]
    np.testing.assert_allclose(per_epoch, np.mean(np.reshape(per_step, (10, 100)), axis=1), atol=0.005 * 1e-3)


def test_a_resumed_phase_keeps_counting_the_time_it_spent_before():
    clock, plan = Clock(), EpochPlan(100)
    first = TimeBudget(1.0, plan, "frozen", clock=clock)
    first.set_model(_model())
    _epochs([first], clock, [20.0, 10.0], first.model)
    state = json.loads(json.dumps(first.get_state()))

    plan_again, model = EpochPlan(100), _model()
    resumed = TimeBudget(1.0, plan_again, "frozen", clock=clock)
    resumed.set_model(model)
    resumed.set_state(state)
    assert plan_again.epochs == 5
    ran = _epochs([resumed], clock, [10.0] * 10, model, first=2)
    assert ran == 3 and plan_again.epochs == 5  # epochs 3-5 of the original 60 s


def test_a_resumed_phase_s_first_epoch_counts_as_time_not_as_pace():
    clock, plan = Clock(), EpochPlan(100)
    first = TimeBudget(2.0, plan, "frozen", clock=clock)
    first.set_model(_model())
    _epochs([first], clock, [30.0, 10.0, 10.0], first.model)  # 50 s spent, 10 s an epoch: 10 fit in 120 s

    plan_again, model = EpochPlan(100), _model()
    resumed = TimeBudget(2.0, plan_again, "frozen", clock=clock)
    resumed.set_model(model)
    resumed.set_state(json.loads(json.dumps(first.get_state())))
    # The resumed start traces again (30 s): 80 s spent, still 10 s an epoch, so 4 more fit (8 in all);
    # counting the trace as pace (about 15 s an epoch) would have planned 6.
    ran = _epochs([resumed], clock, [30.0] + [10.0] * 20, model, first=3)
    assert plan_again.epochs == 8 and ran == 5 and resumed.traced == [30.0, 30.0]


def test_a_negative_budget_is_refused():
    with pytest.raises(ConfigError, match="time_budget_minutes must be >= 0"):
        TrainConfig(time_budget_minutes=-1)


def test_training_with_a_spent_budget_stops_after_one_epoch_and_records_it(tmp_path):
    images, labels = make_images(6, seed=0)
    dataset = FerDataset(
        images=images,
        labels=labels,
        splits=np.array(["train"] * len(labels)),
        source_splits=np.array(["Training"] * len(labels)),
        keys=np.array([f"s{i}" for i in range(len(labels))]),
        manifest={"format_version": 1},
    )
    split = make_split(dataset, SplitConfig(val_fraction=0.3, seed=1))
    cfg = TrainConfig(
        backbone="compact",
        weights="none",
        compact_widths=(4,),
        dense_units=(8,),
        dropouts=(0.1,),
        batch_size=8,
        frozen_epochs=5,
        finetune_epochs=0,
        frozen_lr=1e-3,
        schedule="cosine",
        time_budget_minutes=1e-4,  # 6 ms: gone within the first epoch
        run_eagerly=True,
    )
    assert len(labels) == 6 * NUM_CLASSES

    result = trainer.train_frozen(dataset, split, cfg, tmp_path)

    history = json.loads((tmp_path / "history.json").read_text())
    assert result.epochs_run == 1 and history["epochs_run"] == 1
    assert history["history"]["learning_rate"] == [pytest.approx(cosine_rate(1e-3, 0, 5))]


def test_a_fit_resumed_from_its_backup_traces_again_and_keeps_the_epochs_before(tmp_path):
    """Through Keras and the training backup, as a restarted process resumes a phase."""
    import keras

    from fer_pipeline.checkpoint import PhaseBackup

    class Interrupt(Exception):
        pass

    class StopAt(keras.callbacks.Callback):
        def __init__(self, epoch):
            super().__init__()
            self.epoch = epoch

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == self.epoch:
                raise Interrupt

    def fit(stop_at, clock):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
        model.compile("adam", "sparse_categorical_crossentropy")
        budget = TimeBudget(60.0, EpochPlan(5), "small", clock=clock)
        callbacks = [budget, StopAt(stop_at)]
        backup = PhaseBackup(tmp_path, {"phase": "small", "epochs": 5})
        x, y = np.ones((8, 3), "float32"), np.zeros(8, "int32")
        try:
            model.fit(x, y, epochs=5, verbose=0, callbacks=[*callbacks, backup.callback(callbacks)])
        except Interrupt:
            pass
        return budget

    clock = Clock()

    def ticking() -> float:  # each epoch takes 1 s (two reads of the clock)
        clock.now += 0.5
        return clock.now

    fit(stop_at=2, clock=ticking)
    resumed = fit(stop_at=-1, clock=ticking)
    assert len(resumed.traced) == 2 and len(resumed.paced) == 3  # epochs 1 and 3 traced; 2, 4 and 5 paced
