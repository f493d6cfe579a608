"""The one-affine augmentation (fer_pipeline.augment): the seed's draws unchanged with the
crop off, the random resized crop within its ranges, one resampling on both feeds, the
ten-crop test-time views, and random erasing, one definition on both feeds."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from fer_pipeline.augment import (
    ERASE_DRAWS,
    AffineRanges,
    RandomAffine,
    RandomErase,
    ResizedCrop,
    affine_rows,
    crop_rows,
    erase_boxes,
    erase_boxes_from_uniform,
    erase_mask,
    rows_from_uniform,
    tta_crops_mismatch,
)
from fer_pipeline.config import TrainConfig
from fer_pipeline.errors import ConfigError
from fer_pipeline.feed_numpy import AUGMENTATION_OFF, device_augmenter
from fer_pipeline.model import (
    OUTPUT_NAME,
    build_model,
    load_model,
    tta_crop_corners,
    tta_view_count,
    with_flip_tta,
)
from tiny_models import TINY_COMPACT

SIZE = (48, 48)
CROP = TrainConfig(**{**AUGMENTATION_OFF, "crop_scale": (0.8, 1.2)})


def _seed_affine_rows(cfg, n, size, rng):
    """feed_numpy.affine_rows as it was before the crop (commit 8eb112f), kept to pin the default."""
    h, w = size
    flip = cfg.horizontal_flip & (rng.uniform(size=n) < 0.5)
    tx = rng.uniform(-1.0, 1.0, n) * cfg.width_shift * w
    ty = rng.uniform(-1.0, 1.0, n) * cfg.height_shift * h
    angle = rng.uniform(-1.0, 1.0, n) * cfg.rotation * 2 * np.pi
    scale = 1.0 + rng.uniform(-1.0, 1.0, n) * cfg.zoom
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    a0, a1, a2 = cos, sin, cx - tx - cos * cx - sin * cy
    b0, b1, b2 = -sin, cos, cy - ty + sin * cx - cos * cy
    a0, a1, a2 = np.where(flip, -a0, a0), np.where(flip, -a1, a1), np.where(flip, (w - 1) - a2, a2)
    zeros = np.zeros(n)
    return np.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1).astype("float32")


def _pixels(n=4):
    return np.random.default_rng(0).uniform(0, 255, (n, 48, 48, 1)).astype("float32")


@pytest.mark.parametrize("cfg", [TrainConfig(), TrainConfig(rotation=0.03, zoom=0.1, width_shift=0.2)])
def test_crop_off_draws_the_seeds_rows_bit_for_bit_and_leaves_the_generator_where_it_did(cfg):
    rng, seed_rng = np.random.default_rng(7), np.random.default_rng(7)
    np.testing.assert_array_equal(affine_rows(cfg, 300, SIZE, rng), _seed_affine_rows(cfg, 300, SIZE, seed_rng))
    assert rng.random() == seed_rng.random()  # brightness draws next, as before


def test_crop_scales_and_positions_stay_in_their_ranges():
    rows = affine_rows(CROP, 2000, SIZE, np.random.default_rng(1))
    a0, a1, a2, b0, b1, b2 = rows[:, :6].T
    np.testing.assert_array_equal(a0, b1)  # square: crop_ratio [1, 1]
    assert not a1.any() and not b0.any()  # no rotation
    assert 0.8 <= a0.min() < 0.82 and 1.18 < a0.max() <= 1.2  # the side, over the whole range
    centre = 23.5
    room = np.abs(1 - a0) * centre  # the crop's centre moves up to half the room between the edges
    assert np.all(np.abs(a0 * centre + a2 - centre) <= room + 1e-4)
    assert np.all(np.abs(b1 * centre + b2 - centre) <= room + 1e-4)


def test_crop_ratio_draws_aspects_within_its_range_around_the_drawn_side():
    cfg = dataclasses.replace(CROP, crop_ratio=(0.75, 4 / 3))
    rows = affine_rows(cfg, 2000, SIZE, np.random.default_rng(2))
    aspect = rows[:, 0] / rows[:, 4]
    assert 0.75 - 1e-5 <= aspect.min() < 0.8 and 1.25 < aspect.max() <= 4 / 3 + 1e-5
    np.testing.assert_allclose(np.sqrt(rows[:, 0] * rows[:, 4]), np.sqrt(rows[:, 0] * rows[:, 4]).clip(0.8, 1.2))


def test_keras_and_numpy_build_the_same_rows_from_the_same_draws():
    ranges = AffineRanges.of(TrainConfig(rotation=0.03, zoom=0.1, crop_scale=(0.8, 1.2), crop_ratio=(0.8, 1.25)))
    u = np.random.default_rng(3).random((ranges.draws, 64))
    expected = rows_from_uniform(ranges, u, SIZE)
    got = keras.ops.convert_to_numpy(rows_from_uniform(ranges, keras.ops.convert_to_tensor(u), SIZE, xp=keras.ops))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_the_model_resamples_once_with_the_crop_on_and_as_the_seed_with_it_off(monkeypatch):
    on = TrainConfig(**{**TINY_COMPACT.to_dict(), "rotation": 0.03, "zoom": 0.1, "crop_scale": (0.8, 1.2)})
    augmenting = lambda cfg: [layer.name for layer in build_model(cfg).layers if layer.name.startswith("augment_")]  # noqa: E731
    assert augmenting(on) == ["augment_affine"]
    assert augmenting(dataclasses.replace(on, crop_scale=(1.0, 1.0))) == [
        "augment_flip",
        "augment_translate",
        "augment_rotate",
        "augment_zoom",
    ]
    calls = []
    resample = keras.ops.image.affine_transform
    monkeypatch.setattr(
        keras.ops.image, "affine_transform", lambda x, rows, **kw: calls.append(rows) or resample(x, rows, **kw)
    )
    layer = RandomAffine(AffineRanges.of(on), seed=1)
    x = _pixels(32)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)
    assert not calls
    out = keras.ops.convert_to_numpy(layer(x, training=True))
    assert len(calls) == 1  # one resampling for flip, shift, rotation, zoom and crop together
    rows = keras.ops.convert_to_numpy(calls[0])
    assert rows.shape == (32, 8) and not np.allclose(out, x)
    scale = np.hypot(rows[:, 0], rows[:, 3])  # rotation keeps the side: zoom x crop
    assert scale.min() >= 0.8 * 0.9 - 1e-5 and scale.max() <= 1.2 * 1.1 + 1e-5


def test_the_layer_survives_save_and_load(tmp_path):
    cfg = TrainConfig(**{**TINY_COMPACT.to_dict(), "crop_scale": (0.9, 1.1), "crop_ratio": (0.9, 1.1)})
    build_model(cfg).save(tmp_path / "model.keras")
    layer = load_model(tmp_path / "model.keras").get_layer("augment_affine")
    assert layer.ranges == AffineRanges.of(cfg) and layer.seed == cfg.seed


def test_numpy_feed_with_the_crop_on_moves_images_and_the_model_gets_no_augmentation_layers():
    from fer_pipeline.feed_numpy import NumpyFeed

    images = _pixels(8)
    assert not np.allclose(device_augmenter(CROP)(images, seed=1), images, atol=1)
    model_cfg = NumpyFeed().model_config(dataclasses.replace(TINY_COMPACT, crop_scale=(0.8, 1.2)))
    assert not [layer for layer in build_model(model_cfg).layers if layer.name.startswith("augment_")]


def test_a_centre_crop_of_the_whole_image_is_the_image_and_a_corner_crop_starts_at_its_corner():
    x = _pixels()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ResizedCrop(1.0, (0, 0))(x)), x, atol=1e-3)
    top_left = keras.ops.convert_to_numpy(ResizedCrop(0.8, (-1, -1))(x))
    np.testing.assert_allclose(top_left[:, 0, 0], x[:, 0, 0], atol=1e-2)  # its first pixel is the image's
    assert not np.allclose(top_left[:, -1, -1], x[:, -1, -1], atol=1)  # its last is inside the image
    np.testing.assert_allclose(crop_rows(0.8, (0, 0), SIZE)[[0, 2, 4, 5]], [0.8, 0.2 * 23.5, 0.8, 0.2 * 23.5])


def test_ten_crop_tta_averages_ten_views_and_survives_save_and_load(tmp_path):
    keras.utils.set_random_seed(0)
    model = build_model(TINY_COMPACT)
    tta = with_flip_tta(model, crop=0.8)
    assert tta_view_count(crop=0.8) == 10 == sum(isinstance(layer, ResizedCrop) for layer in tta.layers)
    x = _pixels()
    views = [ResizedCrop(0.8, corner)(base) for base in (x, x[:, :, ::-1]) for corner in tta_crop_corners()]
    expected = np.mean([model.predict(keras.ops.convert_to_numpy(v), verbose=0) for v in views], axis=0)
    np.testing.assert_allclose(tta.predict(x, verbose=0), expected, atol=1e-5)
    tta.save(tmp_path / "model.keras")
    np.testing.assert_allclose(load_model(tmp_path / "model.keras").predict(x, verbose=0), expected, atol=1e-5)


def test_shifted_and_cropped_views_together_average_both_ten_view_sets(tmp_path):
    keras.utils.set_random_seed(0)
    model = build_model(TINY_COMPACT)
    both = with_flip_tta(model, shift=1, crop=0.8)
    assert tta_view_count(shift=1, crop=0.8) == 20 == len(both.get_layer(OUTPUT_NAME).input)
    x = _pixels()
    shifted = with_flip_tta(model, shift=1).predict(x, verbose=0)
    cropped = with_flip_tta(model, crop=0.8).predict(x, verbose=0)
    np.testing.assert_allclose(both.predict(x, verbose=0), (shifted + cropped) / 2, atol=1e-5)
    assert tta_view_count() == 2 and tta_view_count(shift=1) == 10
    assert TrainConfig.from_dict({"tta": True, "tta_shift": 1, "tta_crops": 0.8}).tta_crops == 0.8  # a valid recipe


@pytest.mark.parametrize(
    "values, message",
    [
        ({"crop_scale": (1.2, 0.8)}, r"crop_scale must be \[low, high\] with 0 < low <= high, got \[1.2, 0.8\]"),
        ({"crop_scale": (0.0, 1.0)}, r"crop_scale must be \[low, high\] with 0 < low"),
        ({"crop_ratio": (1.0,)}, r"crop_ratio must be \[low, high\]"),
        ({"tta": True, "tta_crops": 1.0}, r"tta_crops must be 0 \(off\) or in \[0.5, 1\), got 1.0"),
        ({"tta_crops": 0.8}, "tta_crops=0.8 needs tta=true"),
    ],
)
def test_wrong_crop_values_are_one_line_naming_the_field(values, message):
    with pytest.raises(ConfigError, match=message) as error:
        TrainConfig.from_dict(values)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("values", "mismatch"),
    [
        ({"tta": True, "tta_shift": 0, "tta_crops": 0.8}, True),  # crop views, no training crops
        ({"tta": True, "tta_shift": 0, "tta_crops": 0.8, "crop_scale": (0.8, 1.2)}, False),
        ({"tta": True, "tta_shift": 0, "tta_crops": 0.8, "crop_ratio": (0.9, 1.1)}, False),
        ({"tta": True, "tta_shift": 1}, False),
        ({"tta": False}, False),
    ],
)
def test_crop_views_without_training_crops_are_named_before_training(values, mismatch, caplog):
    from fer_pipeline import trainer

    cfg = TrainConfig.from_dict({"backbone": "compact", "weights": "none", **values})
    message = tta_crops_mismatch(cfg)
    assert (message is not None) == mismatch
    if mismatch:
        assert "tta_crops=0.8" in message and "crop_scale" in message and "\n" not in message
        with caplog.at_level("WARNING", logger=trainer.logger.name):
            with pytest.raises(StopTraining):
                trainer.train_frozen(None, None, cfg, "unused", feed=StopFeed())
        assert message in caplog.text


class StopTraining(Exception):
    pass


class StopFeed:
    """A feed that stops the phase where it would set devices up, before any work."""

    def prepare(self, cfg):
        raise StopTraining


def test_a_model_with_the_crop_and_erasing_trains_in_graph_mode_on_a_ragged_last_batch():
    cfg = TrainConfig(**{**TINY_COMPACT.to_dict(), "crop_scale": (0.8, 1.2), "rotation": 0.03, "erasing": 0.5})
    model = build_model(cfg)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    history = model.fit(_pixels(7), np.arange(7) % 7, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


# Random erasing


def _zeroed_box(image: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, left, height, width) of the zero pixels of ``image`` if they fill one rectangle exactly; None if none."""
    zero = image[..., 0] == 0
    if not zero.any():
        return None
    rows, cols = np.flatnonzero(zero.any(axis=1)), np.flatnonzero(zero.any(axis=0))
    box = (rows[0], cols[0], rows[-1] + 1 - rows[0], cols[-1] + 1 - cols[0])
    assert zero.sum() == box[2] * box[3], "the erased pixels are not one rectangle"
    return tuple(int(v) for v in box)


