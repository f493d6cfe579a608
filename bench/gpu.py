"""GPU measurements with Keras 3 on JAX, for a GPU machine that has no TensorFlow.

The same commands run on CPUs with ``KERAS_BACKEND=tensorflow`` (the sweep on two cores:
docs/model-quality.md, "On two CPU cores"), where ``precision=auto`` picks bfloat16 on
CPUs that have it; each phase's record says which dtype policy it trained in.

Training is the library's own: ``fer_pipeline.trainer`` (phase loop, callbacks, class
weights, schedule) with ``fer_pipeline.feed_numpy.NumpyFeed``, which augments each
epoch's images on the device (Keras' random augmentation layers hold a JAX step to 1%
of the card: ``probe``). What is here is only what the benchmark adds: its data file,
its deadline, its candidates and its records.

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
training at the end of the epoch that passes ``FER_GPU_DEADLINE`` (Unix time). A sweep
record also scores averages of the run's own weights beside the ones early stopping
restored (``phases.frozen.weight_averages``: per-step EMAs, uniform averages of the last
epochs; ``WeightAverages``), a paired comparison that one run answers.
"""

from __future__ import annotations

import io
import json
import lzma
import os
import sys
import tempfile
import time
from collections import deque
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import accuracy_score, f1_score  # noqa: E402

from fer_pipeline import trainer  # noqa: E402
from fer_pipeline.classes import CLASSES  # noqa: E402
from fer_pipeline.config import SplitConfig, TrainConfig  # noqa: E402
from fer_pipeline.dataset import FerDataset  # noqa: E402
from fer_pipeline.feed_numpy import AUGMENTATION_OFF, NumpyFeed  # noqa: E402
from fer_pipeline.model import build_model, unfreeze_backbone, with_flip_tta  # noqa: E402
from fer_pipeline.optim import learning_rate_for  # noqa: E402
from fer_pipeline.recipe import resolve  # noqa: E402
from fer_pipeline.split import Split, balanced_class_weights  # noqa: E402
from fer_pipeline.weight_average import mean_weights  # noqa: E402

TTA_CROP = 0.8  # side of the ten-crop views scored for every candidate: the anchors' crop_scale low end
RESULTS = Path(os.environ.get("FER_GPU_RESULTS", "gpu-results.jsonl"))
DEADLINE = float(os.environ.get("FER_GPU_DEADLINE", "inf"))
# Where sweeps keep their trained networks (unset: not kept)
MODELS = Path(os.environ["FER_GPU_MODELS"]) if os.environ.get("FER_GPU_MODELS") else None
EPOCH_SCALE = float(os.environ.get("FER_GPU_EPOCH_SCALE", "1"))  # < 1: shorter budgets, same shape
# Weight averages scored beside every sweep run (WeightAverages): per-step EMA decays (0.999: about the
# last 1,000 steps, 5 of the preset's epochs; 0.9998: about 25 epochs) and uniform tails of epoch ends.
EMA_DECAYS = (0.999, 0.9998)
SWA_EPOCHS = (5, 10, 20)

