"""GPU measurements with Keras 3 on JAX, for a GPU machine that has no TensorFlow.

The model, the loss and the schedule are the library's own (``fer_pipeline.model`` and
``fer_pipeline.optim`` use Keras and ``keras.ops`` only); the input is in-memory NumPy
instead of tf.data. Training augmentation is not: Keras' random augmentation layers hold
a JAX step to 1% of the card (``probe``), so ``sweep`` builds the model without them and
augments each epoch's images on the device instead (``jax_augmenter``: the same flip,
shift, rotation and zoom ranges, bilinear sampling, edge pixels repeated).

    python bench/gpu.py throughput [compact]     # DenseNet169 and/or compact images/s, both phases
    python bench/gpu.py sweep NAME[@SEED] ...    # compact-backbone recipe candidates (validation only)
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
from fer_pipeline.split import balanced_class_weights  # noqa: E402

RESULTS = Path(os.environ.get("FER_GPU_RESULTS", "gpu-results.jsonl"))
DEADLINE = float(os.environ.get("FER_GPU_DEADLINE", "inf"))
EPOCH_SCALE = float(os.environ.get("FER_GPU_EPOCH_SCALE", "1"))  # < 1: shorter budgets, same shape

AUGMENTATION_OFF = {"horizontal_flip": False, "width_shift": 0.0, "height_shift": 0.0, "rotation": 0.0, "zoom": 0.0}

# The compact recipe candidates: one change each to the cpu preset (its validation split is 10% too).
COMPACT_BASE = TrainConfig(**{k: v for k, v in PRESETS["cpu"].items() if k in TrainConfig.__dataclass_fields__})
CANDIDATES = {
    "base": {},
    "no_class_weights": {"class_weighting": False},
    "balanced_class_weights": {"class_weight_power": 1.0},
    "flatten_head": {"head_pooling": "flatten", "frozen_lr": 3e-4},
    "rotation_zoom": {"rotation": 0.03, "zoom": 0.1},  # run 3's augmentation (the sweep's base before ebea084)
    "no_augmentation": AUGMENTATION_OFF,
    "no_smoothing": {"label_smoothing": 0.0},
    "plateau": {"schedule": "plateau", "early_stopping_patience": 3},
    "finetune_2": {"frozen_epochs": 46, "finetune_epochs": 2},  # run 3's split of the budget
    # About the same CPU time, spent differently (FLOPs per image relative to base in brackets):
    "run2_widths": {"compact_widths": (32, 64, 128, 256), "frozen_epochs": 39},  # (1.22) run 2's network
    "wide_top": {"compact_widths": (16, 64, 128, 384), "frozen_epochs": 36},  # (1.33) more late capacity
    "faster_lr": {"frozen_lr": 2e-3},  # (1.0)
    # (2.0) what a 4-hour CPU budget would buy; patience 10 stopped it at epoch 40 of 96 (docs/model-quality.md)
    "double_epochs": {"frozen_epochs": 96, "early_stopping_patience": 20},
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
    """Each image's loss weight: the split's balanced weight of its class, to ``power`` (as train.phase_data)."""
    counts = np.bincount(labels, minlength=len(CLASSES))
    weights = balanced_class_weights({name: int(count) for name, count in zip(CLASSES, counts)})
    return (np.array([weights[name] for name in CLASSES], dtype=np.float32) ** power)[labels]


def jax_augmenter(cfg: TrainConfig):
    """``augment(images, seed)``: ``cfg``'s flip, shift, rotation and zoom on the device.

    The ranges are those of the model's Keras layers (``fer_pipeline.model._augment``):
    mirror with probability 1/2, shifts up to ``width_shift`` / ``height_shift`` of the
    side, rotation up to ``rotation`` of a full turn, scale 1 +- ``zoom``; one affine map
    per image, sampled bilinearly with the edge pixels repeated (Keras' "nearest" fill).
    """
    if cfg.erasing > 0:
        raise ValueError("bench/gpu.py has no device-side random erasing; leave erasing at 0 here.")
    import jax
    import jax.numpy as jnp
    from jax.scipy.ndimage import map_coordinates

    def one(key, image):  # image (H, W, 1)
        h, w = image.shape[:2]
        k_flip, k_shift, k_turn, k_zoom = jax.random.split(key, 4)
        flip = cfg.horizontal_flip & (jax.random.uniform(k_flip) < 0.5)
        ty, tx = jax.random.uniform(k_shift, (2,), minval=-1.0, maxval=1.0) * jnp.array(
            [cfg.height_shift * h, cfg.width_shift * w])
        angle = jax.random.uniform(k_turn, minval=-1.0, maxval=1.0) * cfg.rotation * 2 * jnp.pi
        scale = 1.0 + jax.random.uniform(k_zoom, minval=-1.0, maxval=1.0) * cfg.zoom
        # Each output pixel reads the input where the inverse map sends it: centre, rotate, scale, shift, mirror.
        yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
        cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
        y0, x0 = yy - cy, xx - cx
        cos, sin = jnp.cos(angle), jnp.sin(angle)
        sy = (cos * y0 - sin * x0) * scale + cy - ty
        sx = (sin * y0 + cos * x0) * scale + cx - tx
        sx = jnp.where(flip, (w - 1) - sx, sx)
        return map_coordinates(image[..., 0], [sy, sx], order=1, mode="nearest")[..., None]

    batched = jax.jit(jax.vmap(one))

    def augment(images: np.ndarray, seed: int, chunk: int = 8192) -> np.ndarray:
        keys = jax.random.split(jax.random.PRNGKey(seed), len(images))
        return np.concatenate([np.asarray(batched(keys[i:i + chunk], images[i:i + chunk]))
                               for i in range(0, len(images), chunk)])

    return augment


class AugmentedEpochs(keras.utils.PyDataset):
    """Training batches of a freshly shuffled, device-augmented copy of the images each epoch."""

    def __init__(self, x, y, weights, batch_size: int, augment, seed: int):
        super().__init__()
        self.x, self.y, self.weights, self.batch_size, self.augment, self.seed = x, y, weights, batch_size, augment, seed
        self.epoch = 0
        self._prepare()

    def _prepare(self) -> None:
        order = np.random.default_rng(self.seed + self.epoch).permutation(len(self.y))
        self.x_epoch = self.augment(self.x[order], self.seed + self.epoch)
        self.y_epoch = self.y[order]
        self.w_epoch = None if self.weights is None else self.weights[order]

    def __len__(self) -> int:
        return -(-len(self.y) // self.batch_size)

    def __getitem__(self, index: int):
        batch = slice(index * self.batch_size, (index + 1) * self.batch_size)
        if self.w_epoch is None:
            return self.x_epoch[batch], self.y_epoch[batch]
        return self.x_epoch[batch], self.y_epoch[batch], self.w_epoch[batch]

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._prepare()


def train_two_phases(cfg: TrainConfig, data: dict) -> dict:
    """Both phases as the library runs them, augmenting on the device; returns validation scores and times."""
    keras.utils.set_random_seed(cfg.seed)
    x, y, xv, yv = data["x_train"], data["y_train"], data["x_val"], data["y_val"]
    weights = class_sample_weights(y, cfg.class_weight_power) if cfg.class_weighting else None
    batches = AugmentedEpochs(x, y, weights, cfg.batch_size, jax_augmenter(cfg), cfg.seed)
    model = build_model(replace(cfg, **AUGMENTATION_OFF))  # same weights; augmentation is the input's
    phases = {}
    for phase, epochs, rate in (("frozen", cfg.frozen_epochs, cfg.frozen_lr), ("finetune", cfg.finetune_epochs, cfg.finetune_lr)):
        if phase == "finetune":
            unfreeze_backbone(model, cfg.unfreeze_from, freeze_batchnorm=cfg.pretrained)
        if epochs == 0 or Deadline.hit:
            continue
        compile_for(model, cfg, rate, epochs, len(y))
        start = time.time()
        history = model.fit(batches, epochs=epochs, validation_data=(xv, yv), callbacks=callbacks_for(cfg),
                            verbose=2)
        val_loss = history.history["val_loss"]
        phases[phase] = {"seconds": round(time.time() - start, 1), "epochs": len(history.history["loss"]),
                         "best_epoch": int(np.argmin(val_loss)) + 1,
                         "val_accuracy": [round(v, 4) for v in history.history["val_accuracy"]]}
    return {"phases": phases, **validation_scores(model, xv, yv)}


def validation_scores(model, xv, yv) -> dict:
    """Accuracy and macro-F1 on validation with 1, 2 (mirror) and 10 (mirror, 1-pixel shifts) views."""
    from sklearn.metrics import accuracy_score, f1_score

    scores = {}
    for suffix, scored in (("", model), ("_tta", with_flip_tta(model)), ("_tta10", with_flip_tta(model, shift=1))):
        predicted = scored.predict(xv, batch_size=512, verbose=0).argmax(1)
        scores[f"val_accuracy{suffix}"] = round(accuracy_score(yv, predicted), 4)
        scores[f"val_macro_f1{suffix}"] = round(f1_score(yv, predicted, average="macro"), 4)
    return {**scores, "deadline_hit": Deadline.hit}


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
    """Train each candidate ``NAME`` or ``NAME@SEED`` (default seed: the preset's) and record its scores."""
    data = load_data()
    for entry in names:
        name, _, seed = entry.partition("@")
        cfg = replace(COMPACT_BASE, **CANDIDATES[name], **({"seed": int(seed)} if seed else {}))
        cfg = replace(cfg, frozen_epochs=max(1, round(cfg.frozen_epochs * EPOCH_SCALE)),
                      finetune_epochs=round(cfg.finetune_epochs * EPOCH_SCALE))
        start = time.time()
        result = train_two_phases(cfg, data)
        record(kind="sweep", name=name, seed=cfg.seed, seconds=round(time.time() - start, 1),
               overrides=CANDIDATES[name], epochs=[cfg.frozen_epochs, cfg.finetune_epochs], **result)


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
