"""Reading FER-2013 from zip, folder and CSV: equivalence, keys, manifest, duplicates, checksums."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from fer_pipeline import synthetic
from fer_pipeline.classes import CLASS_INDEX, CLASSES
from fer_pipeline.dataset import FORMAT_VERSION, FerDataset
from fer_pipeline.ingest import IngestOptions, read_source, source_checksum


def _write_image(path: Path, pixels: np.ndarray, fmt: str = "JPEG") -> None:
    """Save a uint8 array as a grayscale image file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode="L").save(path, format=fmt)


def _by_row(keys: np.ndarray, row_of) -> np.ndarray:
    """Indices that order samples by the row number parsed from their key."""
    return np.argsort([row_of(str(k)) for k in keys])


def test_zip_and_directory_give_identical_datasets(kaggle_zip: Path, kaggle_tree: Path):
    from_zip = read_source(kaggle_zip).dataset
    from_dir = read_source(kaggle_tree).dataset

    assert len(from_zip) == len(from_dir) == 7 * (20 + 6)
    for name in ("keys", "images", "labels", "splits", "source_splits"):
        np.testing.assert_array_equal(getattr(from_zip, name), getattr(from_dir, name), err_msg=name)
    assert from_zip.manifest["source_format"] == "kaggle-zip"
    assert from_dir.manifest["source_format"] == "kaggle-dir"


def test_keys_are_sorted_relative_paths(kaggle_zip: Path):
    dataset = read_source(kaggle_zip).dataset

    keys = [str(k) for k in dataset.keys]
    assert keys == sorted(keys)
    assert all(k.split("/")[0] in ("train", "test") and k.split("/")[1] in CLASSES for k in keys)
    # The label is the class folder, whatever the order.
    assert all(CLASSES[label] == key.split("/")[1] for key, label in zip(keys, dataset.labels))
    assert set(dataset.splits) == {"train", "test"}
    assert all(dataset.splits[i] == keys[i].split("/")[0] for i in range(len(keys)))


def test_csv_matches_png_tree_and_remaps_class_codes(tmp_path: Path):
    # PNG is lossless, so the folder tree holds exactly the CSV's pixels.
    csv_path = synthetic.write_fer_csv(tmp_path / "fer2013.csv", n_train=4, n_test=2, seed=3)
    tree = synthetic.write_kaggle_tree(tmp_path / "tree", n_train=4, n_test=2, seed=3, fmt="PNG")
    from_csv = read_source(csv_path).dataset
    from_tree = read_source(tree).dataset

    # CSV keys are "fer2013.csv:<row>" (header = row 1); tree files are "<Usage>_<sample index>.png".
    csv_order = _by_row(from_csv.keys, lambda k: int(k.rsplit(":", 1)[1]))
    tree_order = _by_row(from_tree.keys, lambda k: int(k.rsplit("_", 1)[1].split(".")[0]))
    assert len(from_csv) == len(from_tree) == 7 * 6
    for name in ("images", "labels", "splits", "source_splits"):
        np.testing.assert_array_equal(
            getattr(from_csv, name)[csv_order], getattr(from_tree, name)[tree_order], err_msg=name
        )
    assert from_csv.keys[csv_order][0] == "fer2013.csv:2"

    with csv_path.open(newline="") as handle:
        codes = {f"fer2013.csv:{row}": int(r["emotion"]) for row, r in enumerate(csv.DictReader(handle), start=2)}
    label_of = dict(zip(map(str, from_csv.keys), from_csv.labels))
    code_6 = next(k for k, code in codes.items() if code == 6)
    code_4 = next(k for k, code in codes.items() if code == 4)
    assert label_of[code_6] == CLASS_INDEX["neutral"] == 4
    assert label_of[code_4] == CLASS_INDEX["sad"] == 5


