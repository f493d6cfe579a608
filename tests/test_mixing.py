"""Mixup and CutMix of training batches (``TrainConfig.mix``) on both feeds."""

from __future__ import annotations

import numpy as np
import pytest

from fer_pipeline.config import TrainConfig
from fer_pipeline.mixing import apply, draw, mixer

LABELS = np.array([0, 1, 2, 3, 4, 5, 6, 0])
WEIGHTS = np.linspace(0.5, 2.0, 8).astype("float32")


def _images(n=8):
    return np.random.default_rng(0).uniform(0, 255, (n, 48, 48, 1)).astype("float32")


def _lambdas(targets):
    """Each row's share of its own label (rows whose partner has the same label read 1)."""
    return targets[np.arange(len(LABELS)), LABELS]


def test_mixup_is_a_convex_combination_with_its_partner_and_mixes_targets_and_weights_alike():
    images = _images()
    for seed in range(5):
        chosen = draw(TrainConfig(mix="mixup"), 8, (48, 48), np.random.default_rng(seed))
        mixed, targets, weights = apply(chosen, images, LABELS, WEIGHTS)
        lam, partner = chosen.lam, chosen.partner
        assert 0.0 <= lam <= 1.0 and sorted(partner) == list(range(8))
        np.testing.assert_allclose(mixed, lam * images + (1 - lam) * images[partner], rtol=1e-5)
        np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
        np.testing.assert_allclose(targets, lam * np.eye(7)[LABELS] + (1 - lam) * np.eye(7)[LABELS[partner]])
        np.testing.assert_allclose(weights, lam * WEIGHTS + (1 - lam) * WEIGHTS[partner], rtol=1e-6)


def test_lambda_follows_beta_alpha_alpha():
    lambdas = [draw(TrainConfig(mix="mixup"), 4, (48, 48), np.random.default_rng(s)).lam for s in range(400)]
    assert np.mean(lambdas) == pytest.approx(0.5, abs=0.05) and np.std(lambdas) == pytest.approx(0.289, abs=0.03)
    peaked = [
        draw(TrainConfig(mix="mixup", mix_alpha=0.2), 4, (48, 48), np.random.default_rng(s)).lam for s in range(400)
    ]
    assert np.mean([min(v, 1 - v) < 0.1 for v in peaked]) > 0.5  # small alpha: mostly near-pure images


def test_cutmix_pastes_one_rectangle_from_the_partner_and_lambda_is_the_area_kept():
    images = _images()
    before = images.copy()
    for seed in range(10):
        chosen = draw(TrainConfig(mix="cutmix"), 8, (48, 48), np.random.default_rng(seed))
        mixed, targets, _ = apply(chosen, images, LABELS, None)
        y0, y1, x0, x1 = chosen.box
        inside = np.zeros((48, 48), bool)
        inside[y0:y1, x0:x1] = True
        np.testing.assert_array_equal(mixed[:, inside], images[chosen.partner][:, inside])
        np.testing.assert_array_equal(mixed[:, ~inside], images[:, ~inside])
        assert chosen.lam == pytest.approx(1 - inside.mean())
        own = LABELS != LABELS[chosen.partner]
        np.testing.assert_allclose(_lambdas(targets)[own], chosen.lam, rtol=1e-6)
    np.testing.assert_array_equal(images, before)  # the epoch's images are not pasted over


def test_mix_prob_leaves_the_other_batches_whole_with_one_hot_targets():
    cfg = TrainConfig(mix="mixup", mix_prob=0.5)
    draws = [draw(cfg, 8, (48, 48), np.random.default_rng(s)) for s in range(200)]
    assert np.mean([d.lam == 1.0 for d in draws]) == pytest.approx(0.5, abs=0.1)
    whole = next(d for d in draws if d.lam == 1.0)
    images = _images()
    mixed, targets, weights = apply(whole, images, LABELS, WEIGHTS)
    np.testing.assert_array_equal(mixed, images)
    np.testing.assert_array_equal(targets, np.eye(7)[LABELS])
    np.testing.assert_array_equal(weights, WEIGHTS)


def test_mix_none_has_no_mixer():
    assert mixer(TrainConfig()) is None


def test_the_tf_data_pipeline_mixes_training_batches_with_their_class_weights():
    from fer_pipeline.tf_data import make_dataset

    table = np.linspace(0.5, 2.0, 7).astype("float32")  # class weights reach the loss per image
    labels = np.arange(24) % 7
    images = np.random.default_rng(1).integers(0, 255, (24, 48, 48)).astype("uint8")
    train = make_dataset(
        images, labels, 8, shuffle=True, seed=2, sample_weights=table[labels], mix=mixer(TrainConfig(mix="mixup"))
    )
    assert [tuple(s.shape) for s in train.element_spec] == [(None, 48, 48, 1), (None, 7), (None,)]
    epochs = [[(t.numpy(), w.numpy()) for _, t, w in train] for _ in range(2)]
    for targets, weights in epochs[0]:
        np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
        np.testing.assert_allclose(weights, targets @ table, rtol=1e-5)  # lambda-weighted, as the targets
    assert not np.allclose(epochs[0][0][0], epochs[1][0][0])  # new draws each epoch
    plain = make_dataset(images, labels, 8, shuffle=False, seed=2)
    assert plain.element_spec[1].dtype.name == "int32" and plain.element_spec[1].shape.rank == 1


@pytest.mark.parametrize("mix", ["mixup", "cutmix"])
def test_a_tiny_model_trains_on_mixed_batches_of_both_feeds_and_validates_on_labels(mix):
    from fer_pipeline.feed_numpy import AugmentedEpochs
    from fer_pipeline.tf_data import make_dataset
    from fer_pipeline.trainer import compile_model
    from tiny_models import tiny_model

    cfg = TrainConfig(mix=mix, label_smoothing=0.1, optimizer="sgd", weight_decay=1e-4)
    images = np.random.default_rng(3).uniform(0, 255, (32, 48, 48, 1)).astype("float32")
    labels, weights = np.arange(32) % 7, np.ones(32, "float32")
    feeds = {
        "numpy": AugmentedEpochs(images, labels, weights, 8, None, seed=1, mix=mixer(cfg)),
        "tf.data": make_dataset(images, labels, 8, shuffle=True, seed=1, sample_weights=weights, mix=mixer(cfg)),
    }
    for name, train in feeds.items():
        model = compile_model(tiny_model(), cfg, 0.01).trainable
        history = model.fit(
            train, validation_data=(images[:16], labels[:16]), epochs=2, shuffle=False, verbose=0
        ).history
        assert set(history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}, name
        assert all(0.0 <= v <= 1.0 for v in history["accuracy"] + history["val_accuracy"]), name
        assert np.isfinite(history["loss"] + history["val_loss"]).all(), name
