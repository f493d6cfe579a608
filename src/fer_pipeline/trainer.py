"""The two training phases on Keras alone: the head on a frozen backbone, then
fine-tuning. Nothing here imports TensorFlow, so the same phase loop, callbacks, class
weights and schedule run on Keras' TensorFlow and JAX backends; what differs per backend
is the ``Feed`` (``feed_tf``: tf.data and tf.distribute; ``feed_numpy``: NumPy batches
augmented on the device, for JAX).

Each phase reads the canonical dataset and the split, writes ``model.keras`` and
``history.json`` to its own directory, and returns a ``PhaseResult``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import keras
import numpy as np

from fer_pipeline import feature_cache
from fer_pipeline.augment import tta_crops_mismatch
from fer_pipeline.checkpoint import PhaseBackup
from fer_pipeline.config import TrainConfig
from fer_pipeline.dataset import FerDataset
from fer_pipeline.errors import ConfigError
from fer_pipeline.files import MODEL_FILE, write_json
from fer_pipeline.model import (
    build_model,
    check_model_options,
    load_model,
    tta_view_count,
    unfreeze_backbone,
    with_flip_tta,
)
from fer_pipeline.optim import SparseCrossentropy, learning_rate_for, make_optimizer, metrics_for
from fer_pipeline.progress import PhaseProgress
from fer_pipeline.split import Split
from fer_pipeline.time_budget import EpochPlan, budget_callbacks
from fer_pipeline.training_data import PhaseData, phase_data
from fer_pipeline.weight_average import EpochTailAverage

logger = logging.getLogger(__name__)

HISTORY_FILE = "history.json"


@dataclass
class PhaseResult:
    """What one training phase produced."""

    model: keras.Model
    history: dict[str, list[float]]  # Keras history per epoch, plus "learning_rate"
    epochs_run: int
    best_epoch: int  # 1-based epoch with the lowest val_loss (its weights are kept unless averaged); 0 if none ran
    seconds: float  # wall-clock seconds spent in fit
    model_path: Path
    averaged: dict | None = None  # average_last_epochs: {"epochs": [first, last], "val_loss", "val_accuracy"}


class Feed(Protocol):
    """How one backend feeds a phase: devices, the model's in-graph augmentation, batches."""

    def prepare(self, cfg: TrainConfig) -> tuple[AbstractContextManager[Any], int]:
        """Set devices and dtype policy; the scope to build and compile in, and the replica count."""

    def model_config(self, cfg: TrainConfig) -> TrainConfig:
        """The config to build a new model from (a feed that augments itself turns the model's layers off)."""

    def batches(
        self, dataset: FerDataset, data: PhaseData, cfg: TrainConfig, batch_size: int, augment: keras.Model | None
    ) -> tuple[Any, Any]:
        """Training and validation input for ``fit``."""

    def callbacks(self, out_dir: Path, phase: str, first_step: int, validation: Any) -> list[keras.callbacks.Callback]:
        """Backend-specific callbacks (TensorBoard summaries on TensorFlow)."""


def default_feed() -> Feed:
    """The feed for the running Keras backend."""
    if keras.backend.backend() == "tensorflow":
        from fer_pipeline.feed_tf import TfDataFeed

        return TfDataFeed()
    from fer_pipeline.feed_numpy import NumpyFeed

    return NumpyFeed()


def train_frozen(
    dataset: FerDataset,
    split: Split,
    cfg: TrainConfig,
    out_dir: Path,
    feed: Feed | None = None,
    extra_callbacks: tuple[keras.callbacks.Callback, ...] = (),
) -> PhaseResult:
    """Phase 1 ("frozen"): train the new head on a frozen, pretrained backbone.

    Args:
        dataset: The canonical dataset; its rows ``split`` points at are used.
        split: Training and validation indices and class weights.
        cfg: Training config (``frozen_epochs``, ``frozen_lr`` and the shared settings).
        out_dir: Directory for ``model.keras`` and ``history.json``; created if missing.
        feed: The backend's input (default: ``default_feed()``).
        extra_callbacks: Run after the phase's own (a benchmark's deadline, say).

    Returns:
        The phase's result; the model holds the weights of the best validation epoch.
    """
    feed = feed or default_feed()
    if mismatch := tta_crops_mismatch(cfg):
        logger.warning(mismatch)
    check_model_options(cfg)  # an unfreeze_from the backbone lacks ends phase 2, so refuse it before phase 1
    return run_phase(
        "frozen",
        lambda: build_model(feed.model_config(cfg)),
        dataset,
        split,
        cfg,
        Path(out_dir),
        cfg.frozen_epochs,
        cfg.frozen_lr,
        feed,
        extra_callbacks=extra_callbacks,
    )


