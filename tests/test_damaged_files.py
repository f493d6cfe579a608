"""Damaged files a command reads (a model, a metrics file) are named in one line with
exit code 1, not reported as "File not found" through a traceback."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from fer_pipeline import cli
from fer_pipeline.errors import UnusableFileError
from fer_pipeline.model import load_model


def damaged_keras(tmp_path: Path) -> Path:
    path = tmp_path / "model.keras"
    path.write_bytes(b"\x00 half a download")
    return path


def wrong_zip_keras(tmp_path: Path) -> Path:
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "a zip, but not a Keras model")
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (damaged_keras, "is not a Keras model file (a .keras file is a zip archive)"),
        (wrong_zip_keras, "cannot be loaded as a Keras model"),
    ],
)
def test_load_model_names_a_damaged_file(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(UnusableFileError) as info:
        load_model(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_load_model_names_a_missing_file(tmp_path):
    with pytest.raises(UnusableFileError, match="does not exist or is not a file"):
        load_model(tmp_path / "absent.keras")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "{model}", "{model}"], "is not a Keras model file"),
        (
            ["register", "--model", "{model}", "--metrics", "{metrics}", "--registry", "{tmp}/registry"],
            "is not the metrics.json that `evaluate` writes",
        ),
        (
            ["register", "--model", "{model}", "--metrics", "{tmp}/absent.json", "--registry", "{tmp}/registry"],
            "absent.json does not exist",
        ),
    ],
)
def test_cli_reports_damaged_inputs_in_one_line_with_exit_1(tmp_path, capsys, argv, message):
    model = damaged_keras(tmp_path)
    metrics = tmp_path / "metrics.json"
    metrics.write_text("{not json")
    code = cli.main([part.format(model=model, metrics=metrics, tmp=tmp_path) for part in argv])
    err = capsys.readouterr().err.strip()
    assert code == 1 and message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "registry").exists()
