"""One affine map per training image: mirror, shift, rotation, zoom and the random resized
crop composed into a single bilinear resampling.

Every bilinear resampling at a fractional offset blurs, so a chain of Keras layers (one
resampling each) trains the network on softer faces than the test images
(docs/model-quality.md; ``bench/augment_sharpness.py`` measures it). Both feeds draw
their maps through ``rows_from_uniform``, one definition of the augmentation:

- the NumPy feed (``fer_pipeline.feed_numpy``) with NumPy draws, ``affine_rows``;
- the tf.data feed with the model's ``RandomAffine`` layer and Keras' random ops,
  which ``model._augment`` uses in place of the layer chain when the crop is on.

A row ``[a0, a1, a2, b0, b1, b2, 0, 0]`` maps each output pixel ``(x, y)`` to the input
point it reads (``keras.ops.image.affine_transform``); edges repeat (Keras' "nearest").

Random erasing (``TrainConfig.erasing``) is defined here too, the same way: one
rectangle per image from uniforms (``erase_boxes_from_uniform``, NumPy or ``keras.ops``),
set to 0 by a mask multiply (``erase_mask``): ``erase_boxes`` for the NumPy feed, the
``RandomErase`` layer on the tf.data path.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import layers

CROP_OFF = (1.0, 1.0)  # crop_scale and crop_ratio: the whole image, square
DRAWS = 5  # uniforms per image: mirror, shift x, shift y, angle, zoom
CROP_DRAWS = 4  # and with the crop: side, aspect, its position x and y
# Random erasing as torchvision's RandomErasing defaults, which the FER anchors use:
ERASE_AREA = (0.02, 0.33)  # the rectangle's area, fraction of the image's
ERASE_ASPECT = (0.3, 3.3)  # its aspect (height / width), log-uniform
ERASE_DRAWS = 5  # uniforms per image: whether, area, aspect, top, left


@dataclass(frozen=True)
class AffineRanges:
    """The ``TrainConfig`` fields the affine map is drawn from (units as there)."""

    horizontal_flip: bool = False
    width_shift: float = 0.0
    height_shift: float = 0.0
    rotation: float = 0.0
    zoom: float = 0.0
    crop_scale: tuple[float, float] = CROP_OFF
    crop_ratio: tuple[float, float] = CROP_OFF

    @classmethod
    def of(cls, cfg: Any) -> AffineRanges:
        """The ranges of ``cfg`` (a ``TrainConfig``)."""
        return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)})

    @property
    def crops(self) -> bool:
        """Whether the random resized crop is on."""
        return crop_on(self)

    @property
    def draws(self) -> int:
        """Uniforms drawn per image."""
        return DRAWS + (CROP_DRAWS if self.crops else 0)


def crop_on(cfg: Any) -> bool:
    """Whether ``cfg`` (a ``TrainConfig`` or ``AffineRanges``) has the random resized crop on."""
    return tuple(cfg.crop_scale) != CROP_OFF or tuple(cfg.crop_ratio) != CROP_OFF


def tta_crops_mismatch(cfg: Any) -> str | None:
    """Why ``cfg``'s ten-crop test views (``tta_crops``) will not match its training images,
    or None: crop views zoom in where the random resized crop never did. On the CPU sweep's
    base model (crop_scale off), ten crop views of side 0.8 scored 0.629 validation accuracy
    against 0.675 for ten shifted views (docs/model-quality.md, "On two CPU cores")."""
    if not cfg.tta or not cfg.tta_crops or crop_on(cfg):
        return None
    return (
        f"tta_crops={cfg.tta_crops} with crop_scale off: the test views are crops the model never trained on "
        "(on the sweep's base model they cost 0.046 validation accuracy); set crop_scale too, or use tta_shift."
    )


def compose_rows(size: tuple[int, int], *, flip, shift_x, shift_y, angle, scale_x, scale_y, xp: Any = np):
    """Affine rows reading, for each output pixel, the input point that: about the image
    centre, scales by ``scale_x`` / ``scale_y`` (the side of what is read, relative to the
    image), rotates by ``angle`` radians, moves the content ``shift_x`` / ``shift_y``
    pixels right / down, and mirrors where ``flip``. ``xp``: ``numpy`` or ``keras.ops``."""
    h, w = size
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    cos, sin = xp.cos(angle), xp.sin(angle)
    a0, a1 = cos * scale_x, sin * scale_y
    b0, b1 = -(sin * scale_x), cos * scale_y
    a2 = cx - shift_x - a0 * cx - a1 * cy
    b2 = cy - shift_y - b0 * cx - b1 * cy
    # mirrored: the output's column x reads what column (w - 1) - x would have read
    a0, a1, a2 = xp.where(flip, -a0, a0), xp.where(flip, -a1, a1), xp.where(flip, (w - 1) - a2, a2)
    zeros = xp.zeros_like(a0)
    return xp.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def rows_from_uniform(ranges: AffineRanges, u, size: tuple[int, int], xp: Any = np):
    """One random affine row per image from ``u``, ``(ranges.draws, n)`` uniforms in [0, 1):
    mirror with probability 1/2 when ``horizontal_flip``; shift by up to ``width_shift`` /
    ``height_shift`` of the side; rotate by up to ``rotation`` of a turn; scale by 1 +-
    ``zoom``; and with the crop on, read a crop whose side is drawn from ``crop_scale`` (of
    the image's side) and aspect (width / height) log-uniformly from ``crop_ratio``, placed
    at random inside the image (or, larger than it, holding it), resized to the input."""
    h, w = size
    flip = u[0] < (0.5 if ranges.horizontal_flip else 0.0)
    shift_x = (-1.0 + 2.0 * u[1]) * ranges.width_shift * w
    shift_y = (-1.0 + 2.0 * u[2]) * ranges.height_shift * h
    angle = (-1.0 + 2.0 * u[3]) * ranges.rotation * 2 * np.pi
    scale_x = scale_y = 1.0 + (-1.0 + 2.0 * u[4]) * ranges.zoom
    if ranges.crops:
        (low, high), (ratio_low, ratio_high) = ranges.crop_scale, ranges.crop_ratio
        side = low + (high - low) * u[5]
        aspect = xp.sqrt(xp.exp(math.log(ratio_low) + (math.log(ratio_high) - math.log(ratio_low)) * u[6]))
        crop_x, crop_y = side * aspect, side / aspect
        # the crop's centre moves up to half the room between its edges and the image's
        shift_x = shift_x + (-1.0 + 2.0 * u[7]) * xp.abs(1.0 - crop_x) * (w - 1) / 2.0
        shift_y = shift_y + (-1.0 + 2.0 * u[8]) * xp.abs(1.0 - crop_y) * (h - 1) / 2.0
        scale_x, scale_y = scale_x * crop_x, scale_y * crop_y
    return compose_rows(
        size, flip=flip, shift_x=shift_x, shift_y=shift_y, angle=angle, scale_x=scale_x, scale_y=scale_y, xp=xp
    )


def affine_rows(cfg: Any, n: int, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """``n`` random affine rows (float32) for ``cfg``'s ranges, drawn from ``rng``."""
    ranges = AffineRanges.of(cfg)
    return rows_from_uniform(ranges, rng.random((ranges.draws, n)), size).astype("float32")


def crop_rows(side: float, corner: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """The row (float32, (8,)) reading a square crop of ``side`` (of the image's side),
    resized to the input: ``corner`` (row, column), each -1, 0 or 1, puts it at the
    top/left edge, the centre or the bottom/right edge, where the training crop's
    position range ends."""
    h, w = size
    room_y, room_x = abs(1.0 - side) * (h - 1) / 2.0, abs(1.0 - side) * (w - 1) / 2.0
    row = compose_rows(
        size,
        flip=np.array([False]),
        shift_x=np.array([-corner[1] * room_x]),
        shift_y=np.array([-corner[0] * room_y]),
        angle=np.zeros(1),
        scale_x=np.array([side]),
        scale_y=np.array([side]),
    )
    return row[0].astype("float32")


def erase_boxes_from_uniform(p: float, u, size: tuple[int, int], xp: Any = np):
    """One rectangle per image from ``u``, ``(ERASE_DRAWS, n)`` uniforms in [0, 1), as rows
    ``[top, left, height, width]`` in whole pixels: with probability ``p`` (else height and
    width 0, nothing erased), an area of ``ERASE_AREA`` of the image's and an aspect
    (height / width) log-uniform in ``ERASE_ASPECT``, sides rounded as torchvision's and
    cut to the image's (torchvision redraws instead; only the largest, most elongated
    draws reach the side), placed uniformly inside the image. ``xp``: ``numpy`` or ``keras.ops``."""
    h, w = size
    area = (ERASE_AREA[0] + (ERASE_AREA[1] - ERASE_AREA[0]) * u[1]) * (h * w)
    log_low, log_high = math.log(ERASE_ASPECT[0]), math.log(ERASE_ASPECT[1])
    aspect = xp.exp(log_low + (log_high - log_low) * u[2])
    erased = u[0] < p
    height = xp.where(erased, xp.clip(xp.round(xp.sqrt(area * aspect)), 1.0, h), 0.0)
    width = xp.where(erased, xp.clip(xp.round(xp.sqrt(area / aspect)), 1.0, w), 0.0)
    top = xp.minimum(xp.floor(u[3] * (h - height + 1.0)), h - height)  # as torch.randint(0, h - height + 1)
    left = xp.minimum(xp.floor(u[4] * (w - width + 1.0)), w - width)
    return xp.stack([top, left, height, width], axis=1)


def erase_boxes(p: float, n: int, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """``n`` random erasing rectangles (float32, (n, 4)) with probability ``p``, drawn from ``rng``."""
    return erase_boxes_from_uniform(p, rng.random((ERASE_DRAWS, n)), size).astype("float32")


def erase_mask(boxes, size: tuple[int, int], xp: Any = np):
    """(n, h, w, 1): 0 inside each image's rectangle of ``boxes`` (``erase_boxes_from_uniform``),
    1 elsewhere; images times it have their rectangle filled with 0 (black on raw pixels)."""
    h, w = size
    top, left, height, width = (xp.reshape(boxes[:, i], (-1, 1, 1, 1)) for i in range(4))
    rows = xp.reshape(xp.arange(h, dtype="float32"), (1, h, 1, 1))
    cols = xp.reshape(xp.arange(w, dtype="float32"), (1, 1, w, 1))
    inside = xp.logical_and(
        xp.logical_and(rows >= top, rows < top + height), xp.logical_and(cols >= left, cols < left + width)
    )
    return xp.where(inside, 0.0, 1.0)


@keras.saving.register_keras_serializable(package="fer_pipeline")
class RandomAffine(layers.Layer):
    """In training, each image through one random affine map of ``ranges`` (an
    ``AffineRanges`` or its dict), sampled bilinearly once; the identity at inference."""

    def __init__(self, ranges: AffineRanges | dict | None = None, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        values = dataclasses.asdict(ranges) if isinstance(ranges, AffineRanges) else dict(ranges or {})
        for name in ("crop_scale", "crop_ratio"):  # a saved config brings them back as lists
            if name in values:
                values[name] = tuple(values[name])
        self.ranges = AffineRanges(**values)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_jit = False  # as Keras' RandomTranslation: no XLA kernel for the resampling on TensorFlow

    def call(self, inputs, training=None):
        if not training:
            return inputs
        u = keras.random.uniform((self.ranges.draws, keras.ops.shape(inputs)[0]), seed=self.seed_generator)
        rows = rows_from_uniform(self.ranges, u, tuple(inputs.shape[1:3]), xp=keras.ops)
        return keras.ops.image.affine_transform(inputs, rows, interpolation="bilinear", fill_mode="nearest")

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "ranges": dataclasses.asdict(self.ranges), "seed": self.seed}


@keras.saving.register_keras_serializable(package="fer_pipeline")
class ResizedCrop(layers.Layer):
    """A fixed square crop of ``side`` (of the image's side) at ``corner`` (``crop_rows``),
    resized to the input side: a view of crop test-time augmentation."""

    def __init__(self, side: float = 1.0, corner: tuple[int, int] = (0, 0), **kwargs):
        super().__init__(**kwargs)
        self.side, self.corner = float(side), (int(corner[0]), int(corner[1]))

    def call(self, inputs):
        row = crop_rows(self.side, self.corner, tuple(inputs.shape[1:3]))
        rows = keras.ops.broadcast_to(row, (keras.ops.shape(inputs)[0], row.shape[0]))  # JAX takes no single row
        return keras.ops.image.affine_transform(inputs, rows, interpolation="bilinear", fill_mode="nearest")

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "side": self.side, "corner": list(self.corner)}


@keras.saving.register_keras_serializable(package="fer_pipeline")
class RandomErase(layers.Layer):
    """In training, with probability ``p`` per image, one random rectangle
    (``erase_boxes_from_uniform``) filled with 0; the identity at inference."""

    def __init__(self, p: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.p, self.seed = float(p), seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training:
            return inputs
        size = tuple(inputs.shape[1:3])
        u = keras.random.uniform((ERASE_DRAWS, keras.ops.shape(inputs)[0]), seed=self.seed_generator)
        mask = erase_mask(erase_boxes_from_uniform(self.p, u, size, xp=keras.ops), size, xp=keras.ops)
        return inputs * keras.ops.cast(mask, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "p": self.p, "seed": self.seed}


__all__ = [
    "AffineRanges",
    "RandomAffine",
    "RandomErase",
    "ResizedCrop",
    "affine_rows",
    "compose_rows",
    "crop_on",
    "crop_rows",
    "erase_boxes",
    "erase_boxes_from_uniform",
    "erase_mask",
    "rows_from_uniform",
]
