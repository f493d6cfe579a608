"""GPU measurements with Keras 3 on JAX, for a GPU machine that has no TensorFlow.

The model, its augmentation, the loss and the schedule are the library's own
(``fer_pipeline.model`` and ``fer_pipeline.optim`` use Keras and ``keras.ops``
only); the input is in-memory NumPy instead of tf.data.

    python bench/gpu.py throughput [compact]     # DenseNet169 and/or compact images/s, both phases
    python bench/gpu.py sweep NAME [NAME ...]    # compact-backbone recipe candidates (validation only)
    python bench/gpu.py densenet                 # full two-phase DenseNet169 training, weights none
    python bench/gpu.py probe                    # compact images/s with less augmentation, more steps per call
    bash bench/gpu.sh                            # all of it, as one call on the device machine

Data: ``FER_GPU_DATA`` (default .gpu/fer-trainval.npz.xz), an lzma-compressed npz
with x_train/y_train/x_val/y_val (uint8 48x48 and labels) written by
``python -m bench.gpu_data`` from the canonical dataset: the train split only,
divided 90/10 stratified with seed 12, so that selection never sees the test split.
Each command appends one JSON line per result to ``FER_GPU_RESULTS`` and stops
training at the end of the epoch that passes ``FER_GPU_DEADLINE`` (Unix time).
"""

from __future__ import annotations

import io
import json
import lzma
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from fer_pipeline.classes import CLASSES  # noqa: E402
from fer_pipeline.config import TrainConfig  # noqa: E402
from fer_pipeline.model import build_model, unfreeze_backbone, with_flip_tta  # noqa: E402
from fer_pipeline.optim import SparseCrossentropy, learning_rate_for  # noqa: E402
from fer_pipeline.presets import PRESETS  # noqa: E402

RESULTS = Path(os.environ.get("FER_GPU_RESULTS", "gpu-results.jsonl"))
DEADLINE = float(os.environ.get("FER_GPU_DEADLINE", "inf"))
EPOCH_SCALE = float(os.environ.get("FER_GPU_EPOCH_SCALE", "1"))  # < 1: shorter budgets, same shape

# The compact recipe candidates: overrides of the cpu preset (its validation split is 10% too).
# Epoch budgets are what each can run in about 90 minutes on the 2-core CPU (docs/model-quality.md).
COMPACT_BASE = TrainConfig(**{k: v for k, v in PRESETS["cpu"].items() if k in TrainConfig.__dataclass_fields__})
CANDIDATES = {
    "base": {},
    "no_class_weights": {"class_weighting": False},
    "balanced_class_weights": {"class_weight_power": 1.0},
    "flatten_head": {"head_pooling": "flatten", "frozen_lr": 3e-4},
    "seed_augmentation": {"rotation": 0.0, "zoom": 0.0},
    "erasing": {"erasing": 0.25},
    "no_smoothing": {"label_smoothing": 0.0},
    "plateau": {"schedule": "plateau", "early_stopping_patience": 3},
    "deeper": {"compact_widths": (32, 64, 128, 256, 256)},
    "narrow_longer": {"compact_widths": (16, 32, 64, 128), "frozen_epochs": 60, "finetune_epochs": 8},
    # About the same CPU time, spent differently (FLOPs per image relative to base in brackets):
    "run2_widths": {"compact_widths": (32, 64, 128, 256), "frozen_epochs": 36},  # (1.22) run 2's network
    "wide_top": {"compact_widths": (16, 64, 128, 384), "frozen_epochs": 32},  # (1.33) more late capacity
    "faster_lr": {"frozen_lr": 2e-3},  # (1.0)
}


def load_data(path: str | None = None) -> dict[str, np.ndarray]:
    path = path or os.environ.get("FER_GPU_DATA", ".gpu/fer-trainval.npz.xz")
    with np.load(io.BytesIO(lzma.decompress(Path(path).read_bytes()))) as data:
        arrays = {name: data[name] for name in data.files}
    for name in list(arrays):
        if name.startswith("x_"):
            arrays[name] = arrays[name][..., np.newaxis].astype("float32")
    return arrays


class Deadline(keras.callbacks.Callback):
    """Stop at the end of the epoch that passes DEADLINE, and say so in the results."""

    hit = False

    def on_epoch_end(self, epoch, logs=None):
        if time.time() > DEADLINE:
            Deadline.hit = True
            self.model.stop_training = True


def record(**values) -> None:
    line = json.dumps(values, default=float)
    print(line, flush=True)
    with RESULTS.open("a") as out:
        out.write(line + "\n")


def compile_for(model, cfg: TrainConfig, rate: float, epochs: int, n_train: int, steps_per_execution: int = 1) -> None:
    steps = -(-n_train // cfg.batch_size)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate_for(cfg, rate, epochs, steps)),
        loss=SparseCrossentropy(label_smoothing=cfg.label_smoothing),
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )


def callbacks_for(cfg: TrainConfig) -> list:
    callbacks = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.early_stopping_patience,
                                               restore_best_weights=True), Deadline()]
    if cfg.schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=cfg.reduce_lr_factor,
                                                           patience=cfg.reduce_lr_patience, min_lr=cfg.min_lr))
    return callbacks


def class_sample_weights(labels: np.ndarray, power: float) -> np.ndarray:
    """Each image's loss weight: the balanced weight of its class, to ``power`` (as train.phase_data)."""
    counts = np.bincount(labels, minlength=len(CLASSES))
    return ((len(labels) / (len(CLASSES) * counts)) ** power)[labels].astype("float32")