def test_erased_rectangles_keep_the_anchors_area_and_aspect_up_to_whole_pixels_and_lie_inside():
    top, left, height, width = erase_boxes(1.0, 4000, SIZE, np.random.default_rng(5)).T
    area = 48 * 48
    assert height.min() >= 1 and width.min() >= 1  # p = 1: every image
    assert top.min() >= 0 and left.min() >= 0 and (top + height).max() <= 48 and (left + width).max() <= 48
    # each side is the exact one rounded to a whole pixel (or cut to the image's side)
    assert np.all((height - 0.5) * (width - 0.5) <= 0.33 * area + 1e-3)
    assert np.all((np.minimum(height + 0.5, 48) * np.minimum(width + 0.5, 48)) >= 0.02 * area - 1e-3)
    assert np.all((height - 0.5) / (width + 0.5) <= 3.3) and np.all((height + 0.5) / (width - 0.5) >= 0.3)
    fraction, aspect = height * width / area, height / width
    assert fraction.min() < 0.025 and fraction.max() > 0.31  # the whole range is drawn
    assert aspect.min() < 0.35 and aspect.max() > 3.0
    assert top.min() == 0 and left.min() == 0 and (top + height).max() == 48 and (left + width).max() == 48


def test_p_0_erases_nothing_and_p_1_one_rectangle_per_image_filled_with_0():
    x = np.full((64, 48, 48, 1), 100.0, "float32")
    none = erase_boxes(0.0, 64, SIZE, np.random.default_rng(1))
    assert not none[:, 2:].any()
    np.testing.assert_array_equal(x * erase_mask(none, SIZE), x)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(RandomErase(0.0, seed=1)(x, training=True)), x)
    boxes = erase_boxes(1.0, 64, SIZE, np.random.default_rng(1))
    erased = x * erase_mask(boxes, SIZE)
    assert [_zeroed_box(image) for image in erased] == [tuple(int(v) for v in box) for box in boxes]
    assert set(np.unique(erased)) == {0.0, 100.0}  # the rest untouched
    layer_erased = keras.ops.convert_to_numpy(RandomErase(0.999, seed=1)(x, training=True))
    assert all(_zeroed_box(image) is not None for image in layer_erased)


