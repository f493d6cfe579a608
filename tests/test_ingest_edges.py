"""Edges of `validate` / `ingest` a QA pass found: what ingest tells about skipped files,
ambiguous or oversized CSV text, output folders, cloud sources given to validate, encrypted
zips, special files, huge images and EXIF orientation."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_pipeline import cli, synthetic
from fer_pipeline.dataset import FerDataset
from fer_pipeline.errors import DatasetError
from fer_pipeline.ingest import IngestOptions, decode_image, outcomes, read_source
from fer_pipeline.steps import ingest_step

REPO_ROOT = Path(__file__).resolve().parents[1]
PIXELS = " ".join(["7"] * 2304)


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def every_class_rows(pixels: str = PIXELS) -> list[str]:
    """One train and one test row per CSV class code."""
    return [f"{code},{pixels},{usage}" for code in range(7) for usage in ("Training", "PublicTest")]


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# --- 1. ingest tells what it skipped -----------------------------------------------------


def test_ingest_logs_the_file_counts_and_warnings_and_keeps_stdout_json(tmp_path, capsys, caplog):
    source = synthetic.write_kaggle_tree(tmp_path / "data", n_train=3, n_test=2)
    shutil.copytree(source / "test", source / "validation")  # 14 files outside train/ and test/
    caplog.set_level(logging.INFO)

    assert cli.main(["ingest", str(source), "--out", str(tmp_path / "out")]) == 0

    assert set(json.loads(capsys.readouterr().out)) == {"uri", "uploaded_files", "reused"}
    logged = caplog.text
    assert "Files: 49 given: 35 accepted, 0 converted, 0 rejected, 14 ignored" in logged
    assert "ignored 14 file(s) outside train/ and test/ (in validation)" in logged


# --- 2. a repeated CSV column ------------------------------------------------------------


def test_a_csv_column_given_twice_is_refused_naming_it(tmp_path, capsys):
    source = write_csv(tmp_path / "fer2013.csv", "emotion,pixels,Usage,emotion", [r + ",3" for r in every_class_rows()])

    with pytest.raises(DatasetError, match=r"fer2013\.csv has the column\(s\) emotion more than once"):
        read_source(source)
    assert cli.main(["validate", str(source)]) == 1
    assert "emotion more than once" in one_error_line(capsys.readouterr().err)


# --- 3. validate --json with rejected files ----------------------------------------------


def test_validate_writes_its_json_report_also_when_files_are_rejected(tmp_path):
    source = synthetic.write_kaggle_tree(tmp_path / "data", n_train=3, n_test=2)
    (source / "train" / "happy" / "broken.jpg").write_bytes(b"not an image")
    report = tmp_path / "report.json"

    assert cli.main(["validate", str(source), "--json", str(report)]) == 1

    written = json.loads(report.read_text())
    assert written["usable"] is False and written["files"]["rejected"] == 1
    assert [i["path"] for i in written["issues"]] == ["train/happy/broken.jpg"]


# --- 4. the output folder ----------------------------------------------------------------


def test_ingest_refuses_an_output_folder_holding_other_files_and_writes_nothing(tmp_path, capsys):
    source = synthetic.write_kaggle_zip(tmp_path / "fer.zip", n_train=3, n_test=2)
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("secret")

    assert cli.main(["ingest", str(source), "--out", str(out)]) == 2

    assert "notes.txt, sub/" in one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fer.zip", "out"]
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "sub"]


def test_ingest_writes_into_an_empty_folder_and_replaces_an_earlier_dataset(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    ingest_step(str(synthetic.write_kaggle_zip(tmp_path / "a.zip", n_train=3, n_test=2)), out)
    assert len(FerDataset.load(out)) == 35

    ingest_step(str(synthetic.write_kaggle_zip(tmp_path / "b.zip", n_train=4, n_test=2)), out)

    assert len(FerDataset.load(out)) == 42 and FerDataset.load(out).manifest["source"].endswith("b.zip")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "b.zip", "out"]  # nothing left beside it


def test_an_ingest_interrupted_while_writing_leaves_the_previous_dataset_intact(tmp_path, monkeypatch):
    out = tmp_path / "out"
    ingest_step(str(synthetic.write_kaggle_zip(tmp_path / "a.zip", n_train=3, n_test=2)), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def half_written(file, **arrays):
        Path(file).write_bytes(b"PK\x03\x04 half an archive")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", half_written)
    with pytest.raises(KeyboardInterrupt):
        ingest_step(str(synthetic.write_kaggle_zip(tmp_path / "b.zip", n_train=4, n_test=2)), out)

    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert len(FerDataset.load(out)) == 35
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "b.zip", "out"]


# --- 5. long text in messages ------------------------------------------------------------


def test_a_csv_without_its_header_is_named_without_quoting_the_whole_row(tmp_path):
    source = write_csv(tmp_path / "fer2013.csv", every_class_rows()[0], every_class_rows()[1:])

    with pytest.raises(DatasetError) as caught:
        read_source(source)

    message = str(caught.value)
    assert "no column(s) emotion, pixels, Usage" in message and "header row missing" in message
    assert len(message) < 300


def test_comma_separated_pixels_are_rejected_briefly_saying_spaces_are_needed(tmp_path):
    rows = [*every_class_rows(), '0,"' + PIXELS.replace(" ", ",") + '",Training']
    source = write_csv(tmp_path / "fer2013.csv", "emotion,pixels,Usage", rows)

    report = read_source(source, IngestOptions(strict=False)).report

    [rejected] = [i for i in report.issues if i.status == "rejected"]
    assert "must be separated by spaces" in rejected.reason and len(rejected.reason) < 150


# --- 6. validate reads local paths -------------------------------------------------------


@pytest.mark.parametrize("source", ["gs://b/fer2013.zip", "kaggle:msambare/fer2013"])
def test_validate_says_it_reads_local_paths_when_given_a_cloud_source(source, capsys):
    assert cli.main(["validate", source]) == 2

    line = one_error_line(capsys.readouterr().err)
    assert "validate reads a local path" in line and "fer-pipeline ingest" in line and "does not exist" not in line


# --- 7. encrypted zip --------------------------------------------------------------------


def encrypted(path: Path) -> Path:
    """The zip with every entry flagged password-protected (bit 0), as `zip -P` makes it."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
    central = data.find(b"PK\x01\x02")
    for info in infos:
        data[info.header_offset + 6] |= 1  # local header flags
    while central != -1:
        data[central + 8] |= 1  # central directory flags
        central = data.find(b"PK\x01\x02", central + 4)
    path.write_bytes(bytes(data))
    return path