CROP = {"crop_scale": (0.8, 1.2)}  # the FER anchors' random resized crop
# and the rest of their augmentation: shifts of 20%, rotation of 10 degrees, random erasing 0.5
ANCHOR_AUGMENTATION = {"width_shift": 0.2, "height_shift": 0.2, "rotation": 10 / 360, "erasing": 0.5}
ADAMW = {"optimizer": "adamw", "weight_decay": 0.05}
# The VGG anchor's Nesterov SGD at 0.01 with its decay 1e-4 as Keras' decoupled decay reads PyTorch's
# (1e-4 through momentum 0.9: about 1e-3 here)
SGD_DECAY = {"optimizer": "sgd", "frozen_lr": 0.01, "weight_decay": 1e-3}  # x the preset's 1e-3: a 5e-5 shrink per step
# Issue 24, item 4: the epochs bfloat16's 1.44x faster step buys in the preset's 100 minutes (48 x 1.44);
# patience 20 so that early stopping seldom ends a cosine run mid-schedule (run 6: it did, at epoch 56).
BF16_EPOCHS = {"frozen_epochs": 69, "early_stopping_patience": 20}
# The whole cosine schedule always runs; the kept epoch is still the lowest validation loss.
NO_STOP = {"early_stopping_patience": BF16_EPOCHS["frozen_epochs"]}
# run 4's preset with these changes was run 9's: crop, 69 epochs to the end, the last 20's mean
RUN9_PRESET = {**CROP, **BF16_EPOCHS, **NO_STOP, "average_last_epochs": 20}
# The current one (run 10) spends on 100 epochs the time one training iterator per phase saved
# (45 s epochs instead of 71 s on the AMD host; docs/benchmarks.md), still to the end of the schedule.
CURRENT_PRESET = {**RUN9_PRESET, "frozen_epochs": 100, "early_stopping_patience": 100}
# The compact recipe candidates: one change each to run 4's cpu preset (its validation split is 10% too),
# the base every row of docs/model-quality.md's sweeps was measured against; the current preset adds the
# crop and the bfloat16 epochs to it (the candidate `crop_epochs_69`).
# The sweep's WeightAverages scores the means of the last epochs beside the restored weights of every
# candidate, so the base keeps run 4's ending too (the best epoch), not the preset's average_last_epochs.
# Every candidate holds its validation images out (train_on_validation off): they are what it is scored on;
# and runs its whole schedule (no time budget), so that candidates compare at equal epochs on any host.
RUN4_PRESET = {
    "crop_scale": (1.0, 1.0),
    "frozen_epochs": 48,
    "early_stopping_patience": 10,
    "average_last_epochs": 0,
    "train_on_validation": False,
    "time_budget_minutes": 0,
}
COMPACT_BASE = replace(resolve("cpu").train, **RUN4_PRESET)
CANDIDATES = {
    "base": {},
    "no_class_weights": {"class_weighting": False},
    "balanced_class_weights": {"class_weight_power": 1.0},
    "flatten_head": {"head_pooling": "flatten", "frozen_lr": 3e-4},
    "rotation_zoom": {"rotation": 0.03, "zoom": 0.1},  # run 3's augmentation
    # Issue 24: the FER anchors' random resized crop, one resampling with the flip and shift; their random erasing
    # 0.5 alone; then their whole set (with shifts 20% and rotation 10 degrees).
    "crop": CROP,
    "erasing": {"erasing": 0.5},
    "anchor_augmentation": {**CROP, **ANCHOR_AUGMENTATION},
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
    # Issue 24's anchors (sgd, adamw, mixup and cutmix measured on two CPU cores, docs/model-quality.md). SGD: the
    # VGG anchor's decay 1e-4 taken literally, and as SGD_DECAY's 1e-3.
    "sgd": {"optimizer": "sgd", "frozen_lr": 0.01, "weight_decay": 1e-4},
    "sgd_decay_1e-3": SGD_DECAY,
    "adamw": ADAMW,
    "mixup": {"mix": "mixup", "mix_alpha": 1.0},
    "mixup_alpha_0.2": {"mix": "mixup", "mix_alpha": 0.2},  # milder: most batches near one image
    "cutmix": {"mix": "cutmix", "mix_alpha": 1.0},
    "epochs_69": BF16_EPOCHS,
    "crop_epochs_69": {**CROP, **BF16_EPOCHS},
    # AdamW beat run 4's preset by about as much as the crop did (2026-12-01): both with the current preset's epochs,
    # the candidate a new preset would be, against crop_epochs_69's row.
    "crop_adamw_epochs_69": {**CROP, **ADAMW, **BF16_EPOCHS},
    # Run 6 (the preset, seed 12) stopped at epoch 56 of 69 and kept epoch 36: the preset without that stop.
    "crop_epochs_69_no_stop": {**CROP, **BF16_EPOCHS, **NO_STOP},
    # The VGG anchor's optimizer on the current preset's schedule (its swa_last_20 is the preset's ending)
    "crop_sgd_epochs_69_no_stop": {**CROP, **BF16_EPOCHS, **NO_STOP, **SGD_DECAY},
    # The current preset's whole training, its ending included (the kept network is the mean of the last 20
    # epochs, as the pipeline registers it).
    "preset": CURRENT_PRESET,
    # Run 9's preset (69 epochs), and the changes measured against it: the milder mixup, and the rest of the
    # anchors' augmentation (20% shifts, 10-degree rotation, erasing 0.5) on its crop.
    "preset_run9": RUN9_PRESET,
    "preset_mixup_0.2": {**RUN9_PRESET, "mix": "mixup", "mix_alpha": 0.2},
    "preset_anchor_augmentation": {**RUN9_PRESET, **ANCHOR_AUGMENTATION},
}


