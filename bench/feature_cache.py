"""Phase 1 (frozen DenseNet169) with and without the frozen feature cache, on a stratified
subset of the real FER-2013 train split: wall-clock seconds of the phase (feature
computation included) and its best validation accuracy and loss.

    .venv/bin/python -m bench.feature_cache --samples 2000 --epochs 3 --views 0,1,3

Weights are random ("none": the ImageNet download is not reachable here), so the
accuracies are low; the comparison is what matters: the cache computes exactly what
the full model would for the same views (tests/test_feature_cache.py), so differences
in accuracy come from how many distinct augmented views the head sees.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path

from bench._common import DEFAULT_ZIP, append_section, load_average, markdown_table


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zip", type=Path, default=DEFAULT_ZIP)
    parser.add_argument("--samples", type=int, default=2000, help="max_train_samples (validation shrinks alike)")
    parser.add_argument("--epochs", type=int, default=3, help="frozen_epochs")
    parser.add_argument("--views", default="0,1,3", help="frozen_feature_cache values to run, in order (0 = off)")
    parser.add_argument("--precision", default="auto")
    parser.add_argument(
        "--lr", type=float, default=1e-4, help="frozen_lr (the default's 1e-4 learns slowly on random features)"
    )
    parser.add_argument("--no-append", action="store_true")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    load_before = load_average()
    import keras

    from fer_pipeline.config import SplitConfig, TrainConfig
    from fer_pipeline.ingest import read_source
    from fer_pipeline.split import make_split
    from fer_pipeline.trainer import train_frozen

    dataset = read_source(args.zip).dataset
    split = make_split(dataset, SplitConfig())
    rows, policy = [], ""
    off_seconds = None
    for views in [int(v) for v in args.views.split(",")]:
        cfg = TrainConfig(
            weights="none",
            max_train_samples=args.samples,
            frozen_epochs=args.epochs,
            frozen_lr=args.lr,
            finetune_epochs=0,
            early_stopping_patience=args.epochs,  # every epoch runs
            frozen_feature_cache=views,
            precision=args.precision,
        )
        with tempfile.TemporaryDirectory(prefix="fer-cache-bench-") as tmp:
            result = train_frozen(dataset, split, cfg, Path(tmp))
            policy = json.loads((Path(tmp) / "history.json").read_text())["dtype_policy"]
        best = result.best_epoch - 1
        off_seconds = result.seconds if views == 0 else off_seconds
        rows.append(
            [
                views or "off",
                f"{result.seconds:.1f}",
                f"{off_seconds / result.seconds:.2f}x" if off_seconds and views else "",
                f"{result.history['val_accuracy'][best]:.4f}",
                f"{result.history['val_loss'][best]:.4f}",
                result.epochs_run,
            ]
        )
        keras.backend.clear_session()
    table = markdown_table(
        ["frozen_feature_cache", "phase 1 seconds", "speed-up", "best val_accuracy", "its val_loss", "epochs"], rows
    )
    notes = [
        f"DenseNet169, weights none, max_train_samples {args.samples} (validation shrunk alike), frozen_epochs "
        f"{args.epochs} at frozen_lr {args.lr:g}, batch 64, TensorFlow feed, dtype policy {policy} (precision={args.precision}); "
        "seconds: the whole phase (feature computation and tracing included), runs one after another"
    ]
    if args.no_append:
        print(table + "\n" + "\n".join(notes))
    else:
        append_section("Phase 1 with the frozen feature cache", table, load_before=load_before, notes=notes)
    return 0


if __name__ == "__main__":
    from fer_pipeline.errors import exit_in_one_line

    raise SystemExit(exit_in_one_line(main))