# The fields that shape the network phase 1 built; fine-tuning loads that network as it is.
ARCHITECTURE_FIELDS = (
    "backbone",
    "image_size",
    "compact_widths",
    "compact_se",
    "head_pooling",
    "dense_units",
    "dropouts",
)


def check_same_architecture(model_path: Path, cfg: TrainConfig) -> None:
    """Refuse a fine-tuning recipe whose architecture differs from the one the model was built
    with (recorded in ``history.json`` beside it), which would be silently ignored; BatchNorm's
    freezing follows ``backbone`` too. Without that record there is nothing to compare."""
    recorded = model_path.parent / HISTORY_FILE
    try:
        trained = json.loads(recorded.read_text()).get("config") or {}
    except (OSError, ValueError, AttributeError):
        return
    asked = json.loads(json.dumps(cfg.to_dict()))  # as the record holds it: tuples as lists
    differ = [name for name in ARCHITECTURE_FIELDS if name in trained and trained[name] != asked[name]]
    if differ:
        raise ConfigError(
            f"{model_path} was built with {_flags(trained, differ)} ({recorded}), this fine-tuning recipe says "
            f"{_flags(asked, differ)}: fine-tuning keeps the "
            "model's architecture. Pass the options (or the --preset) the model was trained with."
        )


def _flags(values: dict, names: list[str]) -> str:
    """``names`` as the CLI's flags with ``values``: --compact-widths 32,64 --image-size 48."""

    def shown(value) -> str:
        return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)

    return " ".join(f"--{n.replace('_', '-')} {shown(values[n])}" for n in names)


def fine_tune(
    model_path: Path,
    dataset: FerDataset,
    split: Split,
    cfg: TrainConfig,
    out_dir: Path,
    feed: Feed | None = None,
    extra_callbacks: tuple[keras.callbacks.Callback, ...] = (),
) -> PhaseResult:
    """Phase 2 ("finetune"): unfreeze the backbone (BatchNorm stays frozen) and train at a low rate.

    Args:
        model_path: The phase 1 ``model.keras``.
        dataset: The canonical dataset.
        split: Training and validation indices and class weights.
        cfg: Training config (``finetune_epochs``, ``finetune_lr``, ``unfreeze_from``
            and the shared settings).
        out_dir: Directory for ``model.keras`` and ``history.json``; created if missing.
        feed: The backend's input (default: ``default_feed()``).
        extra_callbacks: Run after the phase's own.

    Returns:
        The phase's result. With ``finetune_epochs`` 0 the model is saved unchanged. With
        ``cfg.tta`` the saved model averages predictions on each image and its mirror image.
    """
    from fer_pipeline.tensorboard import epochs_before

    check_same_architecture(Path(model_path), cfg)

    def load_and_unfreeze() -> keras.Model:
        model = load_model(model_path)
        if cfg.finetune_epochs > 0:
            unfreeze_backbone(model, cfg.unfreeze_from, freeze_batchnorm=cfg.pretrained)
        return model

    result = run_phase(
        "finetune",
        load_and_unfreeze,
        dataset,
        split,
        cfg,
        Path(out_dir),
        cfg.finetune_epochs,
        cfg.finetune_lr,
        feed or default_feed(),
        first_step=epochs_before(model_path),  # TensorBoard: fine-tuning continues phase 1's epoch axis
        extra_callbacks=extra_callbacks,
    )
    if cfg.tta:  # the final model: evaluation and export then use all views with no change of their own
        result.model = with_flip_tta(result.model, shift=cfg.tta_shift, crop=cfg.tta_crops)
        result.model.save(result.model_path)
        views = "the image and its mirror"
        if cfg.tta_shift:
            views += f", each shifted {cfg.tta_shift} px four ways"
        if cfg.tta_crops:
            crops = f"the centre and four corner crops of side {cfg.tta_crops}"
            views = f"{views}, and {crops} of each" if cfg.tta_shift else f"{crops} of {views}"
        logger.info(
            "Saved %s with test-time augmentation (mean over %d views: %s).",
            result.model_path,
            tta_view_count(cfg.tta_shift, cfg.tta_crops),
            views,
        )
    return result


