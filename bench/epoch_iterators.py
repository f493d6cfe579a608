"""The cpu preset's training epochs with one tf.data iterator per epoch (before 91c33b3) and
with one repeating iterator for the whole phase (``TfDataFeed``'s default since): seconds
per epoch and the share of the cores left idle, on a stratified subset of the real FER-2013
train split.

    .venv/bin/python -m bench.epoch_iterators --samples 6400 --epochs 12 --rounds 1
    .venv/bin/python -m bench.epoch_iterators --precisions auto float32  # and float32's epoch beside bfloat16's

On the 2-core machines the per-epoch iterator gave two kinds of epoch: both cores busy, or
one of them idle for the whole epoch at twice the time. The idle share (from /proc/stat,
so Linux only) tells them apart; run it with nothing else on the cores.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench._common import DEFAULT_ZIP, append_section, load_average, markdown_table, median
from fer_pipeline.config import PRECISIONS

MODES = {"per epoch": False, "one for the phase": True}  # TfDataFeed(one_training_iterator=...)
SLOW = 1.3  # an epoch this much slower than the mode's fastest counts as slow


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zip", type=Path, default=DEFAULT_ZIP)
    parser.add_argument("--samples", type=int, default=6400, help="max_train_samples (validation shrinks alike)")
    parser.add_argument("--epochs", type=int, default=12, help="epochs per mode and round (the first is not counted)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of both modes, interleaved")
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=["auto"],
        choices=PRECISIONS,
        help="each mode runs at each (float32 beside auto's bfloat16: how long the preset takes on CPUs without it)",
    )
    parser.add_argument("--no-append", action="store_true")
    return parser.parse_args(argv)


def cpu_ticks() -> tuple[int, int]:
    """(idle, total) jiffies of all cores since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return fields[3] + fields[4], sum(fields)


def epoch_timer(records: list[tuple[float, float]]):
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start, self.ticks = time.perf_counter(), cpu_ticks()

        def on_epoch_end(self, epoch, logs=None):
            idle, total = (after - before for after, before in zip(cpu_ticks(), self.ticks))
            records.append((time.perf_counter() - self.start, idle / max(total, 1)))

    return EpochTimer()


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    load_before = load_average()
    import keras

    from fer_pipeline.feed_tf import TfDataFeed
    from fer_pipeline.ingest import read_source
    from fer_pipeline.precision import choose_policy, cpu_flags
    from fer_pipeline.recipe import resolve
    from fer_pipeline.split import make_split
    from fer_pipeline.trainer import train_frozen

    recipe = resolve("cpu", {"max_train_samples": args.samples, "frozen_epochs": args.epochs})
    dataset = read_source(args.zip).dataset
    split = make_split(dataset, recipe.split)
    runs = [(mode, precision) for precision in args.precisions for mode in MODES]
    epochs: dict[tuple[str, str], list[tuple[float, float]]] = {run: [] for run in runs}
    for _ in range(args.rounds):
        for mode, precision in runs:
            records: list[tuple[float, float]] = []
            train = replace(recipe.train, precision=precision)
            with tempfile.TemporaryDirectory(prefix="fer-iterator-bench-") as tmp:
                train_frozen(dataset, split, train, Path(tmp), TfDataFeed(MODES[mode]), (epoch_timer(records),))
            epochs[mode, precision] += records[1:]  # the first epoch traces the step
            keras.backend.clear_session()
    rows = []
    for (mode, precision), records in epochs.items():
        seconds = [s for s, _ in records]
        fastest = min(seconds)
        rows.append(
            [
                mode,
                precision if precision != "auto" else f"auto ({choose_policy('auto', cpu_flags=cpu_flags())[0]})",
                len(seconds),
                f"{median(seconds):.1f}",
                f"{sum(seconds) / len(seconds):.1f}",
                f"{fastest:.1f} / {max(seconds):.1f}",
                sum(s > SLOW * fastest for s in seconds),
                f"{sum(i for _, i in records) / len(records):.2f}",
            ]
        )
    mean = {run: sum(s for s, _ in records) / len(records) for run, records in epochs.items()}
    table = markdown_table(
        [
            "training iterator",
            "precision",
            "epochs",
            "median s",
            "mean s",
            "fastest / slowest s",
            f"slow (>{SLOW}x fastest)",
            "idle share",
        ],
        rows,
    )
    notes = [
        f"the cpu preset (compact CNN, crop, batch {recipe.train.batch_size}), max_train_samples "
        f"{args.samples} (validation shrunk alike), {args.epochs} epochs per mode, precision and round, "
        f"{args.rounds} round(s), the first epoch of each run not counted; idle share: idle and iowait jiffies of "
        "all cores over the epoch",
        *[
            f"mean epoch at {p}, per-epoch iterators over one iterator: "
            f"{mean['per epoch', p] / mean['one for the phase', p]:.2f}x"
            for p in args.precisions
        ],
        *[
            f"mean epoch with one iterator, {p} over {args.precisions[0]}: "
            f"{mean['one for the phase', p] / mean['one for the phase', args.precisions[0]]:.2f}x"
            for p in args.precisions[1:]
        ],
    ]
    if args.no_append:
        print(table + "\n" + "\n".join(notes))
    else:
        append_section(
            "Training epochs: one tf.data iterator per epoch or per phase", table, load_before=load_before, notes=notes
        )
    return 0


if __name__ == "__main__":
    from fer_pipeline.errors import exit_in_one_line

    raise SystemExit(exit_in_one_line(main))
