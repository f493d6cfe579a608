"""Zip entries are checked against an uncompressed-size limit and a compression-ratio
limit before they are inflated: an archive bomb is rejected (counted and named), never
read into memory, and the rest of the archive is read as usual."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_pipeline import synthetic
from fer_pipeline.errors import ConfigError
from fer_pipeline.ingest import REJECTED, IngestError, IngestOptions, read_source

BOMB = "train/happy/bomb.jpg"


def zip_with(tmp_path: Path, name: str, data: bytes) -> Path:
    path = synthetic.write_kaggle_zip(tmp_path / "fer.zip", n_train=3, n_test=2)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return path


def rejected(result) -> dict[str, str]:
    return {issue.path: issue.reason for issue in result.report.issues if issue.status == REJECTED}


def test_an_entry_that_inflates_a_thousand_fold_is_rejected_unread(tmp_path, monkeypatch):
    path = zip_with(tmp_path, BOMB, bytes(20 * 2**20))  # 20 MiB of zeros: about 1,000:1
    inflated = []
    real_open = zipfile.ZipFile.open

    def recording_open(self, info, *args, **kwargs):
        inflated.append(getattr(info, "filename", info))
        return real_open(self, info, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", recording_open)
    result = read_source(path, IngestOptions(strict=False))
    reasons = rejected(result)
    assert list(reasons) == [BOMB]
    assert "over the 100:1 limit (max_compression_ratio" in reasons[BOMB]
    assert BOMB not in inflated  # refused from its header
    assert len(result.report.accepted_files) == 7 * (3 + 2)  # every other entry read as usual


def test_under_strict_the_bomb_fails_the_ingest_with_its_name(tmp_path):
    path = zip_with(tmp_path, BOMB, bytes(5 * 2**20))
    with pytest.raises(IngestError, match="bomb.jpg.*max_compression_ratio"):
        read_source(path)


def test_an_entry_over_the_size_limit_is_rejected_even_when_it_does_not_compress(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (200, 200), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")  # about 40 KB, barely compressible
    name = "train/sad/large.png"
    path = zip_with(tmp_path, name, buffer.getvalue())
    result = read_source(path, IngestOptions(strict=False, convert=True, max_member_bytes=20_000))
    assert "over the 20,000-byte limit (max_member_bytes)" in rejected(result)[name]
    # the same entry is read (and converted) under the default limit
    result = read_source(path, IngestOptions(strict=False, convert=True))
    assert name not in rejected(result)


@pytest.mark.parametrize("bad", [{"max_member_bytes": 0}, {"max_compression_ratio": 1}, {"max_member_bytes": -5}])
def test_limits_are_checked(bad):
    with pytest.raises(ConfigError, match="max_member_bytes must be > 0 and max_compression_ratio > 1"):
        IngestOptions(**bad)