def _batch_within(batch_size: int, images: int, phase: str) -> int:
    """The batch, at most the training set: the feeds fill a batch from a repeating stream,
    so a larger one would hold some images twice or more in every step."""
    if batch_size <= images:
        return batch_size
    logger.warning(
        "Phase %s: batch_size %d is larger than its %d training images; each batch holds those %d "
        "(a larger one would repeat images within it).",
        phase,
        batch_size,
        images,
        images,
    )
    return images


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
    steps_per_execution: int = 1,
) -> CompiledModel:
    """Compile ``model`` for a training phase: ``cfg.optimizer`` (or ``optimizer``),
    cross-entropy (with ``cfg.label_smoothing``) on integer labels or, with ``cfg.mix``,
    on mixed targets, accuracy.

    With ``cfg.jit_compile`` the train step is XLA-compiled. Keras' RandomTranslation
    has no XLA kernel (and Keras then silently drops XLA for the whole model), so the
    model is cut after its last augmentation layer: the part after it (all the compute,
    sharing the model's weights) is compiled with XLA, and the part up to it is returned
    as ``augment`` for ``tf_data.make_dataset``, which runs it on whole batches in the
    input pipeline. Saving ``model`` afterwards saves the trained weights either way.

    Call inside the distribution strategy's scope.
    """
    trainable, augment = model, None
    if cfg.jit_compile and not cfg.run_eagerly:
        unsupported = [layer for layer in model.layers if not layer.supports_jit]
        if unsupported:
            cut = unsupported[-1].output
            augment = keras.Model(model.inputs[0], cut, name=f"{model.name}_input_stage")
            trainable = keras.Model(cut, model.outputs, name=f"{model.name}_xla")
    trainable.compile(
        optimizer=optimizer or make_optimizer(cfg, learning_rate),
        loss=SparseCrossentropy(label_smoothing=cfg.label_smoothing),
        metrics=metrics_for(cfg),
        jit_compile=cfg.jit_compile,
        run_eagerly=cfg.run_eagerly,
        steps_per_execution=steps_per_execution,  # >1: several steps per device call (bench/gpu.py probe)
    )
    return CompiledModel(trainable, augment)


class LearningRateHistory(keras.callbacks.Callback):
    """Adds the learning rate each epoch ran at to its logs, hence to the history."""

    def on_epoch_begin(self, epoch, logs=None):
        self._rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = self._rate


def phase_callbacks(cfg: TrainConfig) -> list[keras.callbacks.Callback]:
    """Early stopping (best weights kept), then with ``cfg.average_last_epochs`` the mean of
    the last epochs in their place, LR reduction on plateau, LR logging.

    All are quiet: the epoch line shows the learning rate, and the phase's end is
    logged with the epochs run, the best epoch and the epochs averaged.
    """
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=cfg.early_stopping_patience, restore_best_weights=True, verbose=0
        ),
    ]
    if cfg.average_last_epochs:  # after EarlyStopping: its on_train_end restores the best, this replaces them
        callbacks.append(EpochTailAverage(cfg.average_last_epochs))
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