def test_about_p_of_the_images_are_erased_on_the_numpy_feed_after_the_rest_of_the_augmentation():
    cfg = TrainConfig(**{**AUGMENTATION_OFF, "width_shift": 0.1, "brightness": 0.1, "erasing": 0.5})
    x = np.full((1000, 48, 48, 1), 100.0, "float32")
    out = device_augmenter(cfg)(x, seed=3)
    boxes = [_zeroed_box(image) for image in out]  # one rectangle of 0 each, brightness or not
    assert abs(sum(box is not None for box in boxes) / len(boxes) - 0.5) < 0.05
    np.testing.assert_array_equal(device_augmenter(cfg)(x[:50], seed=3), device_augmenter(cfg)(x[:50], seed=3))


def test_numpy_and_the_keras_layer_erase_the_same_rectangles_from_the_same_uniforms():
    u = np.random.default_rng(6).random((ERASE_DRAWS, 500)).astype("float32")
    expected = erase_boxes_from_uniform(0.5, u, SIZE)
    got = erase_boxes_from_uniform(0.5, keras.ops.convert_to_tensor(u), SIZE, xp=keras.ops)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), expected)
    mask = keras.ops.convert_to_numpy(erase_mask(got, SIZE, xp=keras.ops))
    np.testing.assert_array_equal(mask, erase_mask(expected, SIZE))
    # the layer draws its uniforms from its seed and erases what NumPy erases from them
    x = _pixels(32) + 1.0
    drawn = keras.random.uniform((ERASE_DRAWS, 32), seed=keras.random.SeedGenerator(9))
    boxes = erase_boxes_from_uniform(0.5, keras.ops.convert_to_numpy(drawn), SIZE)
    layer_out = keras.ops.convert_to_numpy(RandomErase(0.5, seed=9)(x, training=True))
    np.testing.assert_array_equal(layer_out, x * erase_mask(boxes, SIZE).astype("float32"))