def test_a_password_protected_zip_is_refused_in_one_line(tmp_path, capsys):
    source = encrypted(synthetic.write_kaggle_zip(tmp_path / "enc.zip", n_train=3, n_test=2))

    assert cli.main(["validate", str(source)]) == 1

    line = one_error_line(capsys.readouterr().err)
    assert line == f"error: {source} is password-protected; re-create it without a password."


# --- 8. CSV progress ---------------------------------------------------------------------


def test_reading_a_csv_logs_progress(tmp_path, monkeypatch, caplog):
    source = write_csv(tmp_path / "fer2013.csv", "emotion,pixels,Usage", every_class_rows())
    monkeypatch.setattr(outcomes, "PROGRESS_EVERY", 5)
    caplog.set_level(logging.INFO)

    read_source(source)

    assert "read 5 rows of fer2013.csv" in caplog.text and "read 10 rows of fer2013.csv" in caplog.text


# --- 9. huge images ----------------------------------------------------------------------


def test_an_image_over_the_pixel_limit_is_rejected_without_a_python_warning(tmp_path, monkeypatch):
    source = synthetic.write_kaggle_tree(tmp_path / "data", n_train=3, n_test=2)
    Image.new("L", (60, 60)).save(source / "train" / "happy" / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # 48x48 under it; 60x60 over it, not twice over

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = read_source(source, IngestOptions(strict=False, convert=True)).report

    assert [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)] == []
    assert {i.path: i.reason.split(":")[0] for i in report.issues} == {
        "train/happy/huge.png": "image too large to decode safely"
    }


# --- 10. special files -------------------------------------------------------------------


@pytest.mark.parametrize("command", ["validate", "ingest"])
def test_a_source_that_is_no_regular_file_or_folder_is_a_wrong_command_line(tmp_path, capsys, command):
    fifo = tmp_path / "f.zip"
    os.mkfifo(fifo)  # opening it to read would wait forever
    extra = ["--out", str(tmp_path / "out")] if command == "ingest" else []

    assert cli.main([command, str(fifo), *extra]) == 2

    assert "f.zip is not a regular file or folder" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


# --- 11. EXIF orientation ----------------------------------------------------------------


def jpeg_rotated_by_exif(mode: str) -> bytes:
    """Left half black, right half white, stored with Orientation=6 (a viewer turns it 90 degrees clockwise)."""
    pixels = np.zeros((48, 48), np.uint8)
    pixels[:, 24:] = 255
    image = Image.fromarray(pixels).convert(mode)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif, quality=95)
    return buffer.getvalue()


@pytest.mark.parametrize("mode, convert", [("L", False), ("RGB", True)])
def test_exif_orientation_is_applied_whether_or_not_the_image_is_converted(mode, convert):
    pixels, _ = decode_image(jpeg_rotated_by_exif(mode), convert)

    # Turned clockwise, the white right half is at the bottom.
    assert pixels[:20].mean() < 30 and pixels[28:].mean() > 225


# --- 12. docs ----------------------------------------------------------------------------


def test_reliability_doc_quotes_the_conversion_advice_as_the_code_gives_it():
    with pytest.raises(Exception) as caught:
        decode_image(jpeg_rotated_by_exif("RGB"), convert=False)
    advice = str(caught.value).split("; ")[-1]

    doc = (REPO_ROOT / "docs" / "reliability.md").read_text()
    assert advice == "convert such images with --convert (the CLI) or allow_conversion=true (the pipeline)"
    assert advice in doc and "ingest with convert=True" not in doc
    assert "fails on the first rejected file" not in doc  # a strict ingest reads every file first


def test_ingest_into_the_working_directory_writes_there(tmp_path, monkeypatch):
    """The folder itself is never renamed: `--out .` keeps being the process's (and the
    shell's) working directory, with the dataset in it."""
    source = synthetic.write_kaggle_zip(tmp_path / "a.zip", n_train=3, n_test=2)
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    for _ in range(2):  # a first ingest, then one replacing it
        ingest_step(str(source), Path("."))
        assert len(FerDataset.load(Path("."))) == 35
    assert sorted(p.name for p in here.iterdir()) == ["images.npz", "ingest_report.json", "manifest.json"]
