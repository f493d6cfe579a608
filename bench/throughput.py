"""Training throughput of both phases: the project's pipeline against a seed-style baseline.

    .venv/bin/python -m bench.throughput                       # both phases, real FER-2013 zip
    .venv/bin/python -m bench.throughput --phases frozen --rounds 2 --no-append

What is timed, per phase (frozen backbone, then fine-tuning with the backbone unfrozen
and BatchNorm frozen), with the same DenseNet169 + head, the same batch, in one process:

- **baseline**: the seed project's input pipeline as its users write it, in tf-keras
  (Keras 2, which still has ImageDataGenerator):
  ``ImageDataGenerator(horizontal_flip, width/height shift, DenseNet preprocess_input)
  .flow_from_directory`` over the zip's extracted ``train/`` folder, feeding ``fit`` with
  ``class_weight``;
- **project**: ``fer_pipeline``'s own path: ``build_model`` / ``unfreeze_backbone``,
  ``trainer.compile_model`` and ``tf_data.make_dataset`` over the in-memory canonical
  dataset (the real train split), class weights as sample weights;
- **project, synthetic batch**: the same compiled model fed one in-memory batch over and
  over: its step time is the model's alone, so the gap to "project" is what the input
  pipeline costs (none, when tf.data keeps up);
- **project, PRECISION** (``--precision``, e.g. ``auto``): the project under that dtype policy;
- **project, feature cache** (``--cache N``, frozen phase of DenseNet169): phase 1 as
  ``frozen_feature_cache=N`` runs it, under ``--precision``: the backbone's features of N
  augmented views of each image once (``feature_cache.FeatureCache.features``), then the
  head alone each epoch. Its two parts are timed apart in each round and folded into the
  training images/s of a whole phase of ``frozen_epochs`` epochs (``phase_rate``), the
  quantity that compares with the other rows' (validation passes, which the cache also
  saves, are left out of every row).

``--cpu-isa AVX512_CORE`` (or ``AVX2``) runs the whole benchmark as on an older CPU:
oneDNN's kernels are capped there (``ONEDNN_MAX_CPU_ISA``) and ``precision=auto`` is shown
the CPU flags without the extensions above it, so it decides as it would on such a CPU.

The machine is shared, so the three are interleaved in rounds (after a warm-up fit
call each that pays for tracing), and a float32 matmul probe runs right before and
after every timed window: "share of matmul" divides the window's model FLOP rate
(profiler FLOPs per image x images/s) by the mean of its two probes, so that a load
that slows the window slows its yardstick too. Throughput is images over the timed
steps of each fit call (its first ``--warmup`` steps excluded); the table shows
medians over rounds. Weights are random ("none"): the ImageNet download is not reachable here, and
weights do not change the arithmetic.

Needs tf-keras for the baseline (a benchmark-only dependency; see the message below).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from bench._common import (
    DEFAULT_ZIP,
    append_section,
    forward_flops,
    load_average,
    markdown_table,
    matmul_gflops,
    median,
    training_flops,
)
from bench.timing import Timer, keras3_timer, tf_keras_timer

log = logging.getLogger("bench.throughput")

TF_KERAS_PIN = "tf-keras==2.21.0"  # matches tensorflow(-cpu) 2.21; installed without its deps
PHASES = ("frozen", "finetune")


def require_tf_keras():
    """Import tf_keras, or exit with how to install it."""
    try:
        import tf_keras
    except ImportError:
        sys.exit(
            "bench.throughput needs tf-keras for the seed-style baseline (Keras 3 has no ImageDataGenerator).\n"
            f"Install it into the virtualenv: .venv/bin/pip install --no-deps {TF_KERAS_PIN}\n"
            "(--no-deps: its only dependency, tensorflow, is already there as tensorflow-cpu.)"
        )
    return tf_keras


# --- the baseline: written as the seed's users write it ----------------------------------


def extract_train_folder(zip_path: Path, into: Path) -> Path:
    """Extract the zip's ``train/`` tree (what flow_from_directory reads) and return it."""
    with zipfile.ZipFile(zip_path) as archive:
        members = [n for n in archive.namelist() if n.startswith("train/")]
        archive.extractall(into, members)
    return into / "train"


