"""The TensorFlow backend's feed for the trainer: devices and distribution strategy
(tf.distribute), tf.data batches, TensorBoard summaries, op determinism."""

from __future__ import annotations

import json
import logging
import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from fer_pipeline.config import TrainConfig
from fer_pipeline.dataset import FerDataset
from fer_pipeline.mixing import mixer
from fer_pipeline.precision import apply_precision
from fer_pipeline.tensorboard import EpochSummaries, log_dir
from fer_pipeline.tf_data import make_dataset
from fer_pipeline.training_data import PhaseData

logger = logging.getLogger(__name__)


class TfDataFeed:
    """tf.data over the in-memory images; the model's own layers augment (or, with XLA,
    its augmentation stage runs in the input pipeline: ``trainer.compile_model``).

    ``one_training_iterator``: the training batches repeat without end, so one iterator
    serves the whole phase and ``fit`` ends epochs by steps. False gives each epoch its
    own iterator, which left one of two cores idle in about half the epochs on the 2-core
    machines (``bench/epoch_iterators.py`` compares the two).
    """

    def __init__(self, one_training_iterator: bool = True):
        self.one_training_iterator = one_training_iterator

    def prepare(self, cfg: TrainConfig) -> tuple[AbstractContextManager[Any], int]:
        if cfg.deterministic:  # process-wide and irreversible; docs/reliability.md
            tf.config.experimental.enable_op_determinism()
        strategy = configure_devices(cfg)
        return strategy.scope(), strategy.num_replicas_in_sync

    def model_config(self, cfg: TrainConfig) -> TrainConfig:
        return cfg

    def batches(
        self, dataset: FerDataset, data: PhaseData, cfg: TrainConfig, batch_size: int, augment: keras.Model | None
    ) -> tuple[tf.data.Dataset, tf.data.Dataset]:
        train = make_dataset(
            dataset.images[data.train_indices],
            dataset.labels[data.train_indices],
            batch_size,
            shuffle=True,
            seed=cfg.seed,
            sample_weights=data.train_sample_weights,
            augment=_input_stage(augment, training=True),
            mix=mixer(cfg),  # None unless cfg.mix; validation is never mixed
            repeat=self.one_training_iterator,
        )
        val = make_dataset(
            dataset.images[data.val_indices],
            dataset.labels[data.val_indices],
            batch_size,
            shuffle=False,
            seed=cfg.seed,
            augment=_input_stage(augment, training=False),
        )
        return train, val

    def callbacks(self, out_dir: Path, phase: str, first_step: int, validation: Any) -> list[keras.callbacks.Callback]:
        # after LearningRateHistory (the trainer's own callbacks come first), so it sees the rate
        return [EpochSummaries(log_dir(out_dir), phase=phase, first_step=first_step, validation=validation)]


def _input_stage(augment: keras.Model | None, training: bool):
    """``augment`` (``CompiledModel.augment``) as a batch function for ``make_dataset``:
    training mode for training batches, inference mode for validation (None stays None)."""
    if augment is None:
        return None
    return lambda images: augment(images, training=training)


def configure_devices(cfg: TrainConfig) -> tf.distribute.Strategy:
    """Set the Keras dtype policy and pick a distribution strategy for the visible GPUs.

    Args:
        cfg: Uses ``precision`` (and the deprecated ``mixed_precision``).

    Returns:
        MirroredStrategy over all GPUs when there are several, else the default
        strategy. Sets the global policy ``precision.apply_precision`` chooses.
    """
    gpus = tf.config.list_physical_devices("GPU")
    policy = apply_precision(cfg)
    if is_multi_worker():  # a Vertex custom job with several replicas sets TF_CONFIG
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    logger.info(
        "Devices: %d GPU(s), dtype policy %s, %s with %d replica(s).",
        len(gpus),
        policy,
        type(strategy).__name__,
        strategy.num_replicas_in_sync,
    )
    return strategy


def is_multi_worker() -> bool:
    """True when TF_CONFIG (set by Vertex AI on each replica of a multi-replica custom
    job) describes a cluster of more than one training task."""
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    return sum(len(tasks) for role, tasks in cluster.items() if role != "evaluator") > 1
