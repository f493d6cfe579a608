"""Damaged inputs of the pipeline steps (a split file, a dataset folder or its pointer, a
phase's history.json) are refused in one line that names the file, with exit code 1, and
the refused command writes nothing."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fer_pipeline import cli, synthetic
from fer_pipeline.config import TrainConfig
from fer_pipeline.errors import DatasetError, UnusableFileError
from fer_pipeline.runs import load_histories
from fer_pipeline.split import Split
from fer_pipeline.steps import evaluate_step, load_dataset
from fer_pipeline.training_data import phase_data

TINY = (
    "--backbone compact --weights none --frozen-epochs 1 --finetune-epochs 1 --compact-widths 4,4 "
    "--dense-units 8 --dropouts 0 --batch-size 16 --run-eagerly true --precision float32"
).split()


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """A tiny canonical dataset (ingested through the CLI) and its split, made once."""
    root = tmp_path_factory.mktemp("made")
    source = synthetic.write_kaggle_zip(root / "fer2013.zip", n_train=10, n_test=2)
    assert cli.main(["-q", "ingest", str(source), "--out", str(root / "ds")]) == 0
    assert cli.main(["-q", "split", str(root / "ds"), "--out", str(root / "split.json")]) == 0
    return root


@pytest.fixture()
def ds(made, tmp_path) -> Path:
    """A copy of the tiny dataset that a test may damage."""
    return Path(shutil.copytree(made / "ds", tmp_path / "ds"))


def _split_json(made: Path) -> dict:
    return json.loads((made / "split.json").read_text())


def _refused(argv: list[str], capsys, *named: Path | str) -> str:
    """Run the CLI; assert exit 1 and one line naming each of ``named``; return that line."""
    code = cli.main(["-q", *map(str, argv)])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 1, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    for name in named:
        assert str(name) in err, err
    return err


# --- split files ---------------------------------------------------------------------------


def _write_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.txt", "not a split")
    return path


def _split_variant(change):
    def make(tmp_path: Path, made: Path) -> Path:
        data = _split_json(made)
        change(data)
        path = tmp_path / "split.json"
        path.write_text(json.dumps(data))
        return path

    return make


def _text(text: str):
    def make(tmp_path: Path, made: Path) -> Path:
        path = tmp_path / "split.json"
        path.write_text(text)
        return path

    return make


BAD_SPLITS = {
    "missing": (lambda tmp, made: tmp / "absent.json", "does not exist"),
    "a folder": (lambda tmp, made: Path(shutil.copytree(made / "ds", tmp / "folder")), "is not a split file"),
    "empty": (_text(""), "is not a split file"),
    "bad JSON": (_text('{"train_indices": [1, 2'), "is not a split file"),
    "a JSON list": (_text("[1, 2]"), "expected a JSON object"),
    "no class_weights": (_split_variant(lambda d: d.pop("class_weights")), "class_weights"),
    "a class weight short": (_split_variant(lambda d: d["class_weights"].pop("happy")), "lacks happy"),
    "a zip": (lambda tmp, made: _write_zip(tmp / "split.zip"), "is not a split file"),
    "a negative index": (
        _split_variant(lambda d: d["train_indices"].append(-1)),
        "at train_indices.56, expected 0 or more, not -1",
    ),
    "a fractional index": (_split_variant(lambda d: d["val_indices"].append(1.5)), "whole number"),
    "indices as a string": (_split_variant(lambda d: d.update(val_indices="1,2")), "val_indices"),
    "a string weight": (_split_variant(lambda d: d["class_weights"].update(sad="x")), "class_weights.sad"),
    "val_fraction 1": (_split_variant(lambda d: d.update(val_fraction=1)), "val_fraction"),
}


@pytest.mark.parametrize("case", BAD_SPLITS)
def test_split_load_names_a_damaged_split_file(tmp_path, made, case):
    make, message = BAD_SPLITS[case]
    path = make(tmp_path, made)
    with pytest.raises(UnusableFileError) as caught:
        Split.load(path)
    text = str(caught.value)
    assert str(path) in text and message in text, text
    assert "fer-pipeline split" in text, text


@pytest.mark.parametrize("command", ["train-frozen", "fine-tune"])
@pytest.mark.parametrize("case", ["missing", "a folder", "bad JSON", "a JSON list", "no class_weights", "a zip"])
def test_training_steps_refuse_a_damaged_split_in_one_line(tmp_path, made, capsys, command, case):
    split = BAD_SPLITS[case][0](tmp_path, made)
    out = tmp_path / "out"
    model = ["--model", made / "absent.keras"] if command == "fine-tune" else []
    _refused([command, made / "ds", "--split", split, *model, "--out", out, *TINY], capsys, split)
    assert not out.exists()


def test_a_split_for_a_larger_dataset_names_the_file_the_index_and_the_image_count(tmp_path, made):
    dataset = load_dataset(str(made / "ds"))
    path = _split_variant(lambda d: d["val_indices"].append(len(dataset) + 5))(tmp_path, made)
    split = Split.load(path)  # the file alone is well formed
    with pytest.raises(DatasetError) as caught:
        phase_data(dataset, split, TrainConfig())
    text = str(caught.value)
    assert str(path) in text and f"index {len(dataset) + 5}" in text and f"{len(dataset)} images" in text, text
    assert "rerun `fer-pipeline split` on this dataset" in text


def test_a_split_made_in_code_with_a_negative_index_is_refused_too(made):
    dataset = load_dataset(str(made / "ds"))
    split = Split.load(made / "split.json")
    bad = Split(np.array([-1, 0]), split.val_indices, {}, {}, split.class_weights, split.config)
    with pytest.raises(DatasetError, match="holds index -1"):
        phase_data(dataset, bad, TrainConfig())


def test_a_split_whose_indices_land_on_test_images_is_refused(tmp_path, made):
    """A same-sized dataset's split could point at this one's test images: training on them
    would leak the test split into the reported accuracy."""
    dataset = load_dataset(str(made / "ds"))
    test_image = int(dataset.indices("test")[0])
    path = _split_variant(lambda d: d["train_indices"].append(test_image))(tmp_path, made)
    with pytest.raises(DatasetError, match=rf"puts 1 of this dataset's test images \(index {test_image} first\)"):
        phase_data(dataset, Split.load(path), TrainConfig())


def test_a_split_records_its_dataset_and_refuses_another_one(tmp_path, made):
    split = Split.load(made / "split.json")
    dataset = load_dataset(str(made / "ds"))
    assert split.dataset_md5 and split.dataset_md5 == dataset.manifest["files"]["images.npz"]["md5"]
    phase_data(dataset, split, TrainConfig())  # its own dataset: accepted
    other = dataclasses.replace(dataset, manifest={**dataset.manifest, "files": {"images.npz": {"md5": "other=="}}})
    with pytest.raises(
        DatasetError, match=rf"images.npz has MD5 {re.escape(split.dataset_md5)}, this one's is other=="
    ):
        phase_data(other, split, TrainConfig())
    unrecorded = _split_variant(lambda d: d.pop("dataset_images_md5"))(tmp_path, made)
    phase_data(other, Split.load(unrecorded), TrainConfig())  # a split written before it was recorded: not compared


def test_train_frozen_refuses_an_out_of_range_split_before_writing(tmp_path, made, capsys):
    path = _split_variant(lambda d: d["train_indices"].append(10_000))(tmp_path, made)
    out = tmp_path / "out"
    err = _refused(["train-frozen", made / "ds", "--split", path, "--out", out, *TINY], capsys, path)
    assert "index 10000" in err
    assert not out.exists()


def test_a_good_split_still_loads(made):
    split = Split.load(made / "split.json")
    assert split.source == str(made / "split.json") and len(split.train_indices) and len(split.val_indices)


# --- dataset folders ---------------------------------------------------------------------


def _damage(kind: str, ds: Path, tmp_path: Path) -> tuple[Path, str]:
    """Damage the dataset copy one way; return the path to pass and the file the message names."""
    if kind == "manifest not JSON":
        (ds / "manifest.json").write_text("{half")
        return ds, str(ds / "manifest.json")
    if kind == "manifest a list":
        (ds / "manifest.json").write_text("[]")
        return ds, str(ds / "manifest.json")
    if kind == "images truncated":
        data = (ds / "images.npz").read_bytes()
        (ds / "images.npz").write_bytes(data[: len(data) // 2])
        return ds, str(ds / "images.npz")
    if kind == "images missing":
        (ds / "images.npz").unlink()
        return ds, str(ds / "images.npz")
    if kind == "images not an npz":
        (ds / "images.npz").write_bytes(b"\x00" * 64)
        return ds, str(ds / "images.npz")
    if kind == "images lack an array":
        np.savez(ds / "images.npz", images=np.zeros((2, 48, 48), np.uint8))
        return ds, str(ds / "images.npz")
    if kind in CHANGED_ARRAYS:
        with np.load(ds / "images.npz") as data:
            arrays = dict(data)
        CHANGED_ARRAYS[kind](arrays)
        np.savez(ds / "images.npz", **arrays)
        return ds, str(ds / "images.npz")
    if kind == "no manifest":
        (ds / "manifest.json").unlink()
        return ds, str(ds)
    if kind == "absent folder":
        return tmp_path / "nowhere", str(tmp_path / "nowhere")
    if kind == "a zip":
        path = _write_zip(tmp_path / "data.zip")
        return path, str(path)
    if kind == "an empty file":
        path = tmp_path / "dataset.json"
        path.write_text("")
        return path, str(path)
    if kind == "pointer without uri":
        path = tmp_path / "dataset.json"
        path.write_text(json.dumps({"url": str(ds)}))
        return path, str(path)
    if kind == "pointer to itself":
        path = tmp_path / "dataset.json"
        path.write_text(json.dumps({"uri": str(path)}))
        return path, str(path)
    if kind == "pointer a list":
        path = tmp_path / "dataset.json"
        path.write_text(json.dumps([str(ds)]))
        return path, str(path)
    raise AssertionError(kind)


def _label_past_the_classes(arrays):
    arrays["labels"][:3] = 9


def _unknown_split_name(arrays):
    arrays["splits"] = np.where(np.arange(len(arrays["splits"])) < 5, "foo", arrays["splits"])


def _images_cropped(arrays):
    arrays["images"] = arrays["images"][:, :40, :40]


CHANGED_ARRAYS = {
    "a label past the classes": _label_past_the_classes,  # an IndexError in evaluate and training
    "an unknown split name": _unknown_split_name,  # those images silently left out of everything
    "images of another size": _images_cropped,  # a Keras shape error
}

DAMAGES = [
    *CHANGED_ARRAYS,
    "manifest not JSON",
    "manifest a list",
    "images truncated",
    "images missing",
    "images not an npz",
    "images lack an array",
    "no manifest",
    "absent folder",
    "a zip",
    "an empty file",
    "pointer without uri",
    "pointer to itself",
    "pointer a list",
]


@pytest.mark.parametrize("kind", DAMAGES)
def test_load_dataset_names_a_damaged_dataset(ds, tmp_path, kind):
    path, named = _damage(kind, ds, tmp_path)
    with pytest.raises(DatasetError) as caught:
        load_dataset(str(path))
    text = str(caught.value)
    assert named in text and "fer-pipeline ingest" in text, text


@pytest.mark.parametrize("kind", DAMAGES)
def test_split_refuses_a_damaged_dataset_and_writes_nothing(ds, tmp_path, capsys, kind):
    path, named = _damage(kind, ds, tmp_path)
    out = tmp_path / "out" / "split.json"
    _refused(["split", path, "--out", out], capsys, named)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["manifest a list", "images truncated", "a zip", "pointer to itself"])
def test_train_frozen_and_evaluate_refuse_a_damaged_dataset(ds, made, tmp_path, capsys, kind):
    path, named = _damage(kind, ds, tmp_path)
    out = tmp_path / "out"
    _refused(["train-frozen", path, "--split", made / "split.json", "--out", out, *TINY], capsys, named)
    _refused(["evaluate", path, "--model", made / "absent.keras", "--out", out], capsys, named)
    assert not out.exists()


def test_a_pointer_to_a_dataset_folder_still_loads(made, tmp_path):
    pointer = tmp_path / "dataset.json"
    pointer.write_text(json.dumps({"uri": str(made / "ds"), "manifest": {}, "uploaded_files": 0, "reused": False}))
    assert len(load_dataset(str(pointer))) == len(load_dataset(str(made / "ds"))) > 0


def test_a_pointer_to_another_file_is_refused(made, tmp_path):
    inner = tmp_path / "inner.json"
    inner.write_text(json.dumps({"uri": str(made / "ds")}))
    outer = tmp_path / "outer.json"
    outer.write_text(json.dumps({"uri": str(inner)}))
    with pytest.raises(DatasetError, match="a file, not a dataset folder") as caught:
        load_dataset(str(outer))
    assert str(outer) in str(caught.value)


# --- histories given to evaluate -----------------------------------------------------------


def _history_record(phase: str = "frozen", epochs: int = 2) -> dict:
    return {
        "phase": phase,
        "history": {"loss": [1.0] * epochs, "val_loss": [1.1] * epochs, "accuracy": [0.3] * epochs},
        "epochs_run": epochs,
        "best_epoch": epochs,
    }


def _history_file(tmp_path: Path, content: str, name: str = "history.json") -> Path:
    path = tmp_path / name
    path.write_text(content)
    return path


BAD_HISTORIES = {
    "not JSON": (lambda tmp, made: _history_file(tmp, "{bad"), "is not a history.json"),
    "a JSON list": (lambda tmp, made: _history_file(tmp, "[1, 2]"), "holds a JSON list"),
    "missing": (lambda tmp, made: tmp / "absent" / "history.json", "does not exist"),
    "a split file": (lambda tmp, made: made / "split.json", 'lacks "phase"'),
    "a folder": (lambda tmp, made: Path(shutil.copytree(made / "ds", tmp / "folder")), "is not a history.json"),
    "text metrics": (
        lambda tmp, made: _history_file(tmp, json.dumps({"phase": "frozen", "history": {"loss": "1.0"}})),
        "history.loss is not a list of numbers",
    ),
}


@pytest.mark.parametrize("case", BAD_HISTORIES)
def test_evaluate_refuses_a_bad_history_before_writing_anything(tmp_path, made, capsys, case):
    make, message = BAD_HISTORIES[case]
    history = make(tmp_path, made)
    good = _history_file(tmp_path, json.dumps(_history_record()), "good.json")
    out = tmp_path / "evaluation"
    model = made / "absent.keras"  # histories are checked first: no model is loaded, no metric written
    argv = ["evaluate", made / "ds", "--model", model, "--out", out, "--history", good, "--history", history]
    err = _refused(argv, capsys, history)
    assert message in err and "train-frozen" in err, err
    assert not out.exists()


@pytest.mark.parametrize("case", BAD_HISTORIES)
def test_evaluate_step_refuses_a_bad_history(tmp_path, made, case):
    make, message = BAD_HISTORIES[case]
    history = make(tmp_path, made)
    out = tmp_path / "evaluation"
    with pytest.raises(UnusableFileError) as caught:
        evaluate_step(str(made / "ds"), made / "absent.keras", out, history_paths=[history])
    assert str(history) in str(caught.value) and message in str(caught.value)
    assert not out.exists()


def test_histories_as_the_phases_write_them_are_read_in_order(tmp_path):
    frozen = _history_file(tmp_path, json.dumps(_history_record("frozen", 2)), "frozen.json")
    no_epochs = _history_file(tmp_path, json.dumps({"phase": "finetune", "history": {}}), "finetune.json")
    assert [h["phase"] for h in load_histories([frozen, no_epochs])] == ["frozen", "finetune"]
    assert load_histories([]) == []


def test_evaluate_with_good_histories_gets_past_them(tmp_path, made, capsys):
    good = _history_file(tmp_path, json.dumps(_history_record()), "good.json")
    argv = ["evaluate", made / "ds", "--model", made / "absent.keras", "--out", tmp_path / "evaluation"]
    code = cli.main(["-q", *map(str, argv), "--history", str(good)])
    err = capsys.readouterr().err
    assert code == 1 and "absent.keras" in err and str(good) not in err, err
