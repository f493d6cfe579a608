"""The phase's progress lines: when a long run ends, at its own pace so far."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import pytest

from fer_pipeline import synthetic
from fer_pipeline import trainer as train
from fer_pipeline.config import SplitConfig, TrainConfig
from fer_pipeline.progress import PhaseProgress
from fer_pipeline.split import make_split


class FakeClock:
    def __init__(self):
        self.seconds = 1000.0

    def __call__(self) -> float:
        return self.seconds


def run_epochs(callback: PhaseProgress, clock: FakeClock, epochs: range, seconds_each: float) -> None:
    callback.on_train_begin()
    for epoch in epochs:
        callback.on_epoch_begin(epoch)
        clock.seconds += seconds_each
        callback.on_epoch_end(epoch)


NOON = datetime(2026, 12, 3, 12, 0, tzinfo=timezone.utc)


def test_a_long_phase_logs_each_tenth_with_minutes_left_and_the_end_time(caplog):
    clock = FakeClock()
    progress = PhaseProgress("frozen", 130, clock=clock, now=lambda: NOON)
    with caplog.at_level(logging.INFO, logger="fer_pipeline.progress"):
        run_epochs(progress, clock, range(130), seconds_each=40.0)
    lines = [r.getMessage() for r in caplog.records]
    # every 13 epochs, none after the last (the phase's own end line says that)
    assert [line.split(",")[0].removeprefix("Phase frozen: ") for line in lines] == [
        f"epoch {e}/130" for e in range(13, 130, 13)
    ]
    first = lines[0]
    assert "9 min in this run, 40 s an epoch; 78 min left, about 13:18 UTC." in first  # 13 and 117 x 40 s
    assert "at most" not in first


def test_the_pace_counts_only_this_process_epochs_after_a_resume(caplog):
    clock = FakeClock()
    progress = PhaseProgress("frozen", 100, may_stop_early=True, clock=clock, now=lambda: NOON)
    with caplog.at_level(logging.INFO, logger="fer_pipeline.progress"):
        run_epochs(progress, clock, range(50, 60), seconds_each=30.0)  # resumed at 50 of 100
    (line,) = [r.getMessage() for r in caplog.records]
    assert "epoch 60/100" in line and "30 s an epoch" in line  # 300 s over 10 epochs, not 60
    assert "at most 20 min left" in line  # patience may end it sooner


@pytest.mark.parametrize("epochs", [1, 5, 9])
def test_short_phases_log_nothing_beyond_keras_lines(caplog, epochs):
    clock = FakeClock()
    with caplog.at_level(logging.INFO, logger="fer_pipeline.progress"):
        run_epochs(PhaseProgress("frozen", epochs, clock=clock), clock, range(epochs), seconds_each=5.0)
    assert caplog.records == []


def test_the_trainer_logs_progress_for_a_phase_of_ten_epochs(tmp_path, caplog):
    dataset = synthetic.train_dataset(4)
    split = make_split(dataset, SplitConfig(val_fraction=0.25, seed=1))
    cfg = TrainConfig(
        backbone="compact",
        weights="none",
        compact_widths=(4, 4, 4, 4),
        dense_units=(4,),
        dropouts=(0.0,),
        batch_size=32,
        frozen_epochs=10,
        early_stopping_patience=3,
    )
    with caplog.at_level(logging.INFO, logger="fer_pipeline.progress"):
        train.train_frozen(dataset, split, cfg, tmp_path / "frozen")
    lines = [r.getMessage() for r in caplog.records if r.name == "fer_pipeline.progress"]
    # one line per epoch but the last, each bounded by the patience; early stopping may end it sooner
    assert lines and all("at most" in line and "/10," in line for line in lines)
    assert lines[0].startswith("Phase frozen: epoch 1/10, ")