def load_data(path: str | None = None) -> dict[str, np.ndarray]:
    path = path or os.environ.get("FER_GPU_DATA", ".gpu/fer-trainval.npz.xz")
    if not Path(path).is_file():
        raise SystemExit(
            f"{path}: no such data file; write it with `python -m bench.gpu_data DATASET_DIR` "
            "(a `fer-pipeline ingest` output), or name another (FER_GPU_DATA, or --data where a command has it)"
        )
    with np.load(io.BytesIO(lzma.decompress(Path(path).read_bytes()))) as data:
        arrays = {name: data[name] for name in data.files}
    for name in list(arrays):
        if name.startswith("x_"):
            arrays[name] = arrays[name][..., np.newaxis].astype("float32")
    return arrays


class WeightAverages(keras.callbacks.Callback):
    """Averages of one run's weights, scored beside the weights early stopping restored: a
    paired comparison (same seed, same trajectory), free of the seed noise between runs.

    Keeps an exponential moving average per step at each of ``EMA_DECAYS`` and every epoch's
    end weights, whose last ``SWA_EPOCHS`` are averaged uniformly (stochastic weight
    averaging over the cosine schedule's tail). BatchNorm's moving statistics are averaged
    like the weights, not re-estimated.
    """

    def on_train_begin(self, logs=None):
        self.ema = {decay: None for decay in EMA_DECAYS}
        self.epoch_ends: deque[list[np.ndarray]] = deque(maxlen=max(SWA_EPOCHS))  # only the tails are averaged

    def on_train_batch_end(self, batch, logs=None):
        weights = self.model.get_weights()
        for decay, average in self.ema.items():
            if average is None:
                self.ema[decay] = [np.array(w, copy=True) for w in weights]
                continue
            for kept, new in zip(average, weights):
                if np.issubdtype(kept.dtype, np.floating):
                    kept *= decay
                    kept += (1 - decay) * new

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_ends.append(self.model.get_weights())

    def averages(self) -> dict[str, list[np.ndarray]]:
        found = {f"ema_{decay}": average for decay, average in self.ema.items() if average is not None}
        for n in SWA_EPOCHS:
            if len(self.epoch_ends) >= n:
                tail = list(self.epoch_ends)[-n:]
                found[f"swa_last_{n}"] = mean_weights(tail)  # what average_last_epochs=n trains to
        return found

    def scores(self, xv, yv) -> dict:
        """1- and 10-view validation scores of the restored weights and of each average."""
        restored = self.model.get_weights()
        scored = {"restored": restored, **self.averages()}
        results = {}
        for name, weights in scored.items():
            self.model.set_weights(weights)
            for suffix, views in (("", self.model), ("_tta10", with_flip_tta(self.model, shift=1))):
                predicted = views.predict(xv, batch_size=512, verbose=0).argmax(1)
                results[f"{name}{suffix}"] = {
                    "accuracy": round(accuracy_score(yv, predicted), 4),
                    "macro_f1": round(f1_score(yv, predicted, average="macro"), 4),
                }
        self.model.set_weights(restored)
        return results


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