def train_two_phases(cfg: TrainConfig, data: dict) -> dict:
    """Both phases as the library runs them; returns the validation scores and times."""
    keras.utils.set_random_seed(cfg.seed)
    x, y, xv, yv = data["x_train"], data["y_train"], data["x_val"], data["y_val"]
    weights = class_sample_weights(y, cfg.class_weight_power) if cfg.class_weighting else None
    model = build_model(cfg)
    phases = {}
    for phase, epochs, rate in (("frozen", cfg.frozen_epochs, cfg.frozen_lr), ("finetune", cfg.finetune_epochs, cfg.finetune_lr)):
        if phase == "finetune":
            unfreeze_backbone(model, cfg.unfreeze_from, freeze_batchnorm=cfg.pretrained)
        if epochs == 0 or Deadline.hit:
            continue
        compile_for(model, cfg, rate, epochs, len(y))
        start = time.time()
        history = model.fit(x, y, sample_weight=weights, batch_size=cfg.batch_size, epochs=epochs,
                            validation_data=(xv, yv), callbacks=callbacks_for(cfg), verbose=2)
        phases[phase] = {"seconds": round(time.time() - start, 1), "epochs": len(history.history["loss"]),
                         "val_accuracy": [round(v, 4) for v in history.history["val_accuracy"]]}
    return {"phases": phases, **validation_scores(model, xv, yv)}


def validation_scores(model, xv, yv) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    plain = model.predict(xv, batch_size=512, verbose=0).argmax(1)
    tta = with_flip_tta(model).predict(xv, batch_size=512, verbose=0).argmax(1)
    return {
        "val_accuracy": round(accuracy_score(yv, plain), 4),
        "val_macro_f1": round(f1_score(yv, plain, average="macro"), 4),
        "val_accuracy_tta": round(accuracy_score(yv, tta), 4),
        "val_macro_f1_tta": round(f1_score(yv, tta, average="macro"), 4),
        "deadline_hit": Deadline.hit,
    }


def images_per_second(model, cfg: TrainConfig, rate: float, steps: int = 30, steps_per_execution: int = 1) -> float:
    batch = cfg.batch_size
    x = np.random.default_rng(0).uniform(0, 255, (batch * steps, 48, 48, 1)).astype("float32")
    y = np.random.default_rng(1).integers(0, 7, batch * steps)
    compile_for(model, cfg, rate, 1, len(y), steps_per_execution)
    model.fit(x[: batch * 3], y[: batch * 3], batch_size=batch, epochs=1, verbose=0)  # compile
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
    return len(y) / (time.perf_counter() - start)


def throughput(backbones: list[str]) -> None:
    """Training images/s of each backbone in ``backbones`` (default both), frozen then unfrozen."""
    import jax

    record(kind="devices", backend=keras.backend.backend(), devices=[str(d) for d in jax.devices()])
    configs = {"densenet169": TrainConfig(weights="none"), "compact": COMPACT_BASE}
    for name in backbones or list(configs):
        cfg = configs[name]
        model = build_model(cfg)
        frozen = images_per_second(model, cfg, cfg.frozen_lr)
        unfreeze_backbone(model, "", freeze_batchnorm=cfg.pretrained)
        tuned = images_per_second(model, cfg, cfg.finetune_lr)
        record(kind="throughput", backbone=name, batch=cfg.batch_size, frozen_img_s=round(frozen),
               finetune_img_s=round(tuned))


def probe() -> None:
    """Where the compact step's time goes: the same network with less augmentation, and more steps per call."""
    import jax

    record(kind="devices", backend=keras.backend.backend(), devices=[str(d) for d in jax.devices()])
    plain = replace(COMPACT_BASE, rotation=0.0, zoom=0.0)
    variants = {
        "preset": (COMPACT_BASE, 1),
        "no rotation/zoom": (plain, 1),
        "no augmentation": (replace(plain, horizontal_flip=False, width_shift=0.0, height_shift=0.0), 1),
        "preset, 32 steps per execution": (COMPACT_BASE, 32),
    }
    for name, (cfg, steps_per_execution) in variants.items():
        model = build_model(cfg)
        rate = images_per_second(model, cfg, cfg.frozen_lr, steps_per_execution=steps_per_execution)
        record(kind="probe", variant=name, batch=cfg.batch_size, img_s=round(rate))


def sweep(names: list[str]) -> None:
    data = load_data()
    for name in names:
        cfg = replace(COMPACT_BASE, **CANDIDATES[name])
        cfg = replace(cfg, frozen_epochs=max(1, round(cfg.frozen_epochs * EPOCH_SCALE)),
                      finetune_epochs=max(1, round(cfg.finetune_epochs * EPOCH_SCALE)))
        start = time.time()
        result = train_two_phases(cfg, data)
        record(kind="sweep", name=name, seconds=round(time.time() - start, 1), overrides=CANDIDATES[name],
               epochs=[cfg.frozen_epochs, cfg.finetune_epochs], **result)


def densenet() -> None:
    """The seed's full two-phase schedule (20 + 10 epochs, early stopping), from random weights."""
    data = load_data()
    cfg = TrainConfig(weights="none")
    start = time.time()
    result = train_two_phases(cfg, data)
    record(kind="densenet", seconds=round(time.time() - start, 1), config="TrainConfig(weights='none')",
           train_images=len(data["y_train"]), **result)


if __name__ == "__main__":
    command, *rest = sys.argv[1:] or ["throughput"]
    {"throughput": lambda: throughput(rest), "sweep": lambda: sweep(rest or list(CANDIDATES)), "densenet": densenet,
     "probe": probe}[command]()
