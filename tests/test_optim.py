"""Optimizer choice, weight decay, and the loss and accuracy on mixed targets (issue 24)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from fer_pipeline.config import TrainConfig
from fer_pipeline.errors import ConfigError
from fer_pipeline.optim import Accuracy, SparseCrossentropy, make_optimizer, metrics_for


def test_the_default_is_the_seeds_adam_without_weight_decay():
    built = make_optimizer(TrainConfig(), 1e-4)
    assert type(built) is keras.optimizers.Adam and built.weight_decay is None
    seeds = keras.optimizers.Adam(learning_rate=1e-4).get_config()
    assert {**built.get_config(), "name": None} == {**seeds, "name": None}  # names count up per instance
    assert metrics_for(TrainConfig()) == ["accuracy"]  # Keras' own metric, as before


def test_sgd_is_nesterov_with_momentum_09_and_takes_the_phase_rate():
    built = make_optimizer(TrainConfig(optimizer="sgd", weight_decay=1e-4), 0.01)
    assert type(built) is keras.optimizers.SGD
    assert (built.momentum, built.nesterov, built.weight_decay) == (0.9, True, 1e-4)
    assert float(built.learning_rate) == pytest.approx(0.01)
    assert make_optimizer(TrainConfig(optimizer="sgd"), 0.01).weight_decay is None  # 0: no decay step at all


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_weight_decay_shrinks_each_weight_by_rate_times_decay_apart_from_the_gradient(name):
    weight = keras.Variable(np.ones(3, "float32"))
    built = make_optimizer(TrainConfig(optimizer=name, weight_decay=0.01), 0.1)
    built.apply([keras.ops.zeros(3)], [weight])  # no gradient: what moves the weight is the decay alone
    np.testing.assert_allclose(keras.ops.convert_to_numpy(weight), 1 - 0.1 * 0.01, rtol=1e-6)


@pytest.mark.parametrize(
    "values, named",
    [
        ({"optimizer": "rmsprop"}, "optimizer must be one of adam, adamw, sgd, got 'rmsprop'"),
        ({"optimizer": "sgd", "weight_decay": -1e-4}, "weight_decay must be >= 0"),
        ({"weight_decay": 1e-4}, "weight_decay=0.0001 needs optimizer adamw or sgd"),
        ({"mix": "blend"}, "mix must be one of none, mixup, cutmix, got 'blend'"),
        ({"mix": "mixup", "mix_alpha": 0.0}, "mix_alpha must be > 0 with mix=mixup"),
        ({"mix": "cutmix", "mix_alpha": -1.0}, "mix_alpha must be > 0 with mix=cutmix"),
        ({"mix": "mixup", "mix_prob": 0.0}, r"mix_prob must be in \(0, 1\]"),
    ],
)
def test_bad_optimizer_and_mix_values_are_one_config_error_naming_the_field(values, named):
    with pytest.raises(ConfigError, match=named) as raised:
        TrainConfig.from_dict(values)
    assert "\n" not in str(raised.value)


def test_mix_alpha_is_not_checked_while_mixing_is_off():
    assert TrainConfig(mix_alpha=0.0).mix == "none"


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_the_loss_on_mixed_targets_is_the_lambda_weighted_loss_of_the_two_labels(smoothing):
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(7), size=5).astype("float32")
    a, b, lam = np.array([0, 3, 6, 1, 2]), np.array([1, 3, 0, 5, 2]), 0.3
    targets = (lam * np.eye(7)[a] + (1 - lam) * np.eye(7)[b]).astype("float32")
    loss = SparseCrossentropy(label_smoothing=smoothing, reduction=None)
    expected = lam * loss(a, probs) + (1 - lam) * loss(b, probs)
    np.testing.assert_allclose(loss(targets, probs), expected, rtol=1e-5)
    one_hot = np.eye(7, dtype="float32")[a]  # an unmixed batch as soft targets: the integer loss
    np.testing.assert_allclose(loss(one_hot, probs), loss(a, probs), rtol=1e-5)


def test_accuracy_reads_class_ids_as_keras_does_and_soft_targets_by_their_larger_share():
    probs = np.eye(7, dtype="float32")[[0, 3, 6, 2]] * 0.9 + 0.1 / 7
    labels = np.array([0, 3, 1, 2])
    assert float(Accuracy()(labels, probs)) == pytest.approx(0.75)
    soft = 0.7 * np.eye(7)[[0, 1, 6, 5]] + 0.3 * np.eye(7)[[4, 3, 6, 2]]
    assert float(Accuracy()(soft.astype("float32"), probs)) == pytest.approx(0.5)  # 0 and 6 match
    assert metrics_for(TrainConfig(mix="mixup"))[0].name == "accuracy"  # the history keeps its keys
