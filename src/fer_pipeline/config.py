"""Typed, frozen configuration for every step. Built once at the edge (CLI or KFP
component) from parameters, then passed down explicitly.

Defaults are the original project's settings, each with its unit or reason.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from fer_pipeline.errors import ConfigError


BACKBONES = ("densenet169", "compact")
SCHEDULES = ("plateau", "cosine")
HEAD_POOLINGS = ("avg", "flatten")


@dataclass(frozen=True)
class SplitConfig:
    """How the Kaggle `train` split is divided into training and validation."""

    val_fraction: float = 0.2  # share of train held out, stratified per class
    seed: int = 12  # the seed project's seed
    min_per_class: int = 2  # a stratified split needs >= 2 samples per class

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}.")


@dataclass(frozen=True)
class TrainConfig:
    """Model and both training phases. Phase 1 trains the head on a frozen backbone;
    phase 2 unfreezes the backbone and fine-tunes at a very low learning rate."""

    # model
    # "densenet169" (the seed's transfer learning) or "compact": a VGG-style CNN trained from scratch, for CPUs and
    # machines without ImageNet weights (docs/model-quality.md). Both train in the same two phases.
    backbone: str = "densenet169"
    image_size: int = 48  # model input side in pixels; >48 upsamples inside the model
    weights: str = "imagenet"  # DenseNet169: "imagenet", a local .h5/.weights.h5 path or gs:// URI, or "none"
    compact_widths: tuple[int, ...] = (32, 64, 128, 256)  # compact: filters of each conv block (2 convs + pool)
    dense_units: tuple[int, ...] = (256, 512)  # head Dense widths, in order
    dropouts: tuple[float, ...] = (0.4, 0.5)  # dropout after each head Dense
    # how the head reads the backbone's last feature map: "avg" = global average pooling (the seed's), "flatten" =
    # keep each position (compact: 3x3x256), so the head knows where on the aligned face a feature fired
    head_pooling: str = "avg"
    # data
    batch_size: int = 64  # global batch
    horizontal_flip: bool = True
    width_shift: float = 0.1  # fraction of width, as Keras RandomTranslation
    height_shift: float = 0.05  # fraction of height
    rotation: float = 0.0  # max random rotation, fraction of a full turn (0.03 = 11 degrees), as RandomRotation
    zoom: float = 0.0  # max random zoom in/out, fraction of the side, as RandomZoom
    erasing: float = 0.0  # probability of erasing a random rectangle (RandomErasing); 0 = off
    label_smoothing: float = 0.0  # targets (1 - s) + s / 7; 0 = plain cross-entropy
    class_weighting: bool = True  # balanced weights n / (k * count_k) in the loss
    class_weight_power: float = 1.0  # weights raised to this power: 1 = balanced, 0.5 = square root (milder)
    max_train_samples: int = 0  # 0 = all; >0 caps train/val (stratified) for quick runs
    seed: int = 12
    # phase 1: frozen backbone
    frozen_epochs: int = 20
    frozen_lr: float = 1e-4  # Adam
    # phase 2: fine-tuning
    finetune_epochs: int = 10
    finetune_lr: float = 1e-5  # Adam, very low so ImageNet features are not wrecked
    unfreeze_from: str = ""  # backbone layer name to unfreeze from; "" = whole backbone
    # learning-rate schedule of both phases: "plateau" = ReduceLROnPlateau (the seed's), "cosine" = cosine decay
    # to 0 over the phase's epochs (planned budgets; early stopping still applies)
    schedule: str = "plateau"
    # test-time augmentation: the final model averages its predictions on the image and its mirror image
    # (in evaluation and in the exported model; twice the inference cost)
    tta: bool = False
    # with tta: also each of those two views shifted this many pixels up, down, left and right (10 views,
    # five times the flip's cost); 0 = the flip only. Measured on validation: bench/tta_views.py
    tta_shift: int = 0
    # callbacks (both phases, on validation loss)
    early_stopping_patience: int = 3  # epochs without val_loss improvement
    reduce_lr_patience: int = 2  # epochs before LR is multiplied by reduce_lr_factor
    reduce_lr_factor: float = 0.2
    min_lr: float = 1e-7
    # devices and execution
    jit_compile: bool = False  # XLA-compile the train step (augmentation then runs in tf.data); docs/benchmarks.md
    mixed_precision: bool = True  # mixed_float16 when a GPU is visible (ignored on CPU); output stays float32
    # several replicas (GPUs, or Vertex workers): True = batch_size per replica and learning rates x replicas
    # (linear scaling rule); False = batch_size is the global batch, split, rates unchanged. train.scale_for_replicas
    scale_with_replicas: bool = True
    run_eagerly: bool = False  # no tf.function; for debugging and tiny CPU runs (saves ~30 s tracing per phase)
    # tf.config.experimental.enable_op_determinism() for the whole process: repeatable GPU runs, at some speed
    # cost (CPU runs repeat without it); docs/reliability.md
    deterministic: bool = False
    # fault tolerance: each phase backs up its whole state every epoch under {backup_dir}/{phase}/ and, started
    # again with the same arguments, resumes from it ("" = no backup). fer_pipeline.checkpoint; the KFP training
    # components put it beside their output model, so a retried task resumes.
    backup_dir: str = ""

    def __post_init__(self) -> None:
        problems = []
        if self.backbone not in BACKBONES:
            problems.append(f"backbone must be one of {', '.join(BACKBONES)}, got {self.backbone!r}")
        if self.image_size < 32:
            problems.append(f"image_size must be >= 32 (DenseNet's minimum), got {self.image_size}")
        if self.head_pooling not in HEAD_POOLINGS:
            problems.append(f"head_pooling must be one of {', '.join(HEAD_POOLINGS)}, got {self.head_pooling!r}")
        if not 0.0 <= self.class_weight_power <= 1.0:
            problems.append(f"class_weight_power must be in [0, 1], got {self.class_weight_power!r}")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        for name in ("rotation", "zoom", "erasing", "label_smoothing"):
            if not 0.0 <= getattr(self, name) < 1.0:
                problems.append(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if not self.compact_widths or min(self.compact_widths) < 1:
            problems.append(f"compact_widths must be positive filter counts, got {self.compact_widths}")
        if not 0 <= self.tta_shift <= self.image_size // 4:
            problems.append(f"tta_shift must be in [0, {self.image_size // 4}] pixels, got {self.tta_shift!r}")
        if self.tta_shift and not self.tta:
            problems.append(f"tta_shift={self.tta_shift} needs tta=true (the shifted views extend the flip)")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if len(self.dense_units) != len(self.dropouts):
            problems.append(
                f"dense_units {self.dense_units} and dropouts {self.dropouts} must have the same length"
            )
        if self.frozen_epochs < 0 or self.finetune_epochs < 0:
            problems.append("epochs must be >= 0")
        for name in ("frozen_lr", "finetune_lr"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("width_shift", "height_shift"):
            if not 0.0 <= getattr(self, name) < 1.0:
                problems.append(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if any(not 0.0 <= d < 1.0 for d in self.dropouts):
            problems.append(f"dropouts must each be in [0, 1), got {self.dropouts}")
        if any(units < 1 for units in self.dense_units):
            problems.append(f"dense_units must be positive, got {self.dense_units}")
        if self.max_train_samples < 0:
            problems.append(f"max_train_samples must be >= 0 (0 = all), got {self.max_train_samples}")
        if self.early_stopping_patience < 0 or self.reduce_lr_patience < 0:
            problems.append("early_stopping_patience and reduce_lr_patience must be >= 0")
        if not 0.0 < self.reduce_lr_factor < 1.0:
            problems.append(f"reduce_lr_factor must be in (0, 1), got {self.reduce_lr_factor!r}")
        if self.min_lr < 0:
            problems.append(f"min_lr must be >= 0, got {self.min_lr!r}")
        if problems:
            raise ConfigError("Invalid training config: " + "; ".join(problems) + ".")

    @property
    def pretrained(self) -> bool:
        """Whether the backbone starts from learned weights whose BatchNorm statistics are worth keeping."""
        return self.backbone == "densenet169" and self.weights.strip().lower() != "none"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Build from a dict, ignoring None values (unset parameters keep their default)."""
        return _from_dict(cls, values)