def test_the_erase_layer_comes_last_is_identity_at_inference_and_survives_save_and_load(tmp_path):
    cfg = TrainConfig(**{**TINY_COMPACT.to_dict(), "brightness": 0.1, "crop_scale": (0.9, 1.1), "erasing": 0.5})
    model = build_model(cfg)
    augmenting = [layer.name for layer in model.layers if layer.name.startswith("augment_")]
    assert augmenting == ["augment_affine", "augment_brightness", "augment_erase"]
    layer = model.get_layer("augment_erase")
    x = _pixels(8)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)
    model.save(tmp_path / "model.keras")
    loaded = load_model(tmp_path / "model.keras")
    again = loaded.get_layer("augment_erase")
    assert isinstance(again, RandomErase) and (again.p, again.seed) == (0.5, cfg.seed + 103)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_erasing_is_the_numpy_feeds_and_counts_as_augmentation_there():
    from fer_pipeline import feature_cache
    from fer_pipeline.feed_numpy import NumpyFeed

    cfg = TrainConfig(**{**TINY_COMPACT.to_dict(), **AUGMENTATION_OFF, "erasing": 0.5})
    assert NumpyFeed().model_config(cfg).erasing == 0.0  # the model gets no erase layer; the feed erases
    assert feature_cache.feed_augmenter(NumpyFeed(), cfg) is not None
    assert feature_cache.feed_augmenter(NumpyFeed(), dataclasses.replace(cfg, erasing=0.0)) is None
    with pytest.raises(ConfigError, match=r"erasing must be in \[0, 1\), got 1.0"):
        TrainConfig(erasing=1.0)