def test_manifest_describes_the_dataset(kaggle_zip: Path, tmp_path: Path):
    result = read_source(kaggle_zip)
    manifest = result.dataset.manifest

    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["source"] == "fer2013.zip"
    assert manifest["source_sha256"] == hashlib.sha256(kaggle_zip.read_bytes()).hexdigest()
    assert manifest["source_format"] == "kaggle-zip"
    assert manifest["image_size"] == 48
    assert manifest["classes"] == list(CLASSES)
    assert manifest["num_samples"] == 182
    assert manifest["counts"] == {"train": {c: 20 for c in CLASSES}, "test": {c: 6 for c in CLASSES}}
    assert manifest["source_split_counts"] == {"Training": 140, "PublicTest": 21, "PrivateTest": 21}
    assert manifest["ingest"] == {"accepted": 182, "converted": 0, "rejected": 0, "ignored": 0, "dropped": 0}
    assert manifest["duplicates"]["groups"] == 0 and manifest["leakage"]["test_images"] == 0
    json.dumps(manifest)  # JSON-able as written to manifest.json

    loaded = FerDataset.load(result.dataset.save(tmp_path / "canonical"))
    assert loaded.manifest == manifest
    np.testing.assert_array_equal(loaded.images, result.dataset.images)
    np.testing.assert_array_equal(loaded.keys, result.dataset.keys)


def test_report_accounts_for_every_file_and_summarises(kaggle_zip: Path):
    report = read_source(kaggle_zip).report

    assert report.usable
    assert report.given == 182
    assert sum(report.status_counts().values()) == report.given
    as_dict = json.loads(json.dumps(report.to_dict()))
    assert as_dict["files"] == {"given": 182, "accepted": 182, "converted": 0, "rejected": 0, "ignored": 0}
    text = report.summary_text()
    assert "train " in text and "182" in text  # the table's grand total
    assert "PublicTest 21, PrivateTest 21" in text
    assert "Usable: yes" in text


def test_same_base_name_in_two_classes_gives_two_samples(tmp_path: Path):
    root = synthetic.write_kaggle_tree(tmp_path / "data", n_train=3, n_test=1)
    # FER-2013 itself has Training_52789098.jpg in both neutral/ and surprise/.
    twin = root / "train" / "surprise" / "Training_0.jpg"
    assert (root / "train" / "angry" / "Training_0.jpg").is_file() and not twin.exists()
    _write_image(twin, np.full((48, 48), 200, dtype=np.uint8))

    dataset = read_source(root).dataset

    keys = list(map(str, dataset.keys))
    first, second = keys.index("train/angry/Training_0.jpg"), keys.index("train/surprise/Training_0.jpg")
    assert dataset.labels[first] == CLASS_INDEX["angry"]
    assert dataset.labels[second] == CLASS_INDEX["surprise"]
    assert len(dataset) == 7 * 4 + 1


def test_junk_entries_are_ignored_and_counted(tmp_path: Path):
    source = synthetic.write_kaggle_zip(tmp_path / "fer.zip", n_train=2, n_test=1)
    with zipfile.ZipFile(source, "a") as archive:
        archive.writestr("train/", b"")  # a directory entry
        archive.writestr("__MACOSX/train/angry/._Training_0.jpg", b"\0\5\26\7")
        archive.writestr("train/angry/.DS_Store", b"junk")
        archive.writestr("test/happy/Thumbs.db", b"junk")
        archive.writestr("README.txt", b"not part of the layout")

    report = read_source(source).report

    ignored = {i.path: i.reason for i in report.issues if i.status == "ignored"}
    assert set(ignored) == {
        "train/",
        "__MACOSX/train/angry/._Training_0.jpg",
        "train/angry/.DS_Store",
        "test/happy/Thumbs.db",
        "README.txt",
    }
    assert ignored["train/"] == "directory entry"
    assert "outside" in ignored["README.txt"]
    assert report.accepted == 21 and report.given == 26
    assert sum(report.status_counts().values()) == report.given
    assert "Ignored:" in report.summary_text()