def _from_dict(cls, values: dict[str, Any]):
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"Unknown {cls.__name__} field(s): {', '.join(unknown)}.")
    kwargs = {}
    for key, value in values.items():
        if value is None:
            continue
        default = names[key].default
        if isinstance(default, tuple) and not isinstance(value, tuple):
            value = tuple(json.loads(value)) if isinstance(value, str) else tuple(value)
        if isinstance(default, tuple) and default and isinstance(default[0], int):
            value = tuple(_whole_number(key, v) for v in value)  # KFP hands list items over as floats
        kwargs[key] = value
    return cls(**kwargs)


def _whole_number(key: str, value: Any) -> int:
    try:
        whole = not isinstance(value, bool) and float(value).is_integer()
    except (TypeError, ValueError):
        whole = False
    if not whole:
        raise ConfigError(f"{key} takes whole numbers, got {value!r}.")
    return int(value)


def split_config_from_dict(values: dict[str, Any]) -> SplitConfig:
    return _from_dict(SplitConfig, values)


def _picked(cls, parameters: dict[str, Any]) -> dict[str, Any]:
    return {f.name: parameters[f.name] for f in dataclasses.fields(cls) if f.name in parameters}


def train_config_from_parameters(parameters: dict[str, Any]) -> TrainConfig:
    """The TrainConfig a training component builds from a run's pipeline parameters (those
    that name one of its fields); ConfigError as the component would raise it."""
    return TrainConfig.from_dict(_picked(TrainConfig, parameters))


def split_config_from_parameters(parameters: dict[str, Any]) -> SplitConfig:
    """The SplitConfig the split component builds from a run's pipeline parameters."""
    return split_config_from_dict(_picked(SplitConfig, parameters))


CONFIG_BUILDERS = (train_config_from_parameters, split_config_from_parameters)


__all__ = ["CONFIG_BUILDERS", "SplitConfig", "TrainConfig", "split_config_from_dict", "split_config_from_parameters",
           "train_config_from_parameters", "field"]
