"""Bad input, the accounting view: every input file (or CSV row) is listed exactly once as
accepted, converted, rejected or ignored, with its reason, so nothing is dropped
silently; and the cases of issue 9 that tests/test_bad_input.py does not already cover
(docs/reliability.md maps every case to its test).
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_pipeline import synthetic
from fer_pipeline.classes import CLASSES
from fer_pipeline.config import SplitConfig
from fer_pipeline.errors import DatasetError
from fer_pipeline.ingest import IngestOptions, read_source
from fer_pipeline.steps import ingest_step, split_step

STATUSES = ("accepted", "converted", "rejected", "ignored")


def encode(pixels: np.ndarray, fmt: str, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def first(root: Path, split: str, name: str) -> Path:
    return sorted((root / split / name).iterdir())[0]


def assert_ledger(report, expected_inputs: set[str]) -> None:
    """Each input exactly once, the totals add up to what was given, reasons where due."""
    inputs = report.inputs()
    paths = [i.path for i in inputs]
    assert len(paths) == len(set(paths)), "an input is listed twice"
    assert set(paths) == expected_inputs
    assert len(inputs) == report.given == sum(report.status_counts().values())
    for status in STATUSES:
        assert sum(i.status == status for i in inputs) == report.status_counts()[status]
    assert all(i.reason for i in inputs if i.status != "accepted")
    assert report.to_dict()["files"] == {"given": report.given, **report.status_counts()}


# --- a tree with every per-file problem at once (quarantine) ------------------------------
@pytest.fixture()
def messy_tree(tmp_path: Path) -> tuple[Path, dict[str, tuple[str, str]]]:
    """The Kaggle tree (3 train, 2 test per class) plus one file of each kind of trouble.

    Returns the root and ``{relative path: (status without convert, reason fragment)}``.
    """
    root = synthetic.write_kaggle_tree(tmp_path / "messy", n_train=3, n_test=2)
    gray = np.full((48, 48), 90, np.uint8)
    corrupt = first(root, "train", "angry")
    corrupt.write_bytes(corrupt.read_bytes()[: len(corrupt.read_bytes()) // 2])
    first(root, "test", "sad").write_bytes(b"")
    files = {
        "train/fear/notes.jpg": b"this is not a picture",
        "train/happy/rgb.png": encode(gray, "PNG", "RGB"),
        "train/happy/big.jpg": encode(np.full((64, 64), 90, np.uint8), "JPEG"),
        "test/neutral/cmyk.jpg": encode(gray, "JPEG", "CMYK"),
        "train/surprise/gray.png": encode(gray, "PNG"),  # 48x48 grayscale PNG: used as is
        "train/stray.jpg": encode(gray, "JPEG"),  # in a split but not in a class folder
        "train/disgust/extra/deeper.jpg": encode(gray, "JPEG"),  # nested below a class folder
        "README.txt": b"top-level file outside train/ and test/",
        "train/.DS_Store": b"junk",
        "__MACOSX/train/._x.jpg": b"junk",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    expected = {
        corrupt.relative_to(root).as_posix(): ("rejected", "corrupt JPEG"),
        first(root, "test", "sad").relative_to(root).as_posix(): ("rejected", "empty file (0 bytes)"),
        "train/fear/notes.jpg": ("rejected", "not an image"),
        "train/happy/rgb.png": ("rejected", "PNG RGB 48x48 image, expected 48x48 grayscale"),
        "train/happy/big.jpg": ("rejected", "JPEG L 64x64 image"),
        "test/neutral/cmyk.jpg": ("rejected", "JPEG CMYK 48x48 image"),
        "train/surprise/gray.png": ("accepted", ""),
        "train/stray.jpg": ("rejected", "not in a class folder"),
        "train/disgust/extra/deeper.jpg": ("rejected", "nested below the class folder"),
        "README.txt": ("ignored", "outside train/ and test/"),
        "train/.DS_Store": ("ignored", "OS junk or hidden file"),
        "__MACOSX/train/._x.jpg": ("ignored", "OS junk or hidden file"),
    }
    return root, expected


def on_disk(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_every_file_of_a_messy_tree_is_accounted_for(messy_tree):
    root, expected = messy_tree

    with pytest.raises(DatasetError, match=r"8 file\(s\) in messy cannot be used"):
        read_source(root)  # strict: refused, naming the first files
    report = read_source(root, IngestOptions(strict=False)).report

    assert_ledger(report, on_disk(root))
    by_path = {i.path: i for i in report.inputs()}
    for path, (status, reason) in expected.items():
        assert by_path[path].status == status, path
        assert reason in by_path[path].reason, (path, by_path[path].reason)
    assert report.status_counts() == {"accepted": 33 + 1, "converted": 0, "rejected": 8, "ignored": 3}


def test_conversion_is_explicit_and_counted(messy_tree):
    root, _ = messy_tree

    result = read_source(root, IngestOptions(strict=False, convert=True))
    report = result.report

    assert_ledger(report, on_disk(root))
    converted = {i.path: i.reason for i in report.inputs() if i.status == "converted"}
    assert converted == {
        "train/happy/rgb.png": "converted from PNG RGB 48x48",
        "train/happy/big.jpg": "converted from JPEG L 64x64",
        "test/neutral/cmyk.jpg": "converted from JPEG CMYK 48x48",
    }
    assert len(result.dataset) == report.accepted + report.converted == 34 + 3
    assert result.dataset.manifest["ingest"]["converted"] == 3
    assert "3 file(s) converted to 48x48 grayscale" in report.warnings


def test_the_same_files_zipped_one_folder_down_are_accounted_for(messy_tree, tmp_path):
    root, expected = messy_tree
    source = tmp_path / "archive.zip"
    with zipfile.ZipFile(source, "w") as archive:
        archive.writestr("archive/", b"")  # a directory entry, as many tools write them
        for name in sorted(on_disk(root)):
            archive.write(root / name, f"archive/{name}")

    report = read_source(source, IngestOptions(strict=False)).report

    assert_ledger(report, {f"archive/{name}" for name in on_disk(root)} | {"archive/"})
    by_path = {i.path: i for i in report.inputs()}
    assert by_path["archive/"].reason == "directory entry"
    for path, (status, _) in expected.items():
        assert by_path[f"archive/{path}"].status == status, path


def test_every_csv_row_is_accounted_for(tmp_path):
    pixels = " ".join(["128"] * 2304)
    rows = [f"{code},{pixels},{usage}" for usage in ("Training", "PublicTest", "PrivateTest") for code in range(7)]
    bad = [
        f"3,{' '.join(['1'] * 2303)},Training",  # wrong pixel count
        f"3,{' '.join(['1'] * 2303 + ['x'])},Training",  # non-numeric pixel
        f"9,{pixels},Training",  # label out of range
        f"2,{pixels},Validation",  # unknown Usage
        "4,Training",  # missing field
        "",  # blank line
    ]
    source = tmp_path / "fer2013.csv"
    source.write_text("\n".join(["emotion,pixels,Usage", *rows, *bad]) + "\n")

    with pytest.raises(DatasetError, match=r"5 file\(s\) in fer2013\.csv cannot be used"):
        read_source(source)
    report = read_source(source, IngestOptions(strict=False)).report

    assert_ledger(report, {f"fer2013.csv:{row}" for row in range(2, 2 + len(rows) + len(bad))})
    assert report.status_counts() == {"accepted": 21, "converted": 0, "rejected": 5, "ignored": 1}


# --- cases not covered in test_bad_input.py ------------------------------------------------
def test_png_grayscale_48_is_used_as_is_and_png_rgb_needs_convert(tmp_path):
    root = synthetic.write_kaggle_tree(tmp_path / "png", n_train=3, n_test=2, fmt="PNG")
    report = read_source(root).report
    assert report.accepted == report.given == 35 and report.converted == 0  # lossless 48x48 L: nothing to convert
    first(root, "train", "angry").write_bytes(encode(np.zeros((48, 48), np.uint8), "PNG", "RGB"))
    with pytest.raises(DatasetError, match=r"PNG RGB 48x48 image.*--convert \(the CLI\) or allow_conversion=true"):
        read_source(root)
    assert read_source(root, IngestOptions(convert=True)).report.converted == 1


@pytest.mark.parametrize("link_target", ["/etc/passwd", "../../outside.jpg", "Training_0.jpg"])
def test_a_symlink_entry_in_a_zip_is_refused(tmp_path, link_target):
    source = synthetic.write_kaggle_zip(tmp_path / "fer.zip", n_train=3, n_test=2)
    link = zipfile.ZipInfo("train/angry/link.jpg")
    link.create_system = 3  # Unix
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(source, "a") as archive:
        archive.writestr(link, link_target)

    with pytest.raises(DatasetError, match=rf"entry 'train/angry/link\.jpg', a symbolic link to '{link_target}'"):
        read_source(source)


def test_a_symlinked_class_folder_outside_the_dataset_is_refused(tmp_path):
    root = synthetic.write_kaggle_tree(tmp_path / "data", n_train=3, n_test=2)
    elsewhere = tmp_path / "elsewhere"
    (root / "train" / "happy").rename(elsewhere)
    os.symlink(elsewhere, root / "train" / "happy")

    with pytest.raises(DatasetError, match=r"train/happy is a symlink to .*elsewhere, outside the dataset folder"):
        read_source(root)


def test_missing_test_folder_in_a_directory_is_named(tmp_path):
    root = synthetic.write_kaggle_tree(tmp_path / "data", n_train=3, n_test=2)
    for path in sorted((root / "test").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (root / "test").rmdir()

    with pytest.raises(DatasetError, match=r"no test/ folder"):
        read_source(root)


@pytest.mark.parametrize("strict", [True, False])
def test_a_file_where_a_split_folder_belongs_is_named(tmp_path, strict):
    root = synthetic.write_kaggle_tree(tmp_path / "data", n_train=3, n_test=2)
    for path in sorted((root / "test").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (root / "test").rmdir()
    (root / "test").write_bytes(b"")  # e.g. an unpacked archive's stray file

    with pytest.raises(DatasetError, match=r"no test/ folder"):
        read_source(root, IngestOptions(strict=strict))


@pytest.mark.parametrize("min_per_class, disgust, expected", [(2, 1, "disgust=1"), (5, 3, "disgust=3")])
def test_too_few_images_per_class_for_a_stratified_split_names_the_numbers(tmp_path, min_per_class, disgust, expected):
    root = synthetic.write_kaggle_tree(tmp_path / "data", n_train=6, n_test=2)
    for path in sorted((root / "train" / "disgust").iterdir())[disgust:]:
        path.unlink()
    ingest_step(str(root), tmp_path / "dataset")  # a class with few images is still a valid dataset

    message = rf"fewer than {min_per_class} training images: {expected}\. Add images"
    with pytest.raises(DatasetError, match=message):
        split_step(str(tmp_path / "dataset"), tmp_path / "split.json", SplitConfig(min_per_class=min_per_class))
    assert not (tmp_path / "split.json").exists()


def test_duplicate_policies_and_leakage_are_all_reported(tmp_path):
    root = synthetic.write_kaggle_tree(tmp_path / "data", n_train=3, n_test=2)
    happy = first(root, "train", "happy").read_bytes()
    (root / "train" / "sad" / "Training_900.jpg").write_bytes(happy)  # same pixels, another label
    (root / "train" / "fear" / "Training_901.jpg").write_bytes(first(root, "test", "fear").read_bytes())  # leak

    results = {policy: read_source(root, IngestOptions(duplicate_policy=policy)) for policy in ("keep", "drop")}
    with pytest.raises(DatasetError, match=r"1 group\(s\) of identical images .* carry different labels"):
        read_source(root, IngestOptions(duplicate_policy="fail"))
    no_leak = read_source(root, IngestOptions(drop_leakage=True))

    for result in (*results.values(), no_leak):
        assert result.report.duplicates["conflicting_groups"] == 1 and result.report.leakage["test_images"] == 1
        assert_ledger(result.report, on_disk(root))  # dropping comes after accounting, and is listed
    assert len(results["keep"].dataset) == 37 and len(results["drop"].dataset) == 35
    assert len(no_leak.dataset) == 36 and [d.path for d in no_leak.report.dropped] == ["train/fear/Training_901.jpg"]
    assert sorted(d.path for d in results["drop"].report.dropped) == [
        first(root, "train", "happy").relative_to(root).as_posix(),
        "train/sad/Training_900.jpg",
    ]


def test_the_report_json_lists_every_input(messy_tree, tmp_path):
    import json

    root, _ = messy_tree
    # the library with strict=False here; the ingest step is strict, so it gets a clean tree below
    report = read_source(root, IngestOptions(strict=False)).report.to_dict()
    listed = set(report["accepted_files"]) | {i["path"] for i in report["issues"]}
    assert listed == on_disk(root) and len(report["accepted_files"]) + len(report["issues"]) == report["files"]["given"]

    clean = synthetic.write_kaggle_tree(tmp_path / "clean", n_train=3, n_test=2)
    ingest_step(str(clean), tmp_path / "out")
    written = json.loads((tmp_path / "out" / "ingest_report.json").read_text())
    assert set(written["accepted_files"]) == on_disk(clean) and written["files"]["accepted"] == len(CLASSES) * 5


@pytest.mark.realdata
def test_real_fer2013_every_entry_accounted_and_policies_drop_what_they_report(real_zip):
    names = {info.filename for info in zipfile.ZipFile(real_zip).infolist()}
    result = read_source(real_zip, IngestOptions(duplicate_policy="drop", drop_leakage=True))
    report = result.report

    assert_ledger(report, names)
    assert report.status_counts() == {"accepted": 35_887, "converted": 0, "rejected": 0, "ignored": 0}
    assert report.duplicates["conflicting_files"] == report.duplicates["dropped"] == 160
    assert report.leakage["test_images"] == 568 and report.leakage["dropped"] == 649  # left after the 160
    assert len(result.dataset) + len(report.dropped) == report.accepted == 35_887


def test_a_decompression_bomb_is_rejected_not_decoded(tmp_path, monkeypatch):
    root = synthetic.write_kaggle_tree(tmp_path / "data", n_train=3, n_test=2)
    (root / "train" / "happy" / "bomb.png").write_bytes(encode(np.zeros((128, 128), np.uint8), "PNG"))
    # 128x128 = 16,384 pixels, over twice the limit (PIL's own error); 48x48 = 2,304 is under it
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2400)

    report = read_source(root, IngestOptions(strict=False, convert=True)).report

    assert {i.path: i.reason.split(":")[0] for i in report.inputs() if i.status == "rejected"} == {
        "train/happy/bomb.png": "image too large to decode safely"
    }
    assert_ledger(report, on_disk(root))


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_a_zip_with_two_entries_of_one_name_is_refused(tmp_path):
    source = synthetic.write_kaggle_zip(tmp_path / "fer.zip", n_train=3, n_test=2)
    with zipfile.ZipFile(source, "a") as archive:
        archive.writestr("train/angry/Training_0.jpg", encode(np.zeros((48, 48), np.uint8), "JPEG"))

    with pytest.raises(DatasetError, match=r"holds two entries named 'train/angry/Training_0\.jpg'"):
        read_source(source)


def test_two_datasets_in_one_archive_are_refused(tmp_path):
    root = synthetic.write_kaggle_tree(tmp_path / "data", n_train=3, n_test=2)
    source = tmp_path / "two.zip"
    with zipfile.ZipFile(source, "w") as archive:
        for top in ("first", "second"):
            for name in sorted(on_disk(root)):
                archive.write(root / name, f"{top}/{name}")

    with pytest.raises(DatasetError, match=r"holds the train/test layout in more than one folder \(first, second\)"):
        read_source(source)