class Baseline:
    """tf-keras DenseNet169 + the same head, fed by ImageDataGenerator.flow_from_directory."""

    def __init__(self, train_dir: Path, batch: int, class_weight: dict[int, float], seed: int, tf_keras):
        k = tf_keras
        self.k = k
        generator = k.preprocessing.image.ImageDataGenerator(
            horizontal_flip=True,
            width_shift_range=0.1,
            height_shift_range=0.05,
            preprocessing_function=k.applications.densenet.preprocess_input,
        )
        self.flow = generator.flow_from_directory(
            str(train_dir),
            target_size=(48, 48),
            color_mode="rgb",
            class_mode="categorical",
            batch_size=batch,
            shuffle=True,
            seed=seed,
        )
        self.class_weight = class_weight
        base = k.applications.DenseNet169(include_top=False, weights=None, input_shape=(48, 48, 3))
        base.trainable = False
        inputs = k.Input((48, 48, 3))
        x = base(inputs, training=False)
        x = k.layers.GlobalAveragePooling2D()(x)
        x = k.layers.Dense(256, activation="relu")(x)
        x = k.layers.Dropout(0.4)(x)
        x = k.layers.Dense(512, activation="relu")(x)
        x = k.layers.Dropout(0.5)(x)
        outputs = k.layers.Dense(7, activation="softmax")(x)
        self.base, self.model = base, k.Model(inputs, outputs)
        self.timer = Timer()
        self.compile(1e-4)

    def compile(self, learning_rate: float) -> None:
        self.model.compile(self.k.optimizers.Adam(learning_rate), "categorical_crossentropy", metrics=["accuracy"])

    def unfreeze(self) -> None:
        self.base.trainable = True
        for layer in self.base.layers:
            if isinstance(layer, self.k.layers.BatchNormalization):
                layer.trainable = False
        self.compile(1e-5)

    def run(self, steps: int) -> None:
        self.timer.reset()
        self.model.fit(
            self.flow,
            steps_per_epoch=steps,
            epochs=1,
            class_weight=self.class_weight,
            verbose=0,
            callbacks=[tf_keras_timer(self.timer, self.k)],
        )


# --- the project's pipeline ---------------------------------------------------------------


class Project:
    """The project's model, compile and tf.data pipeline over the in-memory train split."""

    def __init__(self, dataset, data, cfg):
        import tensorflow as tf

        from fer_pipeline import trainer as train
        from fer_pipeline.feed_tf import configure_devices
        from fer_pipeline.model import build_model
        from fer_pipeline.tf_data import make_dataset

        self.cfg = cfg
        configure_devices(cfg)  # sets cfg.precision's dtype policy; the model keeps it
        self.model = build_model(cfg)
        self.train = train
        self.compiled = train.compile_model(self.model, cfg, cfg.frozen_lr)
        images = dataset.images[data.train_indices]
        labels = dataset.labels[data.train_indices]
        self.real = make_dataset(
            images,
            labels,
            cfg.batch_size,
            shuffle=True,
            seed=cfg.seed,
            sample_weights=data.train_sample_weights,
            augment=self.compiled.augment,
        ).repeat()
        first = next(
            iter(
                make_dataset(
                    images[: cfg.batch_size],
                    labels[: cfg.batch_size],
                    cfg.batch_size,
                    shuffle=False,
                    seed=cfg.seed,
                    sample_weights=data.train_sample_weights[: cfg.batch_size],
                    augment=self.compiled.augment,
                )
            )
        )
        self.synthetic = tf.data.Dataset.from_tensors(first).repeat()
        self.timer = Timer()

    def unfreeze(self) -> None:
        from fer_pipeline.model import unfreeze_backbone

        unfreeze_backbone(self.model, self.cfg.unfreeze_from)
        self.compiled = self.train.compile_model(self.model, self.cfg, self.cfg.finetune_lr)

    def run(self, steps: int, synthetic: bool = False) -> None:
        self.timer.reset()
        self.compiled.trainable.fit(
            self.synthetic if synthetic else self.real,
            steps_per_epoch=steps,
            epochs=1,
            verbose=0,
            shuffle=False,
            callbacks=[keras3_timer(self.timer)],
        )