def test_duplicates_and_leakage_are_found(tmp_path: Path):
    root = synthetic.write_kaggle_tree(tmp_path / "data", n_train=3, n_test=2)
    angry = sorted((root / "train" / "angry").iterdir())
    happy = sorted((root / "train" / "happy").iterdir())
    test_fear = sorted((root / "test" / "fear").iterdir())
    copies = {
        root / "train" / "angry" / "Training_900.jpg": angry[0],  # same class: duplicate only
        root / "train" / "sad" / "Training_901.jpg": happy[0],  # other class: conflicting labels
        root / "train" / "fear" / "Training_902.jpg": test_fear[0],  # test image in train: leakage
    }
    for target, original in copies.items():
        target.write_bytes(original.read_bytes())
    blank = np.full((48, 48), 0, dtype=np.uint8)
    _write_image(root / "train" / "neutral" / "Training_903.jpg", blank)
    _write_image(root / "test" / "neutral" / "PublicTest_904.jpg", blank)  # blank, and leakage too

    report = read_source(root).report

    assert report.duplicates == {
        "groups": 4,
        "files": 8,
        "conflicting_groups": 1,
        "conflicting_files": 2,
        "largest_group": 2,
        "constant_images": 2,
        "dropped": 0,
    }
    assert report.leakage == {"test_images": 2, "train_images": 2, "label_mismatch": 0, "dropped": 0}
    assert any("carry different labels" in w for w in report.warnings)
    assert "4 groups, 8 files in them, 1 groups with conflicting labels" in report.summary_text()


def test_pixel_duplicates_found_across_formats(tmp_path: Path):
    # The same pixels as PNG and as a re-encoded PNG with other metadata: different bytes, same image.
    root = synthetic.write_kaggle_tree(tmp_path / "data", n_train=2, n_test=1, fmt="PNG")
    original = sorted((root / "train" / "happy").iterdir())[0]
    pixels = np.asarray(Image.open(original))
    copy = root / "train" / "happy" / "Training_950.png"
    Image.fromarray(pixels, mode="L").save(copy, format="PNG", compress_level=0)
    assert copy.read_bytes() != original.read_bytes()

    report = read_source(root).report

    assert report.duplicates["groups"] == 1 and report.duplicates["files"] == 2


def test_zip_and_csv_checksums_are_file_hashes(kaggle_zip: Path, fer_csv: Path):
    for path in (kaggle_zip, fer_csv):
        expected = hashlib.sha256(path.read_bytes()).hexdigest()
        assert source_checksum(path) == source_checksum(str(path)) == expected
    assert read_source(fer_csv).report.source_sha256 == hashlib.sha256(fer_csv.read_bytes()).hexdigest()


def test_directory_checksum_depends_on_names_and_contents_only(tmp_path: Path):
    first = synthetic.write_kaggle_tree(tmp_path / "a", n_train=2, n_test=1)
    second = synthetic.write_kaggle_tree(tmp_path / "b", n_train=2, n_test=1)
    some_file = first / "train" / "angry" / "Training_0.jpg"
    os.utime(some_file, (0, 0))  # timestamps must not matter

    checksum = source_checksum(first)
    assert checksum == source_checksum(second) == read_source(first).report.source_sha256
    assert len(checksum) == 64 and int(checksum, 16) >= 0

    moved = some_file.rename(some_file.with_name("Training_0b.jpg"))
    renamed = source_checksum(first)
    assert renamed != checksum
    moved.write_bytes(moved.read_bytes() + b"\0")
    assert source_checksum(first) not in (checksum, renamed)


def test_reading_is_deterministic(kaggle_zip: Path):
    first, second = read_source(kaggle_zip), read_source(kaggle_zip)

    np.testing.assert_array_equal(first.dataset.images, second.dataset.images)
    np.testing.assert_array_equal(first.dataset.keys, second.dataset.keys)
    assert first.dataset.manifest == second.dataset.manifest
    assert first.report.to_dict() == second.report.to_dict()


def test_options_are_recorded(kaggle_zip: Path):
    options = IngestOptions(convert=True, duplicate_policy="drop", drop_leakage=True, strict=False)
    result = read_source(kaggle_zip, options)

    assert result.dataset.manifest["options"] == {
        "convert": True,
        "duplicate_policy": "drop",
        "drop_leakage": True,
        "strict": False,
        "max_member_bytes": 64 * 2**20,
        "max_compression_ratio": 100.0,
    }
    assert result.report.to_dict()["options"] == result.dataset.manifest["options"]
