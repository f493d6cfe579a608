"""The two training phases: the head on a frozen backbone, then fine-tuning.

Each phase reads the canonical dataset and the split, writes ``model.keras`` and
``history.json`` to its own directory, and returns a ``PhaseResult``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from fer_pipeline.checkpoint import PhaseBackup
from fer_pipeline.classes import NUM_CLASSES
from fer_pipeline.config import TrainConfig
from fer_pipeline.data import make_dataset
from fer_pipeline.dataset import FerDataset
from fer_pipeline.model import build_model, load_model, tta_offsets, unfreeze_backbone, with_flip_tta
from fer_pipeline.optim import SparseCrossentropy, learning_rate_for
from fer_pipeline.split import Split
from fer_pipeline.tensorboard import EpochSummaries, epochs_before, log_dir

logger = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
HISTORY_FILE = "history.json"


@dataclass
class PhaseResult:
    """What one training phase produced."""

    model: keras.Model
    history: dict[str, list[float]]  # Keras history per epoch, plus "learning_rate"
    epochs_run: int
    best_epoch: int  # 1-based epoch with the lowest val_loss (its weights are kept); 0 if none ran
    seconds: float  # wall-clock seconds spent in fit
    model_path: Path


@dataclass(frozen=True)
class PhaseData:
    """Which samples a phase trains and validates on, and the training loss weights."""

    train_indices: np.ndarray
    val_indices: np.ndarray
    train_sample_weights: np.ndarray | None  # per training sample; None without class weighting


def train_frozen(dataset: FerDataset, split: Split, cfg: TrainConfig, out_dir: Path) -> PhaseResult:
    """Phase 1 ("frozen"): train the new head on a frozen, pretrained backbone.

    Args:
        dataset: The canonical dataset; its rows ``split`` points at are used.
        split: Training and validation indices and class weights.
        cfg: Training config (``frozen_epochs``, ``frozen_lr`` and the shared settings).
        out_dir: Directory for ``model.keras`` and ``history.json``; created if missing.

    Returns:
        The phase's result; the model holds the weights of the best validation epoch.
    """
    return _run_phase(
        "frozen", lambda: build_model(cfg), dataset, split, cfg, Path(out_dir), cfg.frozen_epochs, cfg.frozen_lr
    )


def fine_tune(model_path: Path, dataset: FerDataset, split: Split, cfg: TrainConfig, out_dir: Path) -> PhaseResult:
    """Phase 2 ("finetune"): unfreeze the backbone (BatchNorm stays frozen) and train at a low rate.

    Args:
        model_path: The phase 1 ``model.keras``.
        dataset: The canonical dataset.
        split: Training and validation indices and class weights.
        cfg: Training config (``finetune_epochs``, ``finetune_lr``, ``unfreeze_from``
            and the shared settings).
        out_dir: Directory for ``model.keras`` and ``history.json``; created if missing.

    Returns:
        The phase's result. With ``finetune_epochs`` 0 the model is saved unchanged. With
        ``cfg.tta`` the saved model averages predictions on each image and its mirror image.
    """

    def load_and_unfreeze() -> keras.Model:
        model = load_model(model_path)
        if cfg.finetune_epochs > 0:
            unfreeze_backbone(model, cfg.unfreeze_from, freeze_batchnorm=cfg.pretrained)
        return model

    result = _run_phase(
        "finetune", load_and_unfreeze, dataset, split, cfg, Path(out_dir), cfg.finetune_epochs, cfg.finetune_lr,
        first_step=epochs_before(model_path),  # TensorBoard: fine-tuning continues phase 1's epoch axis
    )
    if cfg.tta:  # the final model: evaluation and export then use all views with no change of their own
        result.model = with_flip_tta(result.model, shift=cfg.tta_shift)
        result.model.save(result.model_path)
        views = 2 * len(tta_offsets(cfg.tta_shift))
        logger.info("Saved %s with test-time augmentation (mean over %d views: the image and its mirror%s).",
                    result.model_path, views, f", each shifted {cfg.tta_shift} px four ways" if cfg.tta_shift else "")
    return result


def phase_data(dataset: FerDataset, split: Split, cfg: TrainConfig) -> PhaseData:
    """Training/validation indices (capped by ``cfg.max_train_samples``) and loss weights.

    Args:
        dataset: The canonical dataset.
        split: Training and validation indices and class weights.
        cfg: Uses ``max_train_samples`` (images; 0 = all), ``class_weighting``,
            ``class_weight_power`` and ``seed``.

    Returns:
        The indices to use and, with class weighting, each training image's weight
        ``class_weights[label] ** class_weight_power``. Validation loss stays unweighted.
    """
    train_idx, val_idx = split.train_indices, split.val_indices
    if cfg.max_train_samples > 0:
        # Validation shrinks by the same ratio; at least 1 (raised to one per class below).
        val_cap = max(1, round(cfg.max_train_samples * len(val_idx) / max(len(train_idx), 1)))
        train_idx = stratified_cap(train_idx, dataset.labels[train_idx], cfg.max_train_samples, cfg.seed)
        val_idx = stratified_cap(val_idx, dataset.labels[val_idx], val_cap, cfg.seed + 1)
    weights = None
    if cfg.class_weighting:
        by_index = split.class_weight_by_index()
        table = np.array([by_index[i] for i in range(NUM_CLASSES)], dtype=np.float32) ** cfg.class_weight_power
        weights = table[dataset.labels[train_idx].astype(np.int64)]
    return PhaseData(train_idx, val_idx, weights)


def stratified_cap(indices: np.ndarray, labels: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """A seeded random subset of at most ``cap`` indices, class shares kept, every class kept.

    Args:
        indices: Sample indices.
        labels: Class of each entry of ``indices``.
        cap: Most indices to keep; raised to the number of classes present so that
            each keeps at least one. ``cap`` <= 0 or >= ``len(indices)`` keeps all.
        seed: Random seed.

    Returns:
        The kept indices, sorted.
    """
    if cap <= 0 or cap >= len(indices):
        return indices
    classes, counts = np.unique(labels, return_counts=True)
    if cap < len(classes):
        logger.warning("A cap of %d samples is below the %d classes present; keeping one per class.", cap, len(classes))
        cap = len(classes)
    quota = _class_quota(counts, cap)
    rng = np.random.default_rng(seed)
    kept = [rng.choice(indices[labels == c], size=n, replace=False) for c, n in zip(classes, quota)]
    return np.sort(np.concatenate(kept))


def _class_quota(counts: np.ndarray, cap: int) -> np.ndarray:
    """Per-class sample numbers summing to ``cap``: proportional, at least 1, at most the count."""
    exact = counts * cap / counts.sum()
    quota = np.clip(np.floor(exact).astype(np.int64), 1, counts)
    by_remainder = np.argsort(-(exact - np.floor(exact)), kind="stable")
    while quota.sum() < cap:  # hand out the rest by largest remainder
        for i in by_remainder:
            if quota.sum() < cap and quota[i] < counts[i]:
                quota[i] += 1
    while quota.sum() > cap:  # the minimum of one overshot: take back from the largest
        quota[np.argmax(np.where(quota > 1, quota, -1))] -= 1
    return quota


def configure_devices(cfg: TrainConfig) -> tf.distribute.Strategy:
    """Set the Keras dtype policy and pick a distribution strategy for the visible GPUs.

    Args:
        cfg: Uses ``mixed_precision``.

    Returns:
        MirroredStrategy over all GPUs when there are several, else the default
        strategy. Sets the global policy to mixed_float16 when a GPU is visible (and
        ``cfg.mixed_precision``), float32 otherwise.
    """
    gpus = tf.config.list_physical_devices("GPU")
    policy = "mixed_float16" if gpus and cfg.mixed_precision else "float32"
    keras.mixed_precision.set_global_policy(policy)
    if is_multi_worker():  # a Vertex custom job with several replicas sets TF_CONFIG
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    logger.info(
        "Devices: %d GPU(s), dtype policy %s, %s with %d replica(s).",
        len(gpus), policy, type(strategy).__name__, strategy.num_replicas_in_sync,
    )
    return strategy


def is_multi_worker() -> bool:
    """True when TF_CONFIG (set by Vertex AI on each replica of a multi-replica custom
    job) describes a cluster of more than one training task."""
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    return sum(len(tasks) for role, tasks in cluster.items() if role != "evaluator") > 1


def scale_for_replicas(cfg: TrainConfig, replicas: int, learning_rate: float) -> tuple[int, float]:
    """The global batch and learning rate for ``replicas`` synchronous replicas.

    With ``cfg.scale_with_replicas`` (the default) each replica keeps ``batch_size``
    images, so the global batch is ``batch_size * replicas``, and the learning rate is
    multiplied by ``replicas`` (the linear scaling rule of Goyal et al., 2017, "Accurate,
    Large Minibatch SGD"). Without it, ``batch_size`` is the global batch, split across
    the replicas, and the rate is unchanged. One replica changes nothing either way.

    Returns:
        ``(global_batch, learning_rate)``.
    """
    if cfg.scale_with_replicas:
        return cfg.batch_size * replicas, learning_rate * replicas
    return cfg.batch_size, learning_rate


@dataclass(frozen=True)
class CompiledModel:
    """What ``fit`` trains, and what the input pipeline must do to batches first."""

    trainable: keras.Model  # the model itself, or (XLA) its layers after augmentation, sharing weights
    augment: keras.Model | None = None  # (XLA only) the layers up to augmentation, run by tf.data


def compile_model(
    model: keras.Model,
    cfg: TrainConfig,
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
    optimizer: keras.optimizers.Optimizer | None = None,
) -> CompiledModel:
    """Compile ``model`` for a training phase: Adam (or ``optimizer``), cross-entropy
    (with ``cfg.label_smoothing``) on integer labels, accuracy.

    With ``cfg.jit_compile`` the train step is XLA-compiled. Keras' RandomTranslation
    has no XLA kernel (and Keras then silently drops XLA for the whole model), so the
    model is cut after its last augmentation layer: the part after it (all the compute,
    sharing the model's weights) is compiled with XLA, and the part up to it is returned
    as ``augment`` for ``data.make_dataset``, which runs it on whole batches in the
    input pipeline. Saving ``model`` afterwards saves the trained weights either way.

    Call inside the distribution strategy's scope.
    """
    trainable, augment = model, None
    if cfg.jit_compile and not cfg.run_eagerly:
        unsupported = [layer for layer in model.layers if not layer.supports_jit]
        if unsupported:
            cut = unsupported[-1].output
            augment = keras.Model(model.inputs, cut, name=f"{model.name}_input_stage")
            trainable = keras.Model(cut, model.outputs, name=f"{model.name}_xla")
    trainable.compile(
        optimizer=optimizer or keras.optimizers.Adam(learning_rate=learning_rate),
        loss=SparseCrossentropy(label_smoothing=cfg.label_smoothing),
        metrics=["accuracy"],
        jit_compile=cfg.jit_compile,
        run_eagerly=cfg.run_eagerly,
    )
    return CompiledModel(trainable, augment)


class LearningRateHistory(keras.callbacks.Callback):
    """Adds the learning rate each epoch ran at to its logs, hence to the history."""

    def on_epoch_begin(self, epoch, logs=None):
        self._rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = self._rate


def _callbacks(cfg: TrainConfig) -> list[keras.callbacks.Callback]:
    """Early stopping (best weights kept), LR reduction on plateau, LR logging.

    Both are quiet: the epoch line shows the learning rate, and the phase's end is
    logged with the epochs run and the best epoch.
    """
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=cfg.early_stopping_patience, restore_best_weights=True, verbose=0
        ),
    ]
    if cfg.schedule == "plateau":  # a cosine schedule owns the rate
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss",
                factor=cfg.reduce_lr_factor,
                patience=cfg.reduce_lr_patience,
                min_lr=cfg.min_lr,
                verbose=0,
            )
        )
    callbacks.append(LearningRateHistory())  # after ReduceLROnPlateau: logs the rate the epoch used
    return callbacks


def _run_phase(
    phase: str,
    make_model: Callable[[], keras.Model],
    dataset: FerDataset,
    split: Split,
    cfg: TrainConfig,
    out_dir: Path,
    epochs: int,
    learning_rate: float,
    first_step: int = 0,
) -> PhaseResult:
    """Build or load the model, fit it, save model and history; shared by both phases."""
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:  # process-wide and irreversible; docs/reliability.md
        tf.config.experimental.enable_op_determinism()
    strategy = configure_devices(cfg)
    batch_size, learning_rate = scale_for_replicas(cfg, strategy.num_replicas_in_sync, learning_rate)
    data = phase_data(dataset, split, cfg)
    steps_per_epoch = -(-len(data.train_indices) // batch_size)
    with strategy.scope():
        model = make_model()
        compiled = compile_model(model, cfg, learning_rate_for(cfg, learning_rate, epochs, steps_per_epoch))
    logger.info(
        "Phase %s: start, %d training / %d validation images, %d epoch(s) at learning rate %g, "
        "batch %d, class weighting %s.",
        phase,
        len(data.train_indices),
        len(data.val_indices),
        epochs,
        learning_rate,
        batch_size,
        "on" if data.train_sample_weights is not None else "off",
    )
    start = time.monotonic()
    summaries = EpochSummaries(log_dir(out_dir), phase=phase, first_step=first_step)
    backup = PhaseBackup.for_phase(cfg, phase, data, epochs, learning_rate)  # None without cfg.backup_dir
    history = (
        _fit(compiled.trainable, dataset, data, cfg, epochs, summaries, backup=backup, batch_size=batch_size,
             augment=compiled.augment)
        if epochs > 0
        else {}
    )
    seconds = time.monotonic() - start
    epochs_run = len(history.get("loss", []))
    best_epoch = _best_epoch(history)

    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / MODEL_FILE
    model.save(model_path)
    _write_history(out_dir / HISTORY_FILE, phase, history, epochs_run, best_epoch, seconds, data, cfg)
    if backup is not None:  # outputs written: the backup is no longer needed
        backup.clear()
    logger.info(
        "Phase %s: end, %d epoch(s) run, best epoch %d (val_loss %s), %.1f s; saved %s.",
        phase,
        epochs_run,
        best_epoch,
        f"{history['val_loss'][best_epoch - 1]:.4f}" if best_epoch else "n/a",
        seconds,
        model_path,
    )
    return PhaseResult(model, history, epochs_run, best_epoch, seconds, model_path)


def _fit(
    model: keras.Model, dataset: FerDataset, data: PhaseData, cfg: TrainConfig, epochs: int, summaries=None,
    backup: PhaseBackup | None = None,
    batch_size: int | None = None,
    augment: keras.Model | None = None,
) -> dict:
    """Run ``model.fit`` with one progress line per epoch; returns the history as floats.

    ``batch_size`` is the global batch (default ``cfg.batch_size``); ``augment`` is
    ``CompiledModel.augment``, run by the input pipeline in training mode for training
    batches and in inference mode for validation batches.
    """
    batch_size = batch_size or cfg.batch_size
    train = make_dataset(
        dataset.images[data.train_indices],
        dataset.labels[data.train_indices],
        batch_size,
        shuffle=True,
        seed=cfg.seed,
        sample_weights=data.train_sample_weights,
        augment=_input_stage(augment, training=True),
    )
    val = make_dataset(
        dataset.images[data.val_indices], dataset.labels[data.val_indices], batch_size, shuffle=False, seed=cfg.seed,
        augment=_input_stage(augment, training=False),
    )
    callbacks = _callbacks(cfg)
    if summaries is not None:  # TensorBoard, after LearningRateHistory so it sees the rate
        summaries.validation = val
        callbacks.append(summaries)
    if backup is not None:  # last: it saves the other callbacks' state after their epoch-end decisions
        callbacks.append(backup.callback(callbacks))
    # shuffle=False: the dataset reshuffles itself each epoch (fit cannot shuffle a tf.data.Dataset).
    fitted = model.fit(
        train, validation_data=val, epochs=epochs, callbacks=callbacks, shuffle=False, verbose=2
    )
    history = backup.history if backup is not None else fitted.history  # with the epochs before a resume
    return {key: [float(v) for v in values] for key, values in history.items()}


def _input_stage(augment: keras.Model | None, training: bool):
    """``augment`` as a batch function for ``make_dataset`` (None stays None)."""
    if augment is None:
        return None
    return lambda images: augment(images, training=training)


def _best_epoch(history: dict[str, list[float]]) -> int:
    """1-based epoch with the lowest val_loss (what EarlyStopping restores); 0 if none ran."""
    losses = history.get("val_loss") or []
    if not losses or np.all(np.isnan(losses)):
        return len(history.get("loss", []))
    return int(np.nanargmin(losses)) + 1


def _write_history(
    path: Path,
    phase: str,
    history: dict[str, list[float]],
    epochs_run: int,
    best_epoch: int,
    seconds: float,
    data: PhaseData,
    cfg: TrainConfig,
) -> None:
    """Write the phase's history.json."""
    record = {
        "phase": phase,
        "history": history,
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
        "seconds": round(seconds, 3),
        "train_samples": int(len(data.train_indices)),
        "val_samples": int(len(data.val_indices)),
        "config": cfg.to_dict(),
    }
    path.write_text(json.dumps(record, indent=2))