class CachedProject:
    """Phase 1 with the frozen feature cache: the backbone's pooled features once per image
    and view, then the head alone each epoch (``fer_pipeline.feature_cache``)."""

    def __init__(self, dataset, data, cfg, pool: int):
        from fer_pipeline import feature_cache
        from fer_pipeline import trainer as train
        from fer_pipeline.feed_tf import configure_devices
        from fer_pipeline.model import build_model

        configure_devices(cfg)
        self.cfg = cfg
        self.cache = feature_cache.plan(cfg, build_model(cfg), "frozen")
        if self.cache is None:
            sys.exit("bench.throughput: --cache does not apply to this recipe (the warning above says why)")
        self.compiled = train.compile_model(self.cache.head, cfg, cfg.frozen_lr)
        rows = data.train_indices[:pool]
        self.images = dataset.images[rows].astype("float32").reshape(len(rows), *dataset.images.shape[1:3], 1)
        self.labels = dataset.labels[rows].astype("int32")
        weights = data.train_sample_weights
        self.weights = None if weights is None else np.asarray(weights)[:pool]
        self.features = self.cache.features(self.images, view=0, seed=cfg.seed)  # also traces the backbone
        self.timer = CacheTiming(cfg.frozen_epochs, self.cache.views)

    def run(self, steps: int) -> None:
        """``steps`` batches through the backbone (one view), then ``steps`` head steps."""
        batch = self.cfg.batch_size
        n = min(steps * batch, len(self.images))
        start = time.perf_counter()
        self.cache.features(self.images[:n], view=0, seed=self.cfg.seed)
        self.timer.backbone_rate = n / (time.perf_counter() - start)
        take = np.arange(steps * batch) % len(self.features)
        self.timer.head.reset()
        self.compiled.trainable.fit(
            self.features[take],
            self.labels[take],
            sample_weight=None if self.weights is None else self.weights[take],
            batch_size=batch,
            epochs=1,
            verbose=0,
            shuffle=False,
            callbacks=[keras3_timer(self.timer.head)],
        )


def phase_rate(backbone_rate: float, head_rate: float, epochs: int, views: int) -> float:
    """Training images/s of a cached phase: each image costs ``views`` backbone passes once
    and one head step per epoch, so ``epochs`` images' worth of training take
    ``views / backbone_rate + epochs / head_rate`` seconds."""
    return epochs / (views / backbone_rate + epochs / head_rate)


@dataclasses.dataclass
class CacheTiming:
    """The cached phase's last measured parts, read like a ``Timer``."""

    epochs: int
    views: int
    backbone_rate: float = 0.0
    head: Timer = dataclasses.field(default_factory=Timer)

    def images_per_second(self, batch: int, warmup: int) -> float:
        return phase_rate(self.backbone_rate, self.head.images_per_second(batch, warmup), self.epochs, self.views)


# CPU flags an ISA cap hides from precision=auto (--cpu-isa): the extensions above the cap
HIDDEN_ABOVE = {
    "AVX512_CORE_VNNI": ("amx", "avx512_bf16", "avx512_fp16"),
    "AVX512_CORE": ("amx", "avx512_bf16", "avx512_fp16", "avx512_vnni"),
    "AVX2": ("amx", "avx512"),
}


def emulate_cpu_isa(isa: str) -> None:
    """Run as on a CPU with nothing above ``isa``: cap oneDNN (before TensorFlow loads) and
    hide the flags above it from ``precision.auto``."""
    os.environ["ONEDNN_MAX_CPU_ISA"] = isa
    from fer_pipeline import precision

    real = precision.cpu_flags
    hidden = HIDDEN_ABOVE[isa]
    precision.cpu_flags = lambda *a, **k: frozenset(f for f in real(*a, **k) if not f.startswith(hidden))


