"""File names as they come: names that are not valid UTF-8 (made on other systems) are
read, checksummed bytes-safely and shown with escapes, in folders and zips; a zip whose
UTF-8-flagged names are not UTF-8 is refused with one clear message."""

from __future__ import annotations

import json
import os
import shutil
import struct
import zipfile
from pathlib import Path

import pytest

from fer_pipeline import cli, synthetic
from fer_pipeline.errors import DatasetError
from fer_pipeline.ingest import read_source, shown_name

LATIN1_NAME = b"caf\xe9.jpg"  # "café" in Latin-1: not UTF-8


def tree_with_a_latin1_name(tmp_path: Path) -> Path:
    root = synthetic.write_kaggle_tree(tmp_path / "tree", n_train=2, n_test=1)
    happy = root / "train" / "happy"
    first = sorted(happy.iterdir())[0]
    shutil.copy(first, os.path.join(os.fsencode(happy), LATIN1_NAME))
    return root


def test_shown_name_escapes_only_what_is_not_utf8():
    assert shown_name(os.fsdecode(LATIN1_NAME)) == "caf\\xe9.jpg"
    assert shown_name("café.jpg") == "café.jpg"


def test_a_folder_with_a_non_utf8_name_is_read_and_checksummed(tmp_path):
    root = tree_with_a_latin1_name(tmp_path)
    result = read_source(root)
    assert "train/happy/caf\\xe9.jpg" in result.report.accepted_files
    plain = read_source(synthetic.write_kaggle_tree(tmp_path / "plain", n_train=2, n_test=1))
    assert result.dataset.manifest["source_sha256"] != plain.dataset.manifest["source_sha256"]
    assert read_source(root).dataset.manifest["source_sha256"] == result.dataset.manifest["source_sha256"]


def test_validate_reports_the_name_with_escapes_and_no_traceback(tmp_path, capsys):
    root = tree_with_a_latin1_name(tmp_path)
    (Path(os.fsdecode(os.path.join(os.fsencode(root / "train" / "sad"), b"bad\xff.jpg")))).write_bytes(b"not an image")
    code = cli.main(["validate", str(root)])
    out = capsys.readouterr()
    assert "Traceback" not in out.err + out.out
    assert "bad\\xff.jpg" in out.out + out.err and code != 0


def utf8_flagged_zip_with_a_latin1_name(tmp_path: Path) -> Path:
    """A zip whose central directory marks a Latin-1 name as UTF-8 (flag bit 11)."""
    path = synthetic.write_kaggle_zip(tmp_path / "fer.zip", n_train=2, n_test=1)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("train/happy/cafe.jpg", b"x")
    data = bytearray(path.read_bytes())
    central = data.rfind(b"PK\x01\x02")  # the last central-directory header: cafe.jpg
    flags_at, name_len_at = central + 8, central + 28
    flags = struct.unpack_from("<H", data, flags_at)[0] | 0x800
    struct.pack_into("<H", data, flags_at, flags)
    name_len = struct.unpack_from("<H", data, name_len_at)[0]
    name_at = central + 46
    name = bytes(data[name_at : name_at + name_len]).replace(b"cafe", b"caf\xe9")
    data[name_at : name_at + name_len] = name
    path.write_bytes(bytes(data))
    return path


def test_a_zip_with_a_false_utf8_flag_is_refused_with_one_line(tmp_path, capsys):
    path = utf8_flagged_zip_with_a_latin1_name(tmp_path)
    with pytest.raises(DatasetError, match="marked UTF-8 that is not valid UTF-8"):
        read_source(path)
    code = cli.main(["validate", str(path)])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err and "re-create the archive" in err


def test_zip_names_in_utf8_are_read_as_they_are(tmp_path):
    path = synthetic.write_kaggle_zip(tmp_path / "fer.zip", n_train=2, n_test=1)
    first = zipfile.ZipFile(path).namelist()[0]
    data = zipfile.ZipFile(path).read(first)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(zipfile.ZipInfo("train/happy/caf\u00e9.jpg"), data)  # zipfile flags it UTF-8
    result = read_source(path)
    assert "train/happy/caf\u00e9.jpg" in result.report.accepted_files
    json.dumps(result.report.to_dict())  # the report serialises
