"""Frozen-phase feature cache (``TrainConfig.frozen_feature_cache``): in phase 1 the
DenseNet169 backbone is frozen and runs in inference mode, so its output for a given
input image never changes while the head trains. This module computes it once per
image and view, and phase 1 then trains only the head on the stored features.

Semantics of ``frozen_feature_cache = N``:

- ``0`` (the default): off. Every epoch runs each training image, freshly augmented,
  through the whole model, and validation through the whole model: the seed's recipe.
- ``N >= 1``: before the first epoch, N augmented views of every training image are
  drawn (the model's own augmentation layers in training mode, or on the NumPy feed
  the feed's device augmentation, so the same distribution as without the cache) and
  the backbone's pooled features of each are stored; epoch ``e`` (0-based) trains the
  head on view ``e mod N`` of every image, reshuffled each epoch, with the head's
  dropout drawn afresh. Validation features are computed once (no augmentation).
  ``N = 1`` is "augment the training set once": every epoch sees the same view.
  ``N >= frozen_epochs`` gives every epoch views of its own, as the seed does (the same
  distribution, other random draws); it saves only the validation passes. Each view
  costs one backbone pass over the training images, so the cache saves
  ``frozen_epochs - N`` of them, and ``frozen_epochs - 1`` validation passes.

Exact: the head's outputs on the cached features equal the full model's outputs on the
same views (tests/test_feature_cache.py), because the backbone is frozen (its
BatchNorm layers then run in inference mode, ``model._densenet169_features``) and
everything between the input and the pooled features holds no trainable weight. Where
that does not hold, the cache is not used and the log says why: the compact backbone
trains whole in phase 1, and phase 2 unfreezes the backbone.

The head model is built from the full model's own layers (pooling output -> Dense ->
Dropout -> ... -> predictions), so the two share weights and the phase saves the full
``model.keras`` with the trained head. Stored features are float32 (a bfloat16 policy's
features convert exactly), one pooled vector per image and view: 1,664 floats for
DenseNet169 with ``avg`` pooling at 48 px, about 190 MB per view of the full train split.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import keras
import numpy as np

from fer_pipeline.config import TrainConfig
from fer_pipeline.dataset import FerDataset
from fer_pipeline.model import BACKBONE_NAME
from fer_pipeline.training_data import PhaseData

logger = logging.getLogger(__name__)

POOLING_LAYERS = ("global_pool", "flatten")  # model.build_model's names for the head's first layer
AUGMENT_PREFIX = "augment_"  # model._augment's layer names
PREDICT_BATCH = 256


def refusal(cfg: TrainConfig, model: keras.Model, phase: str) -> str | None:
    """Why the cache cannot be used for this phase and model (None: it can)."""
    if phase != "frozen":
        return f"phase {phase} trains the backbone; the cache is for phase 1 (frozen) only"
    if cfg.backbone != "densenet169":
        return f"the {cfg.backbone} backbone trains whole in phase 1, so its features change every step"
    if cfg.mix != "none":
        return f"mix={cfg.mix} mixes the images of each batch, which stored features of whole images cannot"
    try:
        backbone = model.get_layer(BACKBONE_NAME)
    except ValueError:
        return "the model has no backbone layer"
    if backbone.trainable or any(layer.trainable_weights for layer in model.layers[: _pool_index(model)]):
        return "a layer before the head is trainable"
    return None


@dataclass
class FeatureCache:
    """Phase 1's head model and how to feed it cached features."""

    views: int
    head: keras.Model  # pooled features -> predictions, the full model's own layers (shared weights)
    augment_stage: keras.Model | None  # pixels -> the last augmentation layer's output; None without one
    backbone_stage: keras.Model  # that output (or the pixels) -> pooled features
    eager: bool = False  # compute features without tf.function (cfg.run_eagerly)

    def batches(self, dataset: FerDataset, data: PhaseData, cfg: TrainConfig, batch_size: int, feed_augments):
        """Training batches (``CachedViews``) and validation batches of cached features.

        ``feed_augments``: ``augment(images, seed)`` when the feed augments (the model has
        no augmentation layers), else None.
        """
        start = time.monotonic()
        train_images = _images(dataset, data.train_indices)
        views = [
            self.features(train_images, view=v, seed=cfg.seed, feed_augments=feed_augments) for v in range(self.views)
        ]
        val = self.features(_images(dataset, data.val_indices), view=None)
        logger.info(
            "Feature cache: %d view(s) of %d training images and %d validation images through the frozen "
            "backbone in %.1f s (%d floats per image); training the head only.",
            self.views,
            len(train_images),
            len(val),
            time.monotonic() - start,
            val.shape[1] if val.ndim > 1 else 0,
        )
        labels = dataset.labels
        train = CachedViews(
            views, labels[data.train_indices].astype("int32"), data.train_sample_weights, batch_size, cfg.seed
        )
        val_labels = labels[data.val_indices].astype("int32")
        return train, CachedBatches(val, val_labels, batch_size)

    def features(self, images: np.ndarray, view: int | None, seed: int = 0, feed_augments=None) -> np.ndarray:
        """Pooled backbone features of ``images`` (float32 pixels, (N, 48, 48, 1)).

        ``view`` None: no augmentation (validation). Else one augmented view: the model's
        augmentation layers in training mode, or ``feed_augments(images, seed + 1000 * (view + 1))``.
        """
        stage, rest = self.augment_stage, self.backbone_stage
        if view is not None and feed_augments is not None:
            images = feed_augments(images, seed + 1000 * (view + 1))
        if view is not None and stage is not None:
            images = np.concatenate(
                [
                    keras.ops.convert_to_numpy(stage(images[i : i + PREDICT_BATCH], training=True))
                    for i in range(0, len(images), PREDICT_BATCH)
                ]
            )
        if self.eager:  # run_eagerly: no tracing of the backbone (tiny test runs)
            parts = [rest(images[i : i + PREDICT_BATCH], training=False) for i in range(0, len(images), PREDICT_BATCH)]
            return np.concatenate([keras.ops.convert_to_numpy(p) for p in parts]).astype("float32")
        return np.asarray(rest.predict(images, batch_size=PREDICT_BATCH, verbose=0), dtype="float32")


