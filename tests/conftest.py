"""Shared fixtures: small generated FER-style data, and the real FER-2013 zip where present."""

from __future__ import annotations

import io
import lzma
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fer_pipeline import synthetic

REPO_ROOT = Path(__file__).resolve().parents[1]
# The real dataset lives beside the project (never inside it); FER2013_ZIP overrides.
REAL_ZIP = Path(os.environ.get("FER2013_ZIP", REPO_ROOT.parent / "shared" / "data" / "fer2013" / "fer2013.zip"))


@pytest.fixture(scope="session")
def real_zip() -> Path:
    if not REAL_ZIP.is_file():
        pytest.skip(f"real FER-2013 zip not found at {REAL_ZIP} (set FER2013_ZIP to its path)")
    return REAL_ZIP


@pytest.fixture()
def kaggle_zip(tmp_path: Path) -> Path:
    """A Kaggle-layout zip: 20 train and 6 test images per class."""
    return synthetic.write_kaggle_zip(tmp_path / "fer2013.zip", n_train=20, n_test=6)


@pytest.fixture()
def kaggle_tree(tmp_path: Path) -> Path:
    return synthetic.write_kaggle_tree(tmp_path / "fer2013", n_train=20, n_test=6)


@pytest.fixture()
def fer_csv(tmp_path: Path) -> Path:
    return synthetic.write_fer_csv(tmp_path / "fer2013.csv", n_train=20, n_test=6)


@pytest.fixture()
def saved_network(tmp_path) -> tuple[str, str, int]:
    """A tiny untrained compact network and a validation npz of 4 images per class, for the
    bench commands that score saved networks: (model, data, images)."""
    from fer_pipeline.config import TrainConfig
    from fer_pipeline.model import build_model  # Keras only for the tests that ask

    x, y = synthetic.make_images(4, seed=3)
    buffer = io.BytesIO()
    np.savez(buffer, x_train=x, y_train=y, x_val=x, y_val=y)
    (tmp_path / "data.npz.xz").write_bytes(lzma.compress(buffer.getvalue()))
    cfg = replace(
        TrainConfig(weights="none"), backbone="compact", compact_widths=(4, 4, 4, 4), dense_units=(8,), dropouts=(0.0,)
    )
    build_model(cfg).save(tmp_path / "net.keras")
    return str(tmp_path / "net.keras"), str(tmp_path / "data.npz.xz"), len(y)