def run_phase(
    phase: str,
    make_model: Callable[[], keras.Model],
    dataset: FerDataset,
    split: Split,
    cfg: TrainConfig,
    out_dir: Path,
    epochs: int,
    learning_rate: float,
    feed: Feed,
    first_step: int = 0,
    extra_callbacks: tuple[keras.callbacks.Callback, ...] = (),
) -> PhaseResult:
    """Build or load the model, fit it, save model and history; shared by both phases and backends.

    ``extra_callbacks`` run after the phase's own (before the backup, which must see their state).
    """
    keras.utils.set_random_seed(cfg.seed)
    previous_policy = keras.config.dtype_policy()
    try:
        return _run_phase(
            phase, make_model, dataset, split, cfg, out_dir, epochs, learning_rate, feed, first_step, extra_callbacks
        )
    finally:  # the model keeps its layers' policy; what runs after the phase builds under the caller's
        keras.config.set_dtype_policy(previous_policy)


def _run_phase(
    phase, make_model, dataset, split, cfg, out_dir, epochs, learning_rate, feed, first_step, extra_callbacks
):
    scope, replicas = feed.prepare(cfg)  # sets the dtype policy (fer_pipeline.precision)
    batch_size, learning_rate = scale_for_replicas(cfg, replicas, learning_rate)
    data = phase_data(dataset, split, cfg)
    batch_size = _batch_within(batch_size, len(data.train_indices), phase)
    steps_per_epoch = -(-len(data.train_indices) // batch_size)
    with scope:
        model = make_model()
        cache = feature_cache.plan(cfg, model, phase) if epochs > 0 else None  # None: off or not exact
        trained = cache.head if cache else model  # the head shares the model's weights
        compiled = compile_model(trained, cfg, learning_rate_for(cfg, learning_rate, epochs, steps_per_epoch))
    _log_phase_start(phase, data, epochs, learning_rate, batch_size)
    start = time.monotonic()
    backup = PhaseBackup.for_phase(cfg, phase, data, epochs, learning_rate)  # None without cfg.backup_dir
    history, averaged = {}, None
    if epochs > 0:
        if cache:
            train, val = cache.batches(dataset, data, cfg, batch_size, feature_cache.feed_augmenter(feed, cfg))
        else:
            train, val = feed.batches(dataset, data, cfg, batch_size, compiled.augment)
        plan = EpochPlan(epochs)
        callbacks = [
            # first: the epoch's rate is set before LearningRateHistory reads it
            *budget_callbacks(cfg.time_budget_minutes, cfg.schedule, learning_rate, plan, phase),
            *phase_callbacks(cfg),
            *feed.callbacks(out_dir, phase, first_step, val),
            *extra_callbacks,
            PhaseProgress(phase, plan, may_stop_early=cfg.early_stopping_patience < epochs),
        ]
        history = fit(compiled.trainable, train, val, epochs, callbacks, backup, steps_per_epoch)
        averaged = averaged_scores(compiled.trainable, val, callbacks)
    result = PhaseResult(
        model,
        history,
        epochs_run=len(history.get("loss", [])),
        best_epoch=best_epoch_of(history),
        seconds=time.monotonic() - start,
        model_path=out_dir / MODEL_FILE,
        averaged=averaged,
    )
    _save_phase(result, phase, data, cfg, cache.views if cache else 0)
    if backup is not None:  # outputs written: the backup is no longer needed
        backup.clear()
    _log_phase_end(phase, result)
    return result


def _log_phase_start(phase: str, data: PhaseData, epochs: int, learning_rate: float, batch_size: int) -> None:
    logger.info(
        "Phase %s: start, %d training / %d validation images, %d epoch(s) at learning rate %g, "
        "batch %d, class weighting %s, backend %s.",
        phase,
        len(data.train_indices),
        len(data.val_indices),
        epochs,
        learning_rate,
        batch_size,
        "on" if data.train_sample_weights is not None else "off",
        keras.backend.backend(),
    )
    if epochs and np.isin(data.val_indices, data.train_indices).any():
        logger.info(
            "Phase %s trains on its validation images too (train_on_validation): validation metrics are not held out.",
            phase,
        )


def _save_phase(result: PhaseResult, phase: str, data: PhaseData, cfg: TrainConfig, cache_views: int) -> None:
    """``model.keras`` and ``history.json`` (the history with what produced it) in the phase's directory."""
    result.model_path.parent.mkdir(parents=True, exist_ok=True)
    result.model.save(result.model_path)
    write_json(
        result.model_path.parent / HISTORY_FILE,
        {
            "phase": phase,
            "history": result.history,
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "seconds": round(result.seconds, 3),
            "train_samples": int(len(data.train_indices)),
            "val_samples": int(len(data.val_indices)),
            "config": cfg.to_dict(),
            "dtype_policy": keras.config.dtype_policy().name,  # what precision resolved to (fer_pipeline.precision)
            "frozen_feature_cache_views": cache_views,  # 0: not used (off or not exact)
            "averaged": result.averaged,  # None: the best epoch's weights were kept
        },
    )


def _log_phase_end(phase: str, result: PhaseResult) -> None:
    best = result.best_epoch
    logger.info(
        "Phase %s: end, %d epoch(s) run, best epoch %d (val_loss %s), %.1f s; saved %s.",
        phase,
        result.epochs_run,
        best,
        f"{result.history['val_loss'][best - 1]:.4f}" if best else "n/a",
        result.seconds,
        result.model_path,
    )
    if result.averaged:
        first, last = result.averaged["epochs"]
        logger.info(
            "Phase %s: kept the mean of epochs %d-%d's weights in place of epoch %d's (average_last_epochs): "
            "val_loss %.4f, val_accuracy %.4f.",
            phase,
            first,
            last,
            best,
            result.averaged["val_loss"],
            result.averaged["val_accuracy"],
        )


def fit(
    model: keras.Model,
    train,
    val,
    epochs: int,
    callbacks: list,
    backup: PhaseBackup | None = None,
    steps_per_epoch: int | None = None,
) -> dict:
    """Run ``model.fit`` with one progress line per epoch; returns the history as floats.

    ``steps_per_epoch`` ends each epoch of ``train`` batches that repeat without end (the
    TensorFlow feed's); batches that end by themselves ignore it.
    """
    if backup is not None:  # last: it saves the other callbacks' state after their epoch-end decisions
        callbacks = [*callbacks, backup.callback(callbacks)]
    # shuffle=False: the feed reshuffles each epoch itself (fit cannot shuffle a tf.data.Dataset).
    fitted = model.fit(
        train,
        validation_data=val,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch if repeats_without_end(train) else None,
        callbacks=callbacks,
        shuffle=False,
        verbose=2,
    )
    history = backup.history if backup is not None else fitted.history  # with the epochs before a resume
    return {key: [float(v) for v in values] for key, values in history.items()}


def repeats_without_end(batches) -> bool:
    """True for a tf.data pipeline that repeats forever (-1 is tf.data's INFINITE_CARDINALITY)."""
    cardinality = getattr(batches, "cardinality", None)
    return callable(cardinality) and int(cardinality()) == -1


def averaged_scores(model: keras.Model, val, callbacks: list) -> dict | None:
    """The epochs an ``EpochTailAverage`` among ``callbacks`` averaged and the mean's validation
    loss and accuracy (the history's values are each epoch's own); None when nothing was averaged."""
    average = next((c for c in callbacks if isinstance(c, EpochTailAverage) and c.averaged), None)
    if average is None:
        return None
    x, y = val if isinstance(val, tuple) else (val, None)  # the numpy feed's (images, labels), or batches
    scores = model.evaluate(x, y, verbose=0, return_dict=True)
    return {
        "epochs": list(average.averaged),
        "val_loss": round(float(scores["loss"]), 4),
        "val_accuracy": round(float(scores["accuracy"]), 4),
    }


def best_epoch_of(history: dict[str, list[float]]) -> int:
    """1-based epoch with the lowest val_loss (what EarlyStopping restores); 0 if none ran."""
    losses = history.get("val_loss") or []
    if not losses or np.all(np.isnan(losses)):
        return len(history.get("loss", []))
    return int(np.nanargmin(losses)) + 1