def plan(cfg: TrainConfig, model: keras.Model, phase: str) -> FeatureCache | None:
    """The phase's feature cache, or None (off, or not exact here: logged with the reason)."""
    if cfg.frozen_feature_cache <= 0:
        return None
    reason = refusal(cfg, model, phase)
    if reason is not None:
        if phase == "frozen":  # phase 2 never uses it: no need to say so each run
            logger.warning("frozen_feature_cache=%d ignored: %s.", cfg.frozen_feature_cache, reason)
        return None
    stages = _split_at_augmentation(model)
    return FeatureCache(cfg.frozen_feature_cache, head_model(model), *stages, eager=cfg.run_eagerly)


def feed_augmenter(feed, cfg: TrainConfig):
    """``augment(images, seed)`` of a feed that augments itself (its model has no augmentation
    layers: ``feed_numpy``), or None when the model's own layers augment (or nothing does)."""
    if feed.model_config(cfg) == cfg:
        return None
    from fer_pipeline.feed_numpy import AUGMENTATION_OFF, device_augmenter

    if all(getattr(cfg, name) == off for name, off in AUGMENTATION_OFF.items()):  # erasing included
        return None
    return device_augmenter(cfg)


def head_model(model: keras.Model) -> keras.Model:
    """The layers after the pooling layer, as a model from pooled features to predictions
    (the same layer objects, so the same weights)."""
    index = _pool_index(model)
    pooled = model.layers[index].output
    inputs = keras.Input(tuple(pooled.shape[1:]), name="features")
    x = inputs
    for layer in model.layers[index + 1 :]:
        x = layer(x)
    return keras.Model(inputs, x, name=f"{model.name}_head")


def feature_model(model: keras.Model) -> keras.Model:
    """Raw pixels to pooled features (augmentation layers included, active only in training mode)."""
    return keras.Model(model.inputs[0], model.layers[_pool_index(model)].output, name=f"{model.name}_features")


def _pool_index(model: keras.Model) -> int:
    for i, layer in enumerate(model.layers):
        if layer.name in POOLING_LAYERS:
            return i
    raise ValueError(f"model {model.name} has no pooling layer ({', '.join(POOLING_LAYERS)})")


def _split_at_augmentation(model: keras.Model) -> tuple[keras.Model | None, keras.Model]:
    """(pixels -> last augmentation layer's output, or None without augmentation layers;
    that output (or the pixels) -> pooled features)."""
    pooled = model.layers[_pool_index(model)].output
    augment = [layer for layer in model.layers if layer.name.startswith(AUGMENT_PREFIX)]
    if not augment:
        return None, keras.Model(model.inputs[0], pooled)
    cut = augment[-1].output
    return keras.Model(model.inputs[0], cut), keras.Model(cut, pooled)


def _images(dataset: FerDataset, indices: np.ndarray) -> np.ndarray:
    images = dataset.images[indices].astype("float32")
    return images[..., np.newaxis] if images.ndim == 3 else images


class CachedViews(keras.utils.PyDataset):
    """Training batches of cached features: epoch e reads view e mod N, reshuffled."""

    def __init__(self, views: list[np.ndarray], labels: np.ndarray, weights, batch_size: int, seed: int):
        super().__init__()
        self.views, self.labels, self.weights, self.batch_size, self.seed = views, labels, weights, batch_size, seed
        self.epoch = 0
        self._prepare()

    def _prepare(self) -> None:
        self.order = np.random.default_rng(self.seed + self.epoch).permutation(len(self.labels))
        self.x = self.views[self.epoch % len(self.views)][self.order]

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __getitem__(self, index: int):
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        x = self.x[index * self.batch_size : (index + 1) * self.batch_size]
        if self.weights is None:
            return x, self.labels[rows]
        return x, self.labels[rows], self.weights[rows]

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._prepare()


class CachedBatches(keras.utils.PyDataset):
    """Validation batches of cached features, in order; iterable (TensorBoard's confusion matrix)."""

    def __init__(self, x: np.ndarray, labels: np.ndarray, batch_size: int):
        super().__init__()
        self.x, self.labels, self.batch_size = x, labels, batch_size

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(index)
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.x[rows], self.labels[rows]
