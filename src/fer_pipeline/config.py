"""Typed, frozen configuration for every step. Built once at the edge (CLI or KFP
component) from parameters, then passed down explicitly.

Defaults are the original project's settings, each with its unit or reason.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from fer_pipeline.errors import ConfigError
from fer_pipeline.files import parse_bool

BACKBONES = ("densenet169", "compact")
SCHEDULES = ("plateau", "cosine")
HEAD_POOLINGS = ("avg", "flatten")
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")  # fer_pipeline.precision
OPTIMIZERS = ("adam", "adamw", "sgd")  # fer_pipeline.optim.make_optimizer
MIXES = ("none", "mixup", "cutmix")  # fer_pipeline.mixing


def opt(default: Any, doc: str):
    """A config field with its one-line documentation: README's recipe table is generated
    from these (``python -m fer_pipeline.recipe_table``; tests/test_docs.py checks it)."""
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class SplitConfig:
    """How the Kaggle `train` split is divided into training and validation."""

    val_fraction: float = opt(0.2, "validation share of the train split, stratified per class")
    seed: int = opt(12, "random seed of the split, initialisation and augmentation (the seed project's)")
    min_per_class: int = opt(2, "fewest images a class needs in the train split (a stratified split needs 2)")

    def __post_init__(self) -> None:
        problems = _number_problems(self)
        if not 0.0 < self.val_fraction < 1.0:
            problems.append(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        if self.min_per_class < 2:
            problems.append(f"min_per_class must be >= 2 (a stratified split needs 2), got {self.min_per_class!r}")
        if problems:
            raise ConfigError("Invalid split config: " + "; ".join(problems) + ".")


@dataclass(frozen=True)
class TrainConfig:
    """Model and both training phases. Phase 1 trains the head on a frozen backbone;
    phase 2 unfreezes the backbone and fine-tunes at a very low learning rate."""

    # model
    backbone: str = opt(
        "densenet169",
        "`densenet169` (the seed's transfer learning) or `compact`: a VGG-style CNN trained from "
        "scratch, for CPUs and machines without ImageNet weights (docs/model-quality.md)",
    )
    image_size: int = opt(48, "model input side in pixels; >48 upsamples inside the model")
    weights: str = opt(
        "imagenet", "DenseNet169 weights: `imagenet`, a local .h5/.weights.h5 path or gs:// URI, or `none`"
    )
    compact_widths: tuple[int, ...] = opt(
        (32, 64, 128, 256), "compact: filters of each conv block (two 3x3 convs + 2x2 pool)"
    )
    # channel attention (Hu et al. 2018) for ~1% of a block's FLOPs; off, since at the cpu preset's budget it
    # gained nothing on validation (docs/model-quality.md, `se_held_out`)
    compact_se: int = opt(
        0,
        "compact: squeeze-and-excitation after each block's convs, reduction ratio r (a block of w filters "
        "gets a w/r-unit bottleneck, at least 4); 0 = off",
    )
    dense_units: tuple[int, ...] = opt((256, 512), "head Dense widths, in order")
    dropouts: tuple[float, ...] = opt((0.4, 0.5), "dropout after each head Dense")
    # the head knowing where on the aligned face a feature fired is what "flatten" buys
    head_pooling: str = opt(
        "avg",
        "how the head reads the last feature map: `avg` (global average pooling, the seed's) or `flatten` "
        "(keeps each position; compact: 3x3x256)",
    )
    # data
    batch_size: int = opt(64, "global batch")
    horizontal_flip: bool = opt(True, "random mirror image of training batches")
    width_shift: float = opt(0.1, "max random horizontal shift, fraction of the width (RandomTranslation)")
    height_shift: float = opt(0.05, "max random vertical shift, fraction of the height")
    rotation: float = opt(0.0, "max random rotation, fraction of a full turn (0.03 = 11 degrees; RandomRotation)")
    zoom: float = opt(0.0, "max random zoom in/out, fraction of the side (RandomZoom)")
    # one affine resampling with flip, shift, rotation and zoom (fer_pipeline.augment): chained ones blur
    crop_scale: tuple[float, ...] = opt(
        (1.0, 1.0),
        "random resized crop: [low, high] of the crop's side, fraction of the image's (> 1 takes in a margin of "
        "repeated edges), drawn per training image, placed at random and resized to the input side, all in one "
        "resampling with flip, shift, rotation and zoom; [1, 1] = off (the seed's); the FER anchors' [0.8, 1.2]",
    )
    crop_ratio: tuple[float, ...] = opt(
        (1.0, 1.0),
        "random resized crop: [low, high] of the crop's aspect (width / height), log-uniform; [1, 1] = square",
    )
    erasing: float = opt(
        0.0,
        "probability per training image of filling one random rectangle with 0 (black), after all other "
        "augmentation, on both feeds: torchvision's RandomErasing as the FER anchors use it, area 2-33% of the "
        "image, aspect (height / width) log-uniform in [0.3, 3.3], sides rounded to whole pixels, placed "
        "uniformly inside (fer_pipeline.augment); 0 = off; the anchors' 0.5",
    )
    brightness: float = opt(
        0.0, "max random brightness change, fraction of the 0-255 range (RandomBrightness); 0 = off"
    )
    label_smoothing: float = opt(0.0, "targets (1 - s) one-hot + s / 7; 0 = plain cross-entropy")
    class_weighting: bool = opt(True, "balanced class weights n / (k * count_k) in the loss")
    class_weight_power: float = opt(1.0, "exponent on the class weights: 1 = balanced, 0.5 = square root (milder)")
    max_train_samples: int = opt(
        0, "cap on training images for quick runs, stratified, validation shrunk alike; 0 = all"
    )
    # a fixed schedule chooses nothing on validation, so its held-out images can be learned from
    train_on_validation: bool = opt(
        False,
        "also train on the split's validation images (val_fraction 0.1: 11% more training images); only where "
        "validation chooses nothing: schedule=cosine, early_stopping_patience >= the longest phase's epochs and "
        "average_last_epochs >= 1; validation metrics then score images the model trained on; false = held out "
        "(the seed's)",
    )
    seed: int = opt(12, "random seed (shared with the split)")
    # phase 1: frozen backbone
    frozen_epochs: int = opt(20, "phase 1 (frozen backbone) epochs; early stopping may end it sooner")
    frozen_lr: float = opt(1e-4, "phase 1 learning rate (of `optimizer`)")
    frozen_feature_cache: int = opt(
        0,
        "phase 1 on a frozen DenseNet169: N >= 1 computes the backbone's features once for N augmented views of "
        "each training image (epoch e trains the head on view e mod N) and once for validation; 0 = off, the "
        "seed's fresh augmentation through the whole model each epoch (fer_pipeline.feature_cache)",
    )
    # phase 2: fine-tuning
    finetune_epochs: int = opt(10, "phase 2 (fine-tuning) epochs; 0 = keep phase 1's model")
    finetune_lr: float = opt(1e-5, "phase 2 learning rate, very low so ImageNet features survive")
    unfreeze_from: str = opt("", 'backbone layer phase 2 unfreezes from; `""` = the whole backbone')
    # optimizer (both phases, at frozen_lr / finetune_lr); issue 24's anchors
    optimizer: str = opt(
        "adam",
        "optimizer of both phases: `adam` (the seed's), `adamw` (Adam with `weight_decay`) or `sgd` "
        "(Nesterov momentum 0.9; the VGG anchor trains at lr 0.01, weight_decay 1e-4)",
    )
    weight_decay: float = opt(
        0.0,
        "`adamw` and `sgd`: decoupled weight decay, as Keras 3 does it: each step multiplies every trainable "
        "weight by 1 - learning rate x weight_decay, outside the gradient and momentum (PyTorch's SGD adds the "
        "decay to the gradient, so its 1e-4 at momentum 0.9 shrinks about as 1e-3 here); 0 = none, as `adam` needs",
    )
    # mixing of training batches (validation is never mixed)
    mix: str = opt(
        "none",
        "`none` (the seed's), `mixup` (each training batch blended with a shuffled copy of itself, weight lambda) "
        "or `cutmix` (a rectangle of 1 - lambda of the image pasted from the shuffled copy); targets and class "
        "weights become lambda x the image's + (1 - lambda) x its partner's (fer_pipeline.mixing)",
    )
    mix_alpha: float = opt(1.0, "mix: lambda ~ Beta(mix_alpha, mix_alpha), one per batch; 1 = uniform (the anchors')")
    mix_prob: float = opt(1.0, "mix: share of training batches mixed; the others train on their own labels")
    # cosine: planned budgets, with early stopping still applying
    schedule: str = opt(
        "plateau",
        "learning rate of both phases: `plateau` (x reduce_lr_factor on plateaus, the seed's) or "
        "`cosine` (decay to 0 over the phase's epochs)",
    )
    tta: bool = opt(
        False,
        "the final model averages its predictions on the image and its mirror image (evaluation and the "
        "exported model; twice the inference cost)",
    )
    tta_shift: int = opt(
        0,
        "with tta: also each of the two views shifted this many pixels four ways (10 views, 5x the flip's "
        "cost); 0 = the flip only (bench/tta_views.py)",
    )
    tta_crops: float = opt(
        0.0,
        "with tta: ten-crop views, in place of the image or, with tta_shift, beside its ten views (20): the "
        "centre and four corner crops of this side (fraction of the image's; crop_scale's low end matches the "
        "training crops), each resized to the input side, and the mirror image of each (10 views, 5x the flip's "
        "cost); in [0.5, 1); 0 = off; with crop_scale off, training starts with a warning (views the model never "
        "trained on)",
    )
    # the same 2 cores have run the cpu preset's epochs at 40 s and at 95 s (fer_pipeline.time_budget)
    time_budget_minutes: float = opt(
        0.0,
        "each training phase ends by the last epoch that fits in this many minutes at the pace measured after "
        "every epoch (the first of each start or resume, which also traces, counts as time but not as pace); a "
        "cosine schedule then steps once per epoch and is re-planned to end there, and re-planned later when the "
        "pace recovers; frozen_epochs / "
        "finetune_epochs stay the most; 0 = no limit",
    )
    # callbacks (both phases, on validation loss)
    early_stopping_patience: int = opt(3, "epochs without validation-loss improvement before a phase stops")
    average_last_epochs: int = opt(
        0,
        "each phase ends with the uniform mean of its last N epochs' weights (BatchNorm statistics included) in "
        "place of the best validation epoch that early stopping keeps: stochastic weight averaging over the "
        "schedule's tail (fer_pipeline.weight_average); the mean of all when fewer ran; 0 = off, the best epoch",
    )
    reduce_lr_patience: int = opt(2, "plateau schedule: epochs without improvement before the rate drops")
    reduce_lr_factor: float = opt(0.2, "plateau schedule: factor on the rate")
    min_lr: float = opt(1e-7, "plateau schedule: lowest rate")
    # devices and execution
    jit_compile: bool = opt(False, "XLA-compile the train step (augmentation then runs in tf.data; docs/benchmarks.md)")
    precision: str = opt(
        "auto",
        "dtype policy: `auto` (bfloat16 on GPUs of compute capability >= 8.0 and on CPUs with AMX or AVX-512-BF16, "
        "float16 on older GPUs, else float32; fer_pipeline.precision), `float32`, `mixed_bfloat16` or `mixed_float16`; "
        "the output stays float32",
    )
    mixed_precision: bool = opt(True, "deprecated, use `precision`: false = `float32` when precision is `auto`")
    # trainer.scale_for_replicas explains the linear scaling rule
    scale_with_replicas: bool = opt(
        True,
        "several replicas: batch_size per replica and learning rates x replicas; false = batch_size is the "
        "global batch, rates unchanged",
    )
    run_eagerly: bool = opt(False, "no tf.function: for debugging and tiny CPU runs (saves ~30 s tracing per phase)")
    deterministic: bool = opt(
        False,
        "repeatable GPU runs (op determinism for the whole process), at some speed cost; CPU runs repeat "
        "without it (docs/reliability.md)",
    )
    # The KFP training components put it beside their output model, so a retried task resumes.
    backup_dir: str = opt(
        "",
        "each phase backs up its whole state every epoch under {backup_dir}/{phase}/ and resumes from it; "
        '`""` = none (fer_pipeline.checkpoint)',
    )

    def __post_init__(self) -> None:
        problems = _number_problems(self)
        if self.backbone not in BACKBONES:
            problems.append(f"backbone must be one of {', '.join(BACKBONES)}, got {self.backbone!r}")
        if self.image_size < 32:
            problems.append(f"image_size must be >= 32 (DenseNet's minimum), got {self.image_size}")
        if self.head_pooling not in HEAD_POOLINGS:
            problems.append(f"head_pooling must be one of {', '.join(HEAD_POOLINGS)}, got {self.head_pooling!r}")
        if not 0.0 <= self.class_weight_power <= 1.0:
            problems.append(f"class_weight_power must be in [0, 1], got {self.class_weight_power!r}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.frozen_feature_cache < 0:
            problems.append(f"frozen_feature_cache must be >= 0 (0 = off), got {self.frozen_feature_cache}")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        problems += self._optimizer_and_mix_problems()
        for name in ("rotation", "zoom", "erasing", "brightness", "label_smoothing"):
            if not 0.0 <= getattr(self, name) < 1.0:
                problems.append(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if not self.compact_widths or min(self.compact_widths) < 1:
            problems.append(f"compact_widths must be positive filter counts, got {self.compact_widths}")
        if self.compact_se < 0:
            problems.append(f"compact_se must be >= 0 (0 = off), got {self.compact_se!r}")
        elif self.compact_se and self.backbone != "compact":
            problems.append(
                f"compact_se={self.compact_se} is the compact network's; backbone={self.backbone!r} has no place for it "
                "(pass backbone=compact, or compact_se=0)"
            )
        if not 0 <= self.tta_shift <= self.image_size // 4:
            problems.append(f"tta_shift must be in [0, {self.image_size // 4}] pixels, got {self.tta_shift!r}")
        if self.tta_shift and not self.tta:
            problems.append(f"tta_shift={self.tta_shift} needs tta=true (the shifted views extend the flip)")
        problems += self._crop_problems()
        problems += self._train_on_validation_problems()
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if len(self.dense_units) != len(self.dropouts):
            problems.append(f"dense_units {self.dense_units} and dropouts {self.dropouts} must have the same length")
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
        if not self.time_budget_minutes >= 0:
            problems.append(f"time_budget_minutes must be >= 0 (0 = no limit), got {self.time_budget_minutes!r}")
        if self.average_last_epochs < 0:
            problems.append(f"average_last_epochs must be >= 0 (0 = off), got {self.average_last_epochs!r}")
        if self.early_stopping_patience < 0 or self.reduce_lr_patience < 0:
            problems.append("early_stopping_patience and reduce_lr_patience must be >= 0")
        if not 0.0 < self.reduce_lr_factor < 1.0:
            problems.append(f"reduce_lr_factor must be in (0, 1), got {self.reduce_lr_factor!r}")
        if self.min_lr < 0:
            problems.append(f"min_lr must be >= 0, got {self.min_lr!r}")
        if problems:
            raise ConfigError("Invalid training config: " + "; ".join(problems) + ".")

    def _optimizer_and_mix_problems(self) -> list[str]:
        problems = []
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not self.weight_decay >= 0:
            problems.append(f"weight_decay must be >= 0 (0 = none), got {self.weight_decay!r}")
        elif self.weight_decay > 0 and self.optimizer == "adam":
            problems.append(
                f"weight_decay={self.weight_decay!r} needs optimizer adamw or sgd (Keras decays weights apart "
                "from the gradient, which makes Adam AdamW); set optimizer=adamw"
            )
        if self.mix not in MIXES:
            problems.append(f"mix must be one of {', '.join(MIXES)}, got {self.mix!r}")
        elif self.mix != "none" and not self.mix_alpha > 0:
            problems.append(f"mix_alpha must be > 0 with mix={self.mix}, got {self.mix_alpha!r}")
        if not 0.0 < self.mix_prob <= 1.0:
            problems.append(f"mix_prob must be in (0, 1], got {self.mix_prob!r}")
        return problems

    @property
    def pretrained(self) -> bool:
        """Whether the backbone starts from learned weights whose BatchNorm statistics are worth keeping."""
        return self.backbone == "densenet169" and weights_kind(self.weights) != "none"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def _train_on_validation_problems(self) -> list[str]:
        """Validation images in training are only honest where nothing is chosen on validation loss."""
        if not self.train_on_validation:
            return []
        problems = []
        if self.schedule != "cosine":
            problems.append(f"train_on_validation needs schedule=cosine ({self.schedule} follows validation loss)")
        longest = max(self.frozen_epochs, self.finetune_epochs)
        if self.early_stopping_patience < longest:
            problems.append(
                f"train_on_validation needs early_stopping_patience >= {longest} (the longest phase's epochs), got "
                f"{self.early_stopping_patience}: early stopping would choose on images the model trained on"
            )
        if self.average_last_epochs < 1:
            problems.append(
                "train_on_validation needs average_last_epochs >= 1: without it a phase keeps its best validation epoch"
            )
        return problems

    def _crop_problems(self) -> list[str]:
        problems = []
        for name in ("crop_scale", "crop_ratio"):
            value = getattr(self, name)
            if len(value) != 2 or not 0 < value[0] <= value[1]:
                problems.append(f"{name} must be [low, high] with 0 < low <= high, got {list(value)}")
        if self.tta_crops and not 0.5 <= self.tta_crops < 1.0:
            problems.append(f"tta_crops must be 0 (off) or in [0.5, 1), got {self.tta_crops!r}")
        elif self.tta_crops and not self.tta:
            problems.append(f"tta_crops={self.tta_crops} needs tta=true (the crops' mirror images are half the views)")
        return problems

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a dict, ignoring None values (unset parameters keep their default)."""
        return config_from_dict(cls, values)


