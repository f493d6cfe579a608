"""Loss and learning-rate schedule of the training phases.

Keras only (no TensorFlow), like ``model``, so bench/gpu.py can train with the same
loss and schedule under the JAX backend.
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
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        if not self.label_smoothing:
            return keras.losses.sparse_categorical_crossentropy(labels, y_pred)
        targets = keras.ops.one_hot(labels, keras.ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(targets, y_pred, label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def learning_rate_for(cfg: TrainConfig, rate: float, epochs: int, steps_per_epoch: int):
    """The phase's learning rate: ``rate`` (with ReduceLROnPlateau), or cosine decay from ``rate``
    to 0 over ``epochs`` epochs of ``steps_per_epoch`` steps (``cfg.schedule`` "cosine")."""
    if cfg.schedule != "cosine" or epochs < 1:
        return rate
    return keras.optimizers.schedules.CosineDecay(rate, decay_steps=max(1, epochs * steps_per_epoch))