# --- the benchmark ------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zip", type=Path, default=DEFAULT_ZIP, help="the Kaggle FER-2013 zip")
    parser.add_argument("--batch", type=int, default=64, help="batch of every pipeline (the project's default)")
    parser.add_argument("--phases", default="frozen,finetune")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds per phase")
    parser.add_argument("--frozen-steps", type=int, default=8, help="timed steps per fit call, frozen phase")
    parser.add_argument("--finetune-steps", type=int, default=4, help="timed steps per fit call, fine-tuning")
    parser.add_argument("--warmup", type=int, default=2, help="steps of each fit call not timed")
    parser.add_argument(
        "--jit", choices=("on", "off"), default="off", help="the project's jit_compile (XLA); off is its default"
    )
    parser.add_argument("--no-baseline", action="store_true", help="time the project only (for lever sweeps)")
    parser.add_argument("--intra", type=int, default=0, help="intra-op threads (0 = TensorFlow's default)")
    parser.add_argument("--inter", type=int, default=0, help="inter-op threads (0 = TensorFlow's default)")
    parser.add_argument("--image-size", type=int, default=48, help="the project's image_size (baseline stays 48)")
    parser.add_argument(
        "--precision",
        default="",
        help="also time the project under this precision (e.g. mixed_bfloat16), interleaved with float32",
    )
    parser.add_argument(
        "--cache",
        type=int,
        default=0,
        help="also time the frozen phase with frozen_feature_cache=N (under --precision, else float32)",
    )
    parser.add_argument("--cache-pool", type=int, default=2048, help="--cache: training images its parts run on")
    parser.add_argument(
        "--cpu-isa",
        choices=sorted(HIDDEN_ABOVE),
        default="",
        help="run as on an older CPU: oneDNN capped at this ISA, precision=auto shown the flags below it",
    )
    parser.add_argument("--preset", default="", help="the project's recipe preset (cpu: the compact CNN; no baseline)")
    parser.add_argument("--no-append", action="store_true", help="print the table only")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf_keras = None if args.no_baseline or args.preset else require_tf_keras()
    if not args.zip.is_file():
        sys.exit(f"FER-2013 zip not found at {args.zip}; pass --zip or set FER2013_ZIP.")
    load_before = load_average()
    if args.cpu_isa:
        emulate_cpu_isa(args.cpu_isa)
    import tensorflow as tf

    if args.intra:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra)
    if args.inter:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter)

    from fer_pipeline.config import SplitConfig
    from fer_pipeline.ingest import read_source
    from fer_pipeline.recipe import resolve
    from fer_pipeline.split import make_split
    from fer_pipeline.training_data import phase_data

    wanted = {"weights": "none", "batch_size": args.batch, "jit_compile": args.jit == "on", "precision": "float32"}
    cfg = resolve(args.preset, wanted | ({} if args.preset else {"image_size": args.image_size})).train
    started = time.perf_counter()
    dataset = read_source(args.zip).dataset
    split = make_split(dataset, SplitConfig())
    data = phase_data(dataset, split, cfg)
    log.info("read %d images in %.1f s", len(dataset), time.perf_counter() - started)

    phases = [p for p in args.phases.split(",") if p]
    steps = {"frozen": args.frozen_steps, "finetune": args.finetune_steps}
    results: dict[tuple[str, str], list[float]] = {}
    probes: dict[tuple[str, str], list[float]] = {}
    flops: dict[str, float] = {}
    cache_parts: dict[str, list[float]] = {"backbone": [], "head": []}
    with tempfile.TemporaryDirectory(prefix="fer-bench-") as tmp:
        baseline = None
        if tf_keras is not None:
            train_dir = extract_train_folder(args.zip, Path(tmp))
            baseline = Baseline(train_dir, args.batch, split.class_weight_by_index(), cfg.seed, tf_keras)
        project = Project(dataset, data, cfg)
        other = Project(dataset, data, dataclasses.replace(cfg, precision=args.precision)) if args.precision else None
        cache_name = (
            f"project, {args.precision or 'float32'}, feature cache {args.cache} view(s) / {cfg.frozen_epochs} epochs"
        )
        cached = None
        if args.cache and "frozen" in args.phases.split(","):
            cached_cfg = dataclasses.replace(
                cfg, precision=args.precision or "float32", frozen_feature_cache=args.cache
            )
            cached = CachedProject(dataset, data, cached_cfg, args.cache_pool)
        forward = forward_flops(project.model, (48, 48, 1))
        for phase in phases:
            if phase == "finetune":
                project.unfreeze()
                if other:
                    other.unfreeze()
                if baseline:
                    baseline.unfreeze()
            flops[phase] = training_flops(
                forward, "finetune" if cfg.backbone == "compact" else phase
            )  # compact trains whole
            runners = {"project": lambda n: project.run(n), "project, synthetic batch": lambda n: project.run(n, True)}
            timers = {"project": project.timer, "project, synthetic batch": project.timer}
            if other:
                runners[f"project, {args.precision}"] = lambda n: other.run(n)
                timers[f"project, {args.precision}"] = other.timer
            if cached and phase == "frozen":
                runners[cache_name] = cached.run
                timers[cache_name] = cached.timer
            if baseline:
                runners = {"seed-style baseline": baseline.run, **runners}
                timers["seed-style baseline"] = baseline.timer
            for name, run in runners.items():  # warm-up: tracing, first batches
                t0 = time.perf_counter()
                run(args.warmup + 1)
                log.info("%s/%s warm-up %.1f s", phase, name, time.perf_counter() - t0)
            for round_ in range(args.rounds):
                for name, run in runners.items():
                    before = matmul_gflops()
                    run(args.warmup + steps[phase])
                    probe = (before + matmul_gflops()) / 2
                    rate = timers[name].images_per_second(args.batch, args.warmup)
                    if name == cache_name:
                        cache_parts["backbone"].append(cached.timer.backbone_rate)
                        cache_parts["head"].append(cached.timer.head.images_per_second(args.batch, args.warmup))
                    results.setdefault((phase, name), []).append(rate)
                    probes.setdefault((phase, name), []).append(probe)
                    log.info(
                        "%s round %d: %s %.1f img/s (matmul %.1f GFLOP/s, load %s)",
                        phase,
                        round_ + 1,
                        name,
                        rate,
                        probe,
                        load_average(),
                    )

    rows = []
    for phase in phases:
        baseline_rates = results.get((phase, "seed-style baseline"), [])
        names = ("seed-style baseline", "project", "project, synthetic batch", f"project, {args.precision}", cache_name)
        for name in names:
            if (phase, name) not in results:
                continue
            rates, matmuls = results[(phase, name)], probes[(phase, name)]
            rate, matmul = median(rates), median(matmuls)
            shares = [r * flops[phase] / 1e9 / m for r, m in zip(rates, matmuls)]
            # per-round ratios: each round's project window against the same round's baseline window
            if not baseline_rates and name != "project":  # no baseline: against the float32 project
                baseline_rates = results[(phase, "project")]
            ratio = median([r / b for r, b in zip(rates, baseline_rates)]) if baseline_rates else None
            rows.append(
                [
                    phase,
                    name,
                    f"{rate:.1f}",
                    f"{1000 * args.batch / rate:.0f}",
                    f"{ratio:.2f}x" if ratio and name != "seed-style baseline" else "",
                    *(
                        ["", ""]
                        if name == cache_name
                        else [f"{flops[phase] / 1e9:.3f}", f"{rate * flops[phase] / 1e9:.1f}"]
                    ),
                    f"{matmul:.1f}",
                    "" if name == cache_name else f"{100 * median(shares):.0f}%",
                ]
            )
    table = markdown_table(
        [
            "phase",
            "pipeline",
            "images/s",
            "ms/step",
            "vs baseline",
            "GFLOP/image",
            "GFLOP/s",
            "matmul GFLOP/s",
            "share of matmul",
        ],
        rows,
    )
    notes = [
        f"preset {args.preset or 'none'} (backbone {cfg.backbone}), precision float32"
        + (f" and {args.precision}" if args.precision else "")
        + "; without the baseline, 'vs baseline' is against the float32 project",
        f"batch {args.batch}, image_size {cfg.image_size}, project jit_compile={args.jit}, threads intra={args.intra or 'default'} "
        f"inter={args.inter or 'default'}; {args.rounds} interleaved rounds, medians; timed steps per call: "
        f"frozen {args.frozen_steps}, finetune {args.finetune_steps} (after {args.warmup} warm-up steps)",
        f"forward FLOPs per image (TensorFlow profiler): {forward['total'] / 1e9:.3f} GFLOP; training FLOPs as in "
        "bench/_common.training_flops; matmul: 2048^3 float32 x3, before and after each window; "
        "ratio and share: medians of the per-round values",
    ]
    if cached:
        notes.append(
            f"feature cache row: training images/s of a {cfg.frozen_epochs}-epoch phase 1 with {args.cache} view(s) "
            "(bench.throughput.phase_rate), from its parts measured in each round on the first "
            f"{len(cached.images)} training images: the backbone's features of one view (median "
            f"{median(cache_parts['backbone']):.0f} images/s) and the head's training steps on them (median "
            f"{median(cache_parts['head']):.0f} images/s); no FLOP columns: it skips most of the model's "
            "arithmetic, which is the point"
        )
    if args.cpu_isa:
        notes.append(
            f"run as on an older CPU: ONEDNN_MAX_CPU_ISA={args.cpu_isa}, precision=auto shown the CPU flags without "
            f"{', '.join(h + '*' for h in HIDDEN_ABOVE[args.cpu_isa])}"
        )
    if not args.no_append:
        append_section(
            "Training throughput: project vs seed-style baseline", table, load_before=load_before, notes=notes
        )
    else:
        print(table)
        print("\n".join(notes))
    return 0


if __name__ == "__main__":
    from fer_pipeline.errors import exit_in_one_line

    raise SystemExit(exit_in_one_line(main))
