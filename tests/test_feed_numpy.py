"""The NumPy feed's augmentation on the device: the ranges of the model's own layers."""

from __future__ import annotations

import numpy as np

from fer_pipeline.config import TrainConfig
from fer_pipeline.feed_numpy import AUGMENTATION_OFF, AugmentedEpochs, device_augmenter


def _images(n=16):
    return np.random.default_rng(0).uniform(0, 255, (n, 48, 48, 1)).astype("float32")


def test_no_range_is_the_identity_and_flip_alone_mirrors_about_half():
    images = _images()
    same = device_augmenter(TrainConfig(**AUGMENTATION_OFF))(images, seed=1)
    np.testing.assert_allclose(same, images, atol=1e-3)
    flipped = device_augmenter(TrainConfig(**{**AUGMENTATION_OFF, "horizontal_flip": True}))(images, seed=1)
    mirrored = [np.allclose(f, i[:, ::-1], atol=1e-3) for f, i in zip(flipped, images)]
    kept = [np.allclose(f, i, atol=1e-3) for f, i in zip(flipped, images)]
    assert all(m or k for m, k in zip(mirrored, kept)) and 0 < sum(mirrored) < len(images)


def test_a_shift_moves_the_image_within_its_range_and_repeats_the_edge():
    image = np.zeros((1, 48, 48, 1), "float32")
    image[0, 20:28, 20:28] = 255.0
    cfg = TrainConfig(**{**AUGMENTATION_OFF, "width_shift": 0.25})
    shifted = device_augmenter(cfg)(np.repeat(image, 32, axis=0), seed=3)
    columns = [np.flatnonzero(s[24, :, 0] > 127) for s in shifted]
    offsets = np.array([c.mean() - 23.5 for c in columns])
    assert np.abs(offsets).max() <= 0.25 * 48 + 1 and np.abs(offsets).max() > 2  # moved, within the range
    np.testing.assert_allclose([np.ptp(c) for c in columns], 7, atol=1)  # not stretched


def test_each_epoch_is_a_new_order_and_new_augmentation_with_its_weights_alongside():
    images, labels = _images(10), np.arange(10) % 7
    weights = np.linspace(1, 2, 10).astype("float32")
    epochs = AugmentedEpochs(images, labels, weights, 4, device_augmenter(TrainConfig()), seed=5)
    assert len(epochs) == 3
    x0, y0, w0 = epochs[0]
    epochs.on_epoch_end()
    x1, y1, _ = epochs[0]
    assert x0.shape == (4, 48, 48, 1) and not np.array_equal(x0, x1)
    order = np.random.default_rng(5).permutation(10)[:4]  # the first epoch's order: its labels and weights
    np.testing.assert_array_equal(y0, labels[order])
    np.testing.assert_allclose(w0, weights[order])


def test_mixed_batches_repeat_by_seed_epoch_and_index_and_mix_none_leaves_them_alone():
    from fer_pipeline.mixing import mixer

    images, labels = _images(10), np.arange(10) % 7
    weights = np.linspace(1, 2, 10).astype("float32")
    plain = AugmentedEpochs(images, labels, weights, 4, None, seed=5, mix=mixer(TrainConfig()))
    x, y, w = plain[0]
    order = np.random.default_rng(5).permutation(10)[:4]
    np.testing.assert_array_equal(x, images[order])
    np.testing.assert_array_equal(y, labels[order])  # class ids, as without the option
    mixed = AugmentedEpochs(images, labels, weights, 4, None, seed=5, mix=mixer(TrainConfig(mix="mixup")))
    x0, targets, w0 = mixed[0]
    assert targets.shape == (4, 7) and not np.array_equal(x0, x)
    np.testing.assert_array_equal(mixed[0][0], x0)  # the same batch again: the same draw
    mixed.on_epoch_end()
    assert not np.array_equal(mixed[0][1], targets) or not np.array_equal(mixed[0][0], x0)


def test_brightness_moves_each_image_by_one_offset_within_its_range_on_both_feeds():
    import keras

    from fer_pipeline.model import build_model

    images = np.full((64, 48, 48, 1), 128.0, "float32")
    cfg = TrainConfig(**{**AUGMENTATION_OFF, "brightness": 0.2})
    brighter = device_augmenter(cfg)(images, seed=2)
    offsets = brighter.reshape(64, -1)
    assert np.ptp(offsets, axis=1).max() < 1e-3  # one offset per image
    assert 0.2 * 255 * 0.5 < np.abs(offsets[:, 0] - 128).max() <= 0.2 * 255 + 1e-3
    # the model's own layer (TensorFlow feed) does the same: only in training
    model = build_model(TrainConfig(backbone="compact", weights="none", compact_widths=(4,), brightness=0.2))
    assert model.get_layer("augment_brightness") is not None
    assert "augment_brightness" not in [
        layer.name for layer in build_model(TrainConfig(backbone="compact", weights="none", compact_widths=(4,))).layers
    ]
    layer = model.get_layer("augment_brightness")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(images[:2], training=False)), images[:2])