def as_dataset(data: dict) -> tuple[FerDataset, Split]:
    """The npz's train and validation arrays as the trainer's dataset and split."""
    n_train, n_val = len(data["y_train"]), len(data["y_val"])
    images = np.concatenate([data["x_train"], data["x_val"]])[..., 0].astype("uint8")
    labels = np.concatenate([data["y_train"], data["y_val"]]).astype("int64")
    dataset = FerDataset(
        images=images,
        labels=labels,
        splits=np.array(["train"] * (n_train + n_val)),
        source_splits=np.array(["Training"] * (n_train + n_val)),
        keys=np.array([f"gpu-{i}" for i in range(n_train + n_val)]),
    )
    counts = lambda y: {name: int(c) for name, c in zip(CLASSES, np.bincount(y, minlength=len(CLASSES)))}  # noqa: E731
    split = Split(
        np.arange(n_train),
        np.arange(n_train, n_train + n_val),
        counts(data["y_train"]),
        counts(data["y_val"]),
        balanced_class_weights(counts(data["y_train"])),
        SplitConfig(val_fraction=0.1),
    )
    return dataset, split


def train_two_phases(cfg: TrainConfig, data: dict, save_to: Path | None = None) -> dict:
    """Both phases through the library's trainer, on the NumPy feed; returns validation scores and times.
    With ``save_to``, also keeps the trained network there (for test-time comparisons without retraining)."""
    dataset, split = as_dataset(data)
    # the scores below wrap the bare network in their views themselves
    cfg = replace(cfg, tta=False, tta_shift=0, tta_crops=0.0)
    feed, phases, averages = NumpyFeed(), {}, WeightAverages()
    with tempfile.TemporaryDirectory() as out:
        result = trainer.train_frozen(
            dataset, split, cfg, Path(out) / "frozen", feed=feed, extra_callbacks=(Deadline(), averages)
        )
        phases["frozen"] = phase_summary(result)
        phases["frozen"]["weight_averages"] = averages.scores(data["x_val"], data["y_val"])
        if cfg.finetune_epochs > 0 and not Deadline.hit:
            result = trainer.fine_tune(
                result.model_path, dataset, split, cfg, Path(out) / "finetune", feed=feed, extra_callbacks=(Deadline(),)
            )
            phases["finetune"] = phase_summary(result)
        model = result.model
    if save_to is not None:
        save_to.parent.mkdir(parents=True, exist_ok=True)
        model.save(save_to)
    return {"phases": phases, **validation_scores(model, data["x_val"], data["y_val"])}


def phase_summary(result: trainer.PhaseResult) -> dict:
    return {
        "dtype_policy": result.model.dtype_policy.name,  # what precision=auto chose on this machine
        "seconds": round(result.seconds, 1),
        "epochs": result.epochs_run,
        "best_epoch": result.best_epoch,
        "val_accuracy": [round(v, 4) for v in result.history.get("val_accuracy", [])],
    }


def validation_scores(model, xv, yv) -> dict:
    """Accuracy and macro-F1 on validation with 1, 2 (mirror), 10 (mirror, 1-pixel shifts), 10
    (mirror, ten-crop of side TTA_CROP) and 20 (both sets) views."""
    scores = {}
    views = (
        ("", model),
        ("_tta", with_flip_tta(model)),
        ("_tta10", with_flip_tta(model, shift=1)),
        ("_tta_crops", with_flip_tta(model, crop=TTA_CROP)),
        ("_tta20", with_flip_tta(model, shift=1, crop=TTA_CROP)),  # both ten-view sets: paired on the same weights
    )
    for suffix, scored in views:
        predicted = scored.predict(xv, batch_size=512, verbose=0).argmax(1)
        scores[f"val_accuracy{suffix}"] = round(accuracy_score(yv, predicted), 4)
        scores[f"val_macro_f1{suffix}"] = round(f1_score(yv, predicted, average="macro"), 4)
    return {**scores, "tta_crop": TTA_CROP, "deadline_hit": Deadline.hit}


