"""Bad input: every case is refused with a message naming the file/value and the fix,
or accepted only when the options allow it, with the report adding up."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_pipeline import synthetic
from fer_pipeline.classes import CLASSES
from fer_pipeline.errors import ConfigError, DatasetError
from fer_pipeline.ingest import IngestOptions, read_source

LENIENT = IngestOptions(strict=False)


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """A small Kaggle folder tree: 3 train and 2 test JPEGs per class."""
    return synthetic.write_kaggle_tree(tmp_path / "data", n_train=3, n_test=2)


def first_file(root: Path, split: str, class_name: str) -> Path:
    """The first image of one class folder, by name."""
    return sorted((root / split / class_name).iterdir())[0]


def zip_tree(root: Path, target: Path, prefix: str = "") -> Path:
    """Zip a folder tree, optionally below an extra top folder ``prefix``."""
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                archive.write(path, prefix + path.relative_to(root).as_posix())
    return target


def encode(pixels: np.ndarray, fmt: str, mode: str = "L") -> bytes:
    """Image bytes of an array in a format and mode."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def assert_accounted(report) -> None:
    """Every input is accepted, converted, rejected or ignored, exactly once."""
    assert sum(report.status_counts().values()) == report.given


# --- per-file problems ------------------------------------------------------


def test_corrupt_jpeg_is_rejected(tree: Path):
    victim = first_file(tree, "train", "angry")
    victim.write_bytes(victim.read_bytes()[: len(victim.read_bytes()) // 2])

    expected = r"1 file\(s\) in data cannot be used: train/angry/Training_0\.jpg: corrupt JPEG image"
    with pytest.raises(DatasetError, match=expected):
        read_source(tree)


def test_zero_byte_file_is_rejected(tree: Path):
    first_file(tree, "test", "sad").write_bytes(b"")

    with pytest.raises(DatasetError, match=r"test/sad/\w+\.jpg: empty file \(0 bytes\)"):
        read_source(tree)


def test_non_image_with_image_extension_is_rejected(tree: Path):
    (tree / "train" / "fear" / "notes.jpg").write_text("this is not a picture")

    with pytest.raises(DatasetError, match=r"train/fear/notes\.jpg: not an image"):
        read_source(tree)


@pytest.mark.parametrize(
    "name, data, described",
    [
        ("rgb.png", encode(np.full((48, 48), 90, np.uint8), "PNG", "RGB"), "PNG RGB 48x48"),
        ("big.jpg", encode(np.full((64, 64), 90, np.uint8), "JPEG"), "JPEG L 64x64"),
        ("gray16.png", encode(np.full((48, 48), 90 * 257, np.uint16), "PNG", "I;16"), "PNG I;16 48x48"),
    ],
)
def test_odd_image_needs_convert(tree: Path, name: str, data: bytes, described: str):
    (tree / "train" / "happy" / name).write_bytes(data)

    expected = rf"train/happy/{name}: {described} image, expected 48x48 grayscale.*--convert \(the CLI\) or allow_conversion=true"
    with pytest.raises(DatasetError, match=expected):
        read_source(tree)

    result = read_source(tree, IngestOptions(convert=True))
    report, dataset = result.report, result.dataset
    assert report.converted == 1 and report.rejected == 0
    assert [(i.path, i.reason) for i in report.issues] == [(f"train/happy/{name}", f"converted from {described}")]
    assert report.accepted + report.converted == len(dataset) == 7 * 5 + 1
    assert_accounted(report)
    image = dataset.images[list(dataset.keys).index(f"train/happy/{name}")]
    assert image.shape == (48, 48) and image.dtype == np.uint8
    assert abs(int(image.mean()) - 90) <= 2  # a uniform grey stays that grey
    assert result.dataset.manifest["ingest"]["converted"] == 1


# --- layout problems --------------------------------------------------------


def test_missing_class_folder_is_named(tree: Path):
    for path in (tree / "test" / "disgust").iterdir():
        path.unlink()
    (tree / "test" / "disgust").rmdir()

    expected = r"missing class folder\(s\) test/disgust/.*exactly the seven class folders"
    with pytest.raises(DatasetError, match=expected):
        read_source(tree)


def test_unknown_class_folder_is_named(tree: Path):
    extra = tree / "train" / "contempt"
    extra.mkdir()
    (extra / "Training_999.jpg").write_bytes(first_file(tree, "train", "angry").read_bytes())

    with pytest.raises(DatasetError, match=r"unknown class folder\(s\) train/contempt/"):
        read_source(tree)


def test_empty_class_folder_is_an_error(tree: Path):
    for path in (tree / "train" / "disgust").iterdir():
        path.unlink()
    (tree / "train" / "disgust" / ".DS_Store").write_bytes(b"junk")  # junk does not count as an image

    with pytest.raises(DatasetError, match=r"empty class folder\(s\) train/disgust/"):
        read_source(tree)


def test_empty_class_folder_in_zip_is_an_error(tree: Path, tmp_path: Path):
    for path in (tree / "test" / "surprise").iterdir():
        path.unlink()
    source = zip_tree(tree, tmp_path / "fer.zip")
    with zipfile.ZipFile(source, "a") as archive:
        archive.writestr("test/surprise/", b"")  # the folder exists only as a directory entry

    with pytest.raises(DatasetError, match=r"empty class folder\(s\) test/surprise/"):
        read_source(source)


@pytest.mark.parametrize("split", ["test", "train"])
def test_missing_split_folder_is_named(tree: Path, tmp_path: Path, split: str):
    source = zip_tree(tree, tmp_path / "fer.zip")
    kept = tmp_path / "kept.zip"
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(kept, "w") as new:
        for info in old.infolist():
            if not info.filename.startswith(split + "/"):
                new.writestr(info, old.read(info))

    with pytest.raises(DatasetError, match=rf"no {split}/ folder"):
        read_source(kept)


def test_no_layout_at_all_is_explained(tmp_path: Path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(encode(np.zeros((48, 48), np.uint8), "JPEG"))

    with pytest.raises(DatasetError, match=r"no train/ or test/ folder at the top or one folder down"):
        read_source(folder)


@pytest.mark.parametrize("prefix", ["archive/", "fer2013/"])
def test_layout_one_folder_down_is_accepted(tree: Path, tmp_path: Path, prefix: str):
    plain = read_source(zip_tree(tree, tmp_path / "plain.zip")).dataset
    nested = read_source(zip_tree(tree, tmp_path / "nested.zip", prefix)).dataset

    np.testing.assert_array_equal(nested.keys, plain.keys)  # keys are relative to the found root
    np.testing.assert_array_equal(nested.images, plain.images)
    np.testing.assert_array_equal(nested.labels, plain.labels)


def test_folder_one_level_down_is_accepted(tree: Path, tmp_path: Path):
    outer = tmp_path / "download"
    outer.mkdir()
    tree.rename(outer / "archive")

    dataset = read_source(outer).dataset

    assert len(dataset) == 35 and str(dataset.keys[0]).startswith("test/angry/")


def test_zip_slip_entry_is_refused(tree: Path, tmp_path: Path):
    for entry in ("../evil.jpg", "train/angry/../../../evil.jpg", "/etc/evil.jpg"):
        source = zip_tree(tree, tmp_path / "slip.zip")
        with zipfile.ZipFile(source, "a") as archive:
            archive.writestr(zipfile.ZipInfo(entry), b"x")

        with pytest.raises(DatasetError, match=rf"entry '{entry}', which points outside the archive"):
            read_source(source)


def test_symlink_outside_root_is_refused(tree: Path, tmp_path: Path):
    outside = tmp_path / "elsewhere.jpg"
    outside.write_bytes(first_file(tree, "train", "angry").read_bytes())
    (tree / "train" / "angry" / "link.jpg").symlink_to(outside)

    expected = r"train/angry/link\.jpg is a symlink to .*elsewhere\.jpg, outside the dataset folder"
    with pytest.raises(DatasetError, match=expected):
        read_source(tree)


def test_symlink_inside_root_is_followed(tree: Path):
    target = first_file(tree, "train", "happy")
    (tree / "train" / "happy" / "Training_990.jpg").symlink_to(target)

    result = read_source(tree)

    assert len(result.dataset) == 36
    assert result.report.duplicates["groups"] == 1  # the link and its target


def test_missing_source_and_unknown_kind(tmp_path: Path):
    with pytest.raises(DatasetError, match=r"nowhere\.zip does not exist"):
        read_source(tmp_path / "nowhere.zip")
    odd = tmp_path / "data.parquet"
    odd.write_bytes(b"PAR1")
    with pytest.raises(DatasetError, match=r"Cannot tell what .*data\.parquet is"):
        read_source(odd)
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\3\4 not really")
    with pytest.raises(DatasetError, match=r"broken\.zip is not a readable zip file"):
        read_source(broken)


# --- fer2013.csv ------------------------------------------------------------


def write_csv(path: Path, rows: list[str], header: str = "emotion,pixels,Usage") -> Path:
    """A CSV from literal lines, after the header."""
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def valid_rows() -> list[str]:
    """One valid row per (class, split), CSV codes 0-6."""
    pixels = " ".join(["128"] * 2304)
    return [f"{code},{pixels},{usage}" for usage in ("Training", "PublicTest") for code in range(7)]


@pytest.mark.parametrize(
    "bad_pixels, reason",
    [
        (" ".join(["1"] * 2303), r"2303 pixel values, expected 2304"),
        (" ".join(["1"] * 2305), r"2305 pixel values, expected 2304"),
        (" ".join(["1"] * 2303 + ["abc"]), r"non-numeric pixel value 'abc'"),
        (" ".join(["1"] * 2303 + ["1.5"]), r"non-numeric pixel value '1\.5'"),
        (" ".join(["1"] * 2303 + ["256"]), r"pixel values must be 0-255, found 1\.\.256"),
    ],
)
def test_csv_malformed_pixels_are_rejected_with_row(tmp_path: Path, bad_pixels: str, reason: str):
    rows = valid_rows()
    rows.insert(1, f"3,{bad_pixels},Training")  # row 3: header is row 1
    source = write_csv(tmp_path / "fer2013.csv", rows)

    with pytest.raises(DatasetError, match=rf"fer2013\.csv:3: {reason}"):
        read_source(source)
    report = read_source(source, LENIENT).report
    assert report.rejected == 1 and report.accepted == 14 and report.given == 15


def test_csv_label_out_of_range_is_rejected(tmp_path: Path):
    rows = valid_rows() + [f"7,{' '.join(['0'] * 2304)},Training", f"x,{' '.join(['0'] * 2304)},Training"]
    source = write_csv(tmp_path / "fer2013.csv", rows)

    expected = (
        r"2 file\(s\).*fer2013\.csv:16: emotion 7 is out of range 0-6; "
        r"fer2013\.csv:17: emotion 'x' is not an integer"
    )
    with pytest.raises(DatasetError, match=expected):
        read_source(source)


def test_csv_unknown_usage_is_rejected(tmp_path: Path):
    source = write_csv(tmp_path / "fer2013.csv", valid_rows() + [f"0,{' '.join(['0'] * 2304)},Validation"])

    expected = r"fer2013\.csv:16: unknown Usage 'Validation', expected one of Training, PublicTest, PrivateTest"
    with pytest.raises(DatasetError, match=expected):
        read_source(source)


def test_csv_missing_column_is_named(tmp_path: Path):
    rows = [row.rsplit(",", 1)[0] for row in valid_rows()]
    source = write_csv(tmp_path / "train.csv", rows, header="emotion,pixels")

    with pytest.raises(DatasetError, match=r"train\.csv has no column\(s\) Usage \(header: emotion,pixels\)"):
        read_source(source)


def test_csv_short_row_and_blank_line(tmp_path: Path):
    source = write_csv(tmp_path / "fer2013.csv", valid_rows() + ["", "3,Training"])

    report = read_source(source, LENIENT).report

    by_path = {i.path: (i.status, i.reason) for i in report.issues}
    assert by_path["fer2013.csv:16"] == ("ignored", "blank line")
    assert by_path["fer2013.csv:17"] == ("rejected", "2 field(s), expected emotion,pixels,Usage")
    assert_accounted(report)


def test_unreadable_csv_is_refused(tmp_path: Path):
    huge = write_csv(tmp_path / "huge.csv", valid_rows() + ["0," + "1 " * 70_000 + ",Training"])
    with pytest.raises(DatasetError, match=r"huge\.csv row 16: unreadable CSV \(field larger than field limit"):
        read_source(huge)
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"emotion,pixels,Usage\n0,\xff\xfe,Training\n")
    with pytest.raises(DatasetError, match=r"latin\.csv is not UTF-8 text"):
        read_source(latin)


def test_csv_without_a_test_class_is_refused(tmp_path: Path):
    rows = [row for row in valid_rows() if not row.startswith("1,") or "Training" in row]

    with pytest.raises(DatasetError, match=r"no usable images for test/disgust"):
        read_source(write_csv(tmp_path / "fer2013.csv", rows))


# --- duplicates and leakage ---------------------------------------------------


@pytest.fixture()
def conflicting_tree(tree: Path) -> Path:
    """The tree plus one happy image copied into sad/ (identical pixels, two labels)."""
    original = tree / "train" / "happy" / "Training_9.jpg"
    (tree / "train" / "sad" / "Training_990.jpg").write_bytes(original.read_bytes())
    return tree


def test_conflicting_duplicates_kept_by_default(conflicting_tree: Path):
    result = read_source(conflicting_tree, IngestOptions(duplicate_policy="keep"))

    assert len(result.dataset) == 36
    assert result.report.duplicates["conflicting_groups"] == 1
    assert any("carry different labels" in w for w in result.report.warnings)


def test_conflicting_duplicates_dropped(conflicting_tree: Path):
    result = read_source(conflicting_tree, IngestOptions(duplicate_policy="drop"))

    keys = set(map(str, result.dataset.keys))
    assert len(result.dataset) == 34
    assert "train/sad/Training_990.jpg" not in keys and "train/happy/Training_9.jpg" not in keys
    dropped = sorted(d.path for d in result.report.dropped)
    assert dropped == ["train/happy/Training_9.jpg", "train/sad/Training_990.jpg"]
    assert result.dataset.manifest["duplicates"]["dropped"] == 2
    assert result.dataset.manifest["ingest"]["dropped"] == 2
    assert result.dataset.manifest["num_samples"] == 34


def test_conflicting_duplicates_fail(conflicting_tree: Path):
    with pytest.raises(
        DatasetError,
        match=r"1 group\(s\) of identical images in data carry different labels, e\.g\. "
        r"train/happy/Training_9\.jpg \(happy\) = train/sad/Training_990\.jpg \(sad\).*duplicate_policy='drop'",
    ):
        read_source(conflicting_tree, IngestOptions(duplicate_policy="fail"))


def test_leakage_dropped_from_train(tree: Path):
    leaked = first_file(tree, "test", "fear")
    (tree / "train" / "fear" / "Training_991.jpg").write_bytes(leaked.read_bytes())

    kept = read_source(tree)
    dropped = read_source(tree, IngestOptions(drop_leakage=True))

    assert kept.report.leakage["test_images"] == dropped.report.leakage["test_images"] == 1
    assert len(kept.dataset) == 36 and len(dropped.dataset) == 35
    assert [d.path for d in dropped.report.dropped] == ["train/fear/Training_991.jpg"]
    assert str(leaked.relative_to(tree).as_posix()) in set(map(str, dropped.dataset.keys))  # test copy stays
    assert dropped.dataset.manifest["leakage"]["dropped"] == 1


def test_invalid_duplicate_policy_is_a_config_error():
    with pytest.raises(ConfigError, match=r"duplicate_policy must be one of keep, drop, fail, got 'ignore'"):
        IngestOptions(duplicate_policy="ignore")


# --- strict and quarantine ----------------------------------------------------


def break_files(root: Path, count: int) -> list[str]:
    """Empty ``count`` train files across classes; return their relative paths."""
    broken = []
    for class_name in CLASSES[:count]:
        path = first_file(root, "train", class_name)
        path.write_bytes(b"")
        broken.append(path.relative_to(root).as_posix())
    return broken


def test_strict_error_lists_first_rejects_and_count(tree: Path):
    break_files(tree, 7)

    expected = (
        r"^7 file\(s\) in data cannot be used: train/angry/Training_0\.jpg: empty file .*"
        r"\(and 2 more\)\. Fix or remove them \(`fer-pipeline validate --quarantine` lists every one\)"
    )
    with pytest.raises(DatasetError, match=expected):
        read_source(tree)


def test_quarantine_keeps_totals_adding_up(tree: Path, tmp_path: Path):
    broken = break_files(tree, 3)
    (tree / "test" / "happy" / "notes.jpg").write_text("not an image")
    (tree / "train" / "angry" / "rgb.png").write_bytes(encode(np.zeros((48, 48), np.uint8), "PNG", "RGB"))
    (tree / "train" / ".DS_Store").write_bytes(b"junk")

    result = read_source(tree, IngestOptions(strict=False, convert=True))
    report = result.report

    assert report.given == 35 + 3
    assert (report.accepted, report.converted, report.rejected, report.ignored) == (32, 1, 4, 1)
    assert_accounted(report)
    assert len(result.dataset) == report.accepted + report.converted
    rejected = sorted(i.path for i in report.issues if i.status == "rejected")
    assert rejected == sorted(broken + ["test/happy/notes.jpg"])
    assert not set(rejected) & set(map(str, result.dataset.keys))
    assert not report.usable
    assert "4 file(s) rejected and left out (strict=False)" in report.warnings
    assert "Usable: no (4 file(s) rejected)" in report.summary_text()
    expected = {"accepted": 32, "converted": 1, "rejected": 4, "ignored": 1, "dropped": 0}
    assert result.dataset.manifest["ingest"] == expected


def test_quarantine_that_empties_a_class_is_refused(tree: Path):
    for path in (tree / "test" / "disgust").iterdir():
        path.write_bytes(b"")

    with pytest.raises(DatasetError, match=r"no usable images for test/disgust after ingest") as caught:
        read_source(tree, LENIENT)
    report = caught.value.report  # the report comes with the error, complete
    assert report.rejected == 2 and report.counts["test"]["disgust"] == 0
    assert "Usable: no (2 file(s) rejected)" in report.summary_text()


def test_conflict_failure_carries_a_printable_report(conflicting_tree: Path):
    with pytest.raises(DatasetError) as caught:
        read_source(conflicting_tree, IngestOptions(duplicate_policy="fail"))

    assert "1 groups with conflicting labels" in caught.value.report.summary_text()
