"""Write the data file that bench/gpu.py reads on the GPU machine (which cannot read the zip).

    python -m bench.gpu_data build/real-cli/dataset      # a canonical dataset directory (fer-pipeline ingest)

Only the Kaggle train split travels, divided 90/10 (stratified, seed 12) as the
compact preset divides it: recipe selection on the GPU never sees the test split.
lzma-compressed, about 50 MB (the device call carries at most 64 MiB).
"""

from __future__ import annotations

import argparse
import io
import lzma
from pathlib import Path

import numpy as np

from fer_pipeline.config import SplitConfig
from fer_pipeline.dataset import FerDataset
from fer_pipeline.errors import DatasetError
from fer_pipeline.split import make_split

OUTPUT = Path(".gpu/fer-trainval.npz.xz")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="a canonical dataset directory (`fer-pipeline ingest ZIP --out DIR`)")
    args = parser.parse_args(argv)
    try:
        dataset = FerDataset.load(args.dataset)
    except DatasetError as error:
        parser.error(str(error))
    split = make_split(dataset, SplitConfig(val_fraction=0.1, seed=12))
    arrays = {
        "x_train": dataset.images[split.train_indices],
        "y_train": dataset.labels[split.train_indices],
        "x_val": dataset.images[split.val_indices],
        "y_val": dataset.labels[split.val_indices],
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_bytes(lzma.compress(buffer.getvalue(), preset=6))
    print(
        f"wrote {OUTPUT} ({OUTPUT.stat().st_size / 1e6:.1f} MB): {len(split.train_indices)} train, "
        f"{len(split.val_indices)} validation images"
    )


if __name__ == "__main__":
    from fer_pipeline.errors import exit_in_one_line

    raise SystemExit(exit_in_one_line(main))