def images_per_second(model, cfg: TrainConfig, rate: float, steps: int = 30, steps_per_execution: int = 1) -> float:
    batch = cfg.batch_size
    x = np.random.default_rng(0).uniform(0, 255, (batch * steps, 48, 48, 1)).astype("float32")
    y = np.random.default_rng(1).integers(0, 7, batch * steps)
    schedule = learning_rate_for(cfg, rate, 1, steps)
    compiled = trainer.compile_model(model, cfg, schedule, steps_per_execution=steps_per_execution).trainable
    compiled.fit(x[: batch * 3], y[: batch * 3], batch_size=batch, epochs=1, verbose=0)  # compile
    start = time.perf_counter()
    compiled.fit(x, y, batch_size=batch, epochs=1, verbose=0)
    return len(y) / (time.perf_counter() - start)


def throughput(backbones: list[str]) -> None:
    """Training images/s of each backbone in ``backbones`` (default both), frozen then unfrozen."""
    import jax

    record(kind="devices", backend=keras.backend.backend(), devices=[str(d) for d in jax.devices()])
    configs = {"densenet169": TrainConfig(weights="none"), "compact": COMPACT_BASE}  # with the layers' augmentation
    for name in backbones or list(configs):
        cfg = configs[name]
        model = build_model(cfg)
        frozen = images_per_second(model, cfg, cfg.frozen_lr)
        unfreeze_backbone(model, "", freeze_batchnorm=cfg.pretrained)
        tuned = images_per_second(model, cfg, cfg.finetune_lr)
        record(
            kind="throughput",
            backbone=name,
            batch=cfg.batch_size,
            frozen_img_s=round(frozen),
            finetune_img_s=round(tuned),
        )


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


def sweep_entries(names: list[str]) -> list[tuple[str, int | None]]:
    """Each ``NAME`` or ``NAME@SEED`` as (name, seed or None), all checked before anything
    trains: a typo in the last of several candidates would otherwise end hours of training."""
    entries = []
    for entry in names:
        name, _, seed = entry.partition("@")
        if name not in CANDIDATES:
            raise SystemExit(f"unknown sweep candidate {name!r}; choose from: {', '.join(CANDIDATES)}")
        if seed and not seed.isdigit():
            raise SystemExit(f"{entry!r}: the seed after @ must be a whole number, e.g. {name}@13")
        entries.append((name, int(seed) if seed else None))
    return entries


def sweep(names: list[str]) -> None:
    """Train each candidate ``NAME`` or ``NAME@SEED`` (default seed: the preset's) and record its scores."""
    entries = sweep_entries(names)
    data = load_data()
    for name, seed in entries:
        cfg = replace(COMPACT_BASE, **CANDIDATES[name], **({"seed": seed} if seed is not None else {}))
        cfg = replace(
            cfg,
            frozen_epochs=max(1, round(cfg.frozen_epochs * EPOCH_SCALE)),
            finetune_epochs=round(cfg.finetune_epochs * EPOCH_SCALE),
        )
        start = time.time()
        result = train_two_phases(cfg, data, save_to=MODELS / f"{name}@{cfg.seed}.keras" if MODELS else None)
        record(
            kind="sweep",
            name=name,
            seed=cfg.seed,
            seconds=round(time.time() - start, 1),
            overrides=CANDIDATES[name],
            epochs=[cfg.frozen_epochs, cfg.finetune_epochs],
            **result,
        )


def densenet() -> None:
    """The seed's full two-phase schedule (20 + 10 epochs, early stopping), from random weights."""
    data = load_data()
    cfg = TrainConfig(weights="none")
    start = time.time()
    result = train_two_phases(cfg, data)
    record(
        kind="densenet",
        seconds=round(time.time() - start, 1),
        config="TrainConfig(weights='none')",
        train_images=len(data["y_train"]),
        **result,
    )


if __name__ == "__main__":
    command, *rest = sys.argv[1:] or ["throughput"]
    commands = {
        "throughput": lambda: throughput(rest),
        "sweep": lambda: sweep(rest or list(CANDIDATES)),
        "densenet": densenet,
        "probe": probe,
    }
    if command not in commands:
        raise SystemExit(f"unknown command {command!r}; choose from: {', '.join(commands)}")
    commands[command]()