SEED_RANGE = (0, 2**32 - 1)  # what NumPy's and scikit-learn's random states accept


def _number_problems(config) -> list[str]:
    """Every number of ``config`` finite (inf or NaN would pass the range checks' ``not x > 0``
    forms, or train on NaN losses) and its seed within the range the random generators take."""
    problems = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        numbers = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
            problems.append(f"{f.name} must be a finite number, got {value!r}")
    seed = getattr(config, "seed", 0)
    if not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        problems.append(f"seed must be in [{SEED_RANGE[0]}, {SEED_RANGE[1]}], got {seed!r}")
    return problems


def config_from_dict(cls, values: dict[str, Any]):
    """``cls`` (a config dataclass) from a dict, ignoring None values. Values are typed as
    the field's default is: text from a settings file or ``--param`` ("2", "true",
    "[8, 16]") is parsed, lists become tuples. ConfigError names an unknown field or a
    value of the wrong kind."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"Unknown {cls.__name__} field(s): {', '.join(unknown)}.")
    kwargs = {}
    for key, value in values.items():
        if value is None:
            continue
        kwargs[key] = _typed(key, value, names[key].default)
    return cls(**kwargs)


def _typed(key: str, value: Any, default: Any) -> Any:
    """``value`` as the type of ``default``; ConfigError naming ``key`` if it is not one."""
    if isinstance(default, tuple):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ConfigError(f"{key} takes a JSON list such as [32, 64], got {value!r}.") from None
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} takes a list such as [32, 64], got {value!r}.")
        if default and isinstance(default[0], int):
            return tuple(_whole_number(key, v) for v in value)  # KFP hands list items over as floats
        return tuple(_number(key, v) for v in value) if default and isinstance(default[0], float) else tuple(value)
    if isinstance(default, bool):
        if isinstance(value, str):
            try:
                return parse_bool(value)
            except ValueError:
                raise ConfigError(f"{key} takes true or false, got {value!r}.") from None
        if not isinstance(value, bool):
            raise ConfigError(f"{key} takes true or false, got {value!r}.")
        return value
    if isinstance(default, int):
        return _whole_number(key, value)
    if isinstance(default, float):
        return _number(key, value)
    return value if isinstance(value, str) else str(value)


def _number(key: str, value: Any) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} takes a number, got {value!r}.") from None


def weights_kind(weights: str) -> str:
    """What the ``weights`` field names: "imagenet" or "none" (in any case), "gcs" (a gs://
    file) or "file" (a local one); the one reading of it, for the checks and the build."""
    named = weights.strip().lower()
    if named in ("imagenet", "none"):
        return named
    return "gcs" if weights.startswith("gs://") else "file"


def _whole_number(key: str, value: Any) -> int:
    try:
        whole = not isinstance(value, bool) and float(value).is_integer()
    except (TypeError, ValueError):
        whole = False
    if not whole:
        raise ConfigError(f"{key} takes whole numbers, got {value!r}.")
    try:
        return int(value)  # exact, for a long integer's text too
    except ValueError:  # text such as "2.0" or "1e3", a whole number in float's spelling
        return int(float(value))


__all__ = ["SplitConfig", "TrainConfig", "config_from_dict"]
