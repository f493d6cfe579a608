"""Optimizer, loss, accuracy metric and learning-rate schedule of the training phases.

Keras only (no TensorFlow), like ``model``, so bench/gpu.py can train with the same
optimizer, loss and schedule under the JAX backend.

Targets are integer class ids, or with ``TrainConfig.mix`` (``fer_pipeline.mixing``)
each training batch's soft targets: one row of class probabilities per image,
lambda on the image's label and 1 - lambda on its partner's. Validation batches keep
integer ids, so the loss and accuracy take either, told apart by shape.
"""

from __future__ import annotations

import keras

from fer_pipeline.config import TrainConfig


@keras.saving.register_keras_serializable(package="fer_pipeline")
class SparseCrossentropy(keras.losses.Loss):
    """Cross-entropy on integer labels with optional label smoothing.

    Keras' SparseCategoricalCrossentropy has no label smoothing, and one-hot labels
    would change the dataset and the accuracy metric; this one-hots inside the loss.
    """

    def __init__(self, label_smoothing: float = 0.0, name: str = "sparse_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        if is_soft(y_true, y_pred):  # mixed targets: cross-entropy is linear in them, smoothing too
            targets = keras.ops.cast(y_true, y_pred.dtype)
            return keras.losses.categorical_crossentropy(targets, y_pred, label_smoothing=self.label_smoothing)
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        if not self.label_smoothing:
            return keras.losses.sparse_categorical_crossentropy(labels, y_pred)
        targets = keras.ops.one_hot(labels, keras.ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(targets, y_pred, label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def is_soft(y_true, y_pred) -> bool:
    """Whether ``y_true`` holds a row of class probabilities per image (mixed targets)
    rather than class ids; decided on static shapes, so once per traced step."""
    return len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == y_pred.shape[-1] != 1


def _accuracy(y_true, y_pred):
    if is_soft(y_true, y_pred):  # a mixed image counts as its larger share's label
        return keras.metrics.categorical_accuracy(y_true, y_pred)
    return keras.metrics.sparse_categorical_accuracy(y_true, y_pred)


@keras.saving.register_keras_serializable(package="fer_pipeline")
class Accuracy(keras.metrics.MeanMetricWrapper):
    """Keras' "accuracy" on class ids, and on soft targets the share of images whose
    top prediction is the target's largest class. Used with ``mix`` only (the default
    compiles Keras' own "accuracy"); named "accuracy" so the history's keys stay."""

    def __init__(self, name: str = "accuracy", dtype=None):
        super().__init__(fn=_accuracy, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


def metrics_for(cfg: TrainConfig) -> list:
    """The phases' metrics: Keras' accuracy, or ``Accuracy`` when training batches carry mixed targets."""
    return [Accuracy()] if cfg.mix != "none" else ["accuracy"]


SGD_MOMENTUM = 0.9  # Nesterov; the VGG anchor's (issue 24)


def make_optimizer(cfg: TrainConfig, learning_rate) -> keras.optimizers.Optimizer:
    """The phase's optimizer (``cfg.optimizer``) at ``learning_rate`` (a rate or a schedule).

    ``adam`` is the seed's ``Adam(learning_rate)``, with no weight decay. ``adamw`` and
    ``sgd`` decay weights as Keras 3 does for every optimizer, decoupled from the
    gradient: before each step every trainable variable (biases and BatchNorm scales
    too) is multiplied by ``1 - learning_rate * cfg.weight_decay``. The decay therefore
    follows the schedule and bypasses SGD's momentum.
    """
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(
            learning_rate=learning_rate, momentum=SGD_MOMENTUM, nesterov=True, weight_decay=cfg.weight_decay or None
        )
    if cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=cfg.weight_decay)
    return keras.optimizers.Adam(learning_rate=learning_rate)


def learning_rate_for(cfg: TrainConfig, rate: float, epochs: int, steps_per_epoch: int):
    """The phase's learning rate: ``rate`` (with ReduceLROnPlateau), or cosine decay from ``rate``
    to 0 over ``epochs`` epochs of ``steps_per_epoch`` steps (``cfg.schedule`` "cosine"). With a
    time budget the cosine steps by epoch instead (fer_pipeline.time_budget): ``rate`` to start."""
    if cfg.schedule != "cosine" or epochs < 1 or cfg.time_budget_minutes:
        return rate
    return keras.optimizers.schedules.CosineDecay(rate, decay_steps=max(1, epochs * steps_per_epoch))
