"""Stochastic weight averaging over a phase's last epochs (fer_pipeline.weight_average)."""

from __future__ import annotations

import json
from dataclasses import replace

import keras
import numpy as np
import pytest

from fer_pipeline import synthetic
from fer_pipeline import trainer as train
from fer_pipeline.config import SplitConfig, TrainConfig
from fer_pipeline.errors import ConfigError
from fer_pipeline.model import load_model
from fer_pipeline.split import make_split
from fer_pipeline.weight_average import EpochTailAverage, mean_weights


class EpochEnds(keras.callbacks.Callback):
    """Every epoch's end weights, as the averaging sees them."""

    def on_train_begin(self, logs=None):
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())


def _fit(epochs: int, callbacks: list) -> keras.Model:
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    model = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(8), keras.layers.BatchNormalization(), keras.layers.Dense(2)]
    )
    model.compile(keras.optimizers.Adam(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, validation_data=(x[:16], y[:16]), epochs=epochs, batch_size=16, verbose=0, callbacks=callbacks)
    return model


@pytest.mark.parametrize(("epochs", "average", "averaged"), [(5, 2, (4, 5)), (3, 10, (1, 3))])
def test_the_model_ends_with_the_mean_of_its_last_epochs(epochs, average, averaged):
    ends, tail = EpochEnds(), EpochTailAverage(average)
    model = _fit(epochs, [ends, tail])
    first, last = averaged
    expected = [np.mean(arrays, axis=0) for arrays in zip(*ends.weights[first - 1 : last])]
    for got, want in zip(model.get_weights(), expected, strict=True):  # BatchNorm's statistics included
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert tail.averaged == averaged
    assert not np.allclose(model.get_weights()[0], ends.weights[-1][0])  # not simply the last epoch


def test_it_replaces_the_weights_early_stopping_restored():
    ends = EpochEnds()
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
    model = _fit(8, [ends, stop, EpochTailAverage(3)])
    assert (
        stop.stopped_epoch > 0 and stop.best_epoch < len(ends.weights) - 1
    )  # it stopped, and restored an earlier epoch
    expected = mean_weights(ends.weights[-3:])
    np.testing.assert_allclose(model.get_weights()[0], expected[0], rtol=1e-6)


def test_mean_weights_keeps_the_last_integer_state():
    snapshots = [
        [np.array([1.0, 3.0], "float32"), np.array([7], "int64")],
        [np.array([3.0, 5.0], "float32"), np.array([9], "int64")],
    ]
    mean, state = mean_weights(snapshots)
    np.testing.assert_array_equal(mean, [2.0, 4.0])
    assert mean.dtype == np.float32 and state.tolist() == [9]


def test_negative_average_last_epochs_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"average_last_epochs must be >= 0 \(0 = off\), got -1"):
        TrainConfig(average_last_epochs=-1)


def test_a_phase_records_and_logs_the_epochs_it_averaged(tmp_path, caplog):
    dataset = synthetic.train_dataset(8)
    split = make_split(dataset, SplitConfig(val_fraction=0.25, seed=1))
    cfg = TrainConfig(
        backbone="compact",
        weights="none",
        compact_widths=(4, 8, 8, 8),
        dense_units=(8,),
        dropouts=(0.1,),
        batch_size=16,
        frozen_epochs=3,
        early_stopping_patience=5,
        average_last_epochs=2,
        run_eagerly=True,
    )
    caplog.set_level("INFO", logger="fer_pipeline.trainer")

    result = train.train_frozen(dataset, split, cfg, tmp_path / "frozen")

    record = json.loads((tmp_path / "frozen" / "history.json").read_text())
    assert record["averaged"]["epochs"] == [2, 3]
    assert 0 <= record["averaged"]["val_accuracy"] <= 1 and record["averaged"]["val_loss"] > 0
    assert "kept the mean of epochs 2-3's weights" in caplog.text
    saved = load_model(result.model_path)
    for a, b in zip(saved.get_weights(), result.model.get_weights(), strict=True):  # the mean is what was saved
        np.testing.assert_array_equal(a, b)
    off = train.train_frozen(dataset, split, replace(cfg, average_last_epochs=0), tmp_path / "off")
    assert json.loads((tmp_path / "off" / "history.json").read_text())["averaged"] is None
    assert off.epochs_run == 3


def test_the_phase_metrics_say_the_model_is_an_average(tmp_path):
    from types import SimpleNamespace

    from fer_pipeline.component_io import phase_outputs

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "history.json").write_text(json.dumps({"config": {"seed": 1}}))
    logged = {}
    metrics = SimpleNamespace(log_metric=lambda key, value: logged.__setitem__(key, value))
    model = SimpleNamespace(path=str(tmp_path / "model"), metadata={})
    history = {"val_loss": [1.3, 1.2, 1.25], "val_accuracy": [0.5, 0.6, 0.58]}
    averaged = {"epochs": [2, 3], "val_loss": 1.1, "val_accuracy": 0.62}
    result = train.PhaseResult(None, history, 3, 2, 1.0, tmp_path / "model" / "model.keras", averaged)

    phase_outputs(result, model, tmp_path / "history.json", metrics)

    assert logged["best_epoch"] == 2 and logged["best_val_loss"] == 1.2
    assert logged["averaged_first_epoch"] == 2 and logged["averaged_last_epoch"] == 3
    assert logged["averaged_val_loss"] == 1.1 and logged["averaged_val_accuracy"] == 0.62
