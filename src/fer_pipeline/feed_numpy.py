"""A backend-neutral feed for the trainer: NumPy batches, each epoch's training images
augmented on the device in a few large calls. For Keras on JAX (the GPU machines have
no TensorFlow), where Keras' random augmentation layers hold a step to a fraction of the
card (docs/benchmarks.md); it runs on the TensorFlow backend too.

The model is built without its augmentation layers (they hold no weights), and
``device_augmenter`` draws the same flip, shift, rotation, zoom and random resized crop
ranges as those layers: one affine map per image (``fer_pipeline.augment.affine_rows``),
sampled bilinearly with the edge pixels repeated (Keras' "nearest" fill), then brightness
and random erasing (``fer_pipeline.augment.erase_boxes``, the model's ``RandomErase``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import keras
import numpy as np

from fer_pipeline import mixing
from fer_pipeline.augment import CROP_OFF, affine_rows, erase_boxes, erase_mask
from fer_pipeline.config import TrainConfig
from fer_pipeline.dataset import FerDataset
from fer_pipeline.precision import apply_precision
from fer_pipeline.training_data import PhaseData

logger = logging.getLogger(__name__)

AUGMENTATION_OFF = {
    "horizontal_flip": False,
    "width_shift": 0.0,
    "height_shift": 0.0,
    "rotation": 0.0,
    "zoom": 0.0,
    "brightness": 0.0,
    "crop_scale": CROP_OFF,
    "crop_ratio": CROP_OFF,
    "erasing": 0.0,
}
CHUNK = 8192  # images per device call


def device_augmenter(cfg: TrainConfig) -> Callable[[np.ndarray, int], np.ndarray]:
    """``augment(images, seed)``: ``cfg``'s augmentation of (N, H, W, 1) float32 images on the device."""

    def augment(images: np.ndarray, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        rows = affine_rows(cfg, len(images), images.shape[1:3], rng)
        # RandomBrightness: one offset per image, up to ``brightness`` of the 0-255 range, then clipped
        offsets = (rng.uniform(-1.0, 1.0, len(images)) * cfg.brightness * 255.0).astype("float32")
        boxes = erase_boxes(cfg.erasing, len(images), images.shape[1:3], rng) if cfg.erasing > 0 else None
        if not len(images):
            return images
        return np.concatenate(
            [
                _transform(
                    images[i : i + CHUNK],
                    rows[i : i + CHUNK],
                    offsets[i : i + CHUNK],
                    None if boxes is None else boxes[i : i + CHUNK],
                )
                for i in range(0, len(images), CHUNK)
            ]
        )

    return augment


def _transform(images: np.ndarray, rows: np.ndarray, offsets: np.ndarray, boxes: np.ndarray | None) -> np.ndarray:
    moved = keras.ops.image.affine_transform(images, rows, interpolation="bilinear", fill_mode="nearest")
    moved = keras.ops.clip(moved + offsets[:, None, None, None], 0.0, 255.0)
    if boxes is not None:  # erasing last, as the model's layers: the rectangle stays 0
        moved = moved * keras.ops.cast(erase_mask(boxes, images.shape[1:3], xp=keras.ops), moved.dtype)
    return keras.ops.convert_to_numpy(moved)


class AugmentedEpochs(keras.utils.PyDataset):
    """Training batches of a freshly shuffled, augmented copy of the images each epoch;
    with ``mix`` (``mixing.mixer``) each batch is mixed, its draws seeded by seed, epoch and index."""

    def __init__(self, x, y, weights, batch_size: int, augment, seed: int, mix=None):
        super().__init__()
        self.mix = mix
        self.x, self.y, self.weights, self.batch_size, self.augment, self.seed = (
            x,
            y,
            weights,
            batch_size,
            augment,
            seed,
        )
        self.epoch = 0
        self._prepare()

    def _prepare(self) -> None:
        order = np.random.default_rng(self.seed + self.epoch).permutation(len(self.y))
        self.x_epoch = self.augment(self.x[order], self.seed + self.epoch) if self.augment else self.x[order]
        self.y_epoch = self.y[order]
        self.w_epoch = None if self.weights is None else self.weights[order]

    def __len__(self) -> int:
        return -(-len(self.y) // self.batch_size)

    def __getitem__(self, index: int):
        batch = slice(index * self.batch_size, (index + 1) * self.batch_size)
        x, y = self.x_epoch[batch], self.y_epoch[batch]
        w = None if self.w_epoch is None else self.w_epoch[batch]
        if self.mix is not None:
            x, y, w = self.mix(x, y, w, np.random.default_rng((self.seed, self.epoch, index)))
        return (x, y) if w is None else (x, y, w)

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._prepare()


def _images(dataset: FerDataset, indices: np.ndarray) -> np.ndarray:
    images = dataset.images[indices].astype("float32")
    return images[..., np.newaxis] if images.ndim == 3 else images


class NumpyFeed:
    """In-memory batches for any backend; augmentation on the device, once per epoch."""

    def prepare(self, cfg: TrainConfig) -> tuple[AbstractContextManager[Any], int]:
        apply_precision(cfg)
        if cfg.jit_compile:
            logger.info("jit_compile: Keras compiles the whole step on %s by itself.", keras.backend.backend())
        return contextlib.nullcontext(), 1

    def model_config(self, cfg: TrainConfig) -> TrainConfig:
        return dataclasses.replace(cfg, **AUGMENTATION_OFF)  # same weights; augmentation is the feed's

    def batches(
        self, dataset: FerDataset, data: PhaseData, cfg: TrainConfig, batch_size: int, augment: keras.Model | None
    ) -> tuple[AugmentedEpochs, tuple[np.ndarray, np.ndarray]]:
        augmenter = None if _augmentation_off(cfg) else device_augmenter(cfg)
        train = AugmentedEpochs(
            _images(dataset, data.train_indices),
            dataset.labels[data.train_indices].astype("int32"),
            data.train_sample_weights,
            batch_size,
            augmenter,
            cfg.seed,
            mix=mixing.mixer(cfg),
        )
        val = (_images(dataset, data.val_indices), dataset.labels[data.val_indices].astype("int32"))
        return train, val

    def callbacks(self, out_dir: Path, phase: str, first_step: int, validation: Any) -> list[keras.callbacks.Callback]:
        return []  # TensorBoard summaries are the TensorFlow feed's; history.json has every value


def _augmentation_off(cfg: TrainConfig) -> bool:
    return all(getattr(cfg, name) == off for name, off in AUGMENTATION_OFF.items())
