"""float32 against a 16-bit policy on the running Keras backend: train steps of a recipe's
model on one in-memory batch, interleaved rounds, medians. For the JAX backend (bench/
throughput.py's ``--precision`` covers TensorFlow with its tf.data pipeline).

    KERAS_BACKEND=jax .venv/bin/python -m bench.precision --preset cpu --batch 128

    .venv/bin/python -m bench.precision --quality --samples 3000 --epochs 4   # short real-data runs

``--quality`` trains phase 1 of the recipe on a stratified subset of the real zip once
per precision instead, and reports its seconds and best validation accuracy.
Prints a Markdown table (``--append`` adds it to docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import time

from bench._common import append_section, load_average, markdown_table, median


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--recipe", default="{}", help='JSON overrides, e.g. \'{"backbone": "densenet169"}\'')
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--precisions", default="float32,mixed_bfloat16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--quality", action="store_true", help="short real-data phase 1 runs instead of steps")
    parser.add_argument("--samples", type=int, default=3000, help="--quality: max_train_samples (0 = all)")
    parser.add_argument("--epochs", type=int, default=4, help="--quality: frozen_epochs")
    parser.add_argument("--append", action="store_true")
    return parser.parse_args(argv)


def quality(args) -> tuple[str, list[str]]:
    """Phase 1 on a real-data subset per precision: seconds, best val_accuracy and its loss."""
    import tempfile
    from pathlib import Path

    from bench._common import DEFAULT_ZIP
    from fer_pipeline.config import SplitConfig
    from fer_pipeline.ingest import read_source
    from fer_pipeline.recipe import resolve
    from fer_pipeline.split import make_split
    from fer_pipeline.trainer import HISTORY_FILE, train_frozen

    dataset = read_source(DEFAULT_ZIP).dataset
    split = make_split(dataset, SplitConfig(val_fraction=resolve(args.preset).split.val_fraction))
    rows = []
    for name in args.precisions.split(","):
        wanted = {"max_train_samples": args.samples, "frozen_epochs": args.epochs, "precision": name}
        cfg = resolve(args.preset, wanted | json.loads(args.recipe)).train
        with tempfile.TemporaryDirectory(prefix="fer-precision-") as tmp:
            result = train_frozen(dataset, split, cfg, Path(tmp))
            policy = json.loads((Path(tmp) / HISTORY_FILE).read_text())["dtype_policy"]
        best, history = result.best_epoch - 1, result.history
        epochs = len(history["val_accuracy"])
        rows.append(
            [
                name,
                policy,
                f"{result.seconds:.1f}",
                f"{result.seconds / epochs:.1f}",
                f"{history['val_accuracy'][best]:.4f}",
                f"{history['val_loss'][best]:.4f}",
                f"{history['val_accuracy'][-1]:.4f} (epoch {epochs})",
            ]
        )
    table = markdown_table(
        [
            "precision",
            "dtype policy",
            "phase 1 seconds",
            "seconds / epoch",
            "best val_accuracy",
            "its val_loss",
            "last epoch's val_accuracy",
        ],
        rows,
    )
    return table, [
        f"preset {args.preset}, recipe {args.recipe}, max_train_samples {args.samples}, frozen_epochs {args.epochs}"
    ]


def main(argv=None) -> int:
    args = parse_args(argv)
    load_before = load_average()
    if args.quality:
        table, notes = quality(args)
        print(table + "\n" + "\n".join(notes))
        if args.append:
            append_section("Precision: short training runs", table, load_before=load_before, notes=notes)
        return 0
    import keras
    import numpy as np

    from fer_pipeline import trainer
    from fer_pipeline.feed_numpy import AUGMENTATION_OFF
    from fer_pipeline.model import build_model
    from fer_pipeline.precision import apply_precision
    from fer_pipeline.recipe import resolve

    overrides = {"weights": "none", "batch_size": args.batch, **AUGMENTATION_OFF, **json.loads(args.recipe)}
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (args.batch, 48, 48, 1)).astype("float32")
    y = rng.integers(0, 7, args.batch).astype("int32")
    models = {}
    for name in args.precisions.split(","):
        cfg = resolve(args.preset, overrides | {"precision": name}).train
        apply_precision(cfg)
        model = build_model(cfg)
        trainer.compile_model(model, cfg, 1e-3)
        model.fit(x, y, batch_size=args.batch, epochs=2, verbose=0)  # warm-up: tracing
        models[name] = model
    rates: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            start = time.perf_counter()
            model.fit(np.tile(x, (args.steps, 1, 1, 1)), np.tile(y, args.steps), batch_size=args.batch, verbose=0)
            rates[name].append(args.batch * args.steps / (time.perf_counter() - start))
    first = median(rates[next(iter(rates))])
    rows = [
        [keras.backend.backend(), name, f"{median(r):.1f}", f"{median(r) / first:.2f}x"] for name, r in rates.items()
    ]
    table = markdown_table(["backend", "precision", "images/s (train step)", "vs first"], rows)
    notes = [
        f"preset {args.preset}, recipe {args.recipe}, batch {args.batch}, {args.rounds} rounds x {args.steps} steps"
    ]
    if args.append:
        append_section("Precision: train steps per backend", table, load_before=load_before, notes=notes)
    else:
        print(table + "\n" + "\n".join(notes))
    return 0


if __name__ == "__main__":
    from fer_pipeline.errors import exit_in_one_line

    raise SystemExit(exit_in_one_line(main))
