"""Prediction log and `fer-pipeline monitor`: a log of FER test faces is not drift, one of
brightness-shifted or rotated faces (or a skewed class mix) is.

Logs are built by calling the observer directly with a stand-in classifier's
probabilities (the labels as predictions, or a skewed mix), so no model is needed."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from fer_pipeline import cli, synthetic
from fer_pipeline.classes import CLASS_INDEX, CLASSES
from fer_pipeline.dataset import FerDataset
from fer_pipeline.errors import EXIT_DRIFT, EXIT_UNUSABLE_INPUT, EXIT_USAGE
from fer_pipeline.ingest import read_source
from fer_pipeline.monitoring import Thresholds, compare_log, reference_from_dataset
from fer_pipeline.prediction_log import FIELDS, Observed, PredictionLog, read_log

# ---- a stand-in classifier and the logs it makes ----------------------------------------


def stand_in_probabilities(labels: np.ndarray, confidence: float = 0.8) -> np.ndarray:
    """Probabilities that pick ``labels``: ``confidence`` on the label, the rest spread."""
    probs = np.full((len(labels), len(CLASSES)), (1 - confidence) / (len(CLASSES) - 1))
    probs[np.arange(len(labels)), labels] = confidence
    return probs


def skewed_labels(n: int, seed: int = 0) -> np.ndarray:
    """Mostly "happy": the mix of a model facing an audience unlike the training set."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random(n) < 0.7, CLASS_INDEX["happy"], rng.integers(0, len(CLASSES), n))


def brighter(images: np.ndarray) -> np.ndarray:
    return np.clip(images.astype(np.float32) + 50, 0, 255)


def rotated(images: np.ndarray) -> np.ndarray:
    """Turned by 30 degrees, the corners filled black, as a tilted camera's crops come out."""
    return np.stack([ndimage.rotate(i.astype(np.float32), 30, reshape=False, order=1, cval=0) for i in images])


def write_log(path: Path, images: np.ndarray, labels: np.ndarray, face_size: int | None = None) -> Path:
    with PredictionLog(path, "fer-emotion@1", flush_every=64) as log:
        for crop, probs in zip(images.astype(np.float32), stand_in_probabilities(labels)):
            log.observe(crop, probs, face_size=face_size)
    return path


def monitor(log: Path, dataset: Path, capsys, *extra: str) -> tuple[int, str, str]:
    code = cli.main(["-q", "monitor", str(log), "--against", str(dataset), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---- generated FER-style data -------------------------------------------------------------


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A Kaggle-layout zip: 100 train and 60 test images per class."""
    return synthetic.write_kaggle_zip(tmp_path_factory.mktemp("fer") / "fer2013.zip", n_train=100, n_test=60)


@pytest.fixture(scope="module")
def dataset(source) -> FerDataset:
    return read_source(source).dataset


@pytest.fixture(scope="module")
def test_split(dataset) -> tuple[np.ndarray, np.ndarray]:
    index = dataset.indices("test")
    return dataset.images[index], dataset.labels[index].astype(np.int64)


def test_log_lines_carry_the_documented_fields_and_no_image(tmp_path):
    crop = np.full((48, 48), 100, np.float32)
    crop[:24] = 140
    with PredictionLog(tmp_path / "p.jsonl", "fer@2") as log:
        log.observe(crop, stand_in_probabilities(np.array([3]), 0.9)[0], face_size=120)
        log.observe(crop, stand_in_probabilities(np.array([0]))[0])
    first, second = read_log(tmp_path / "p.jsonl")
    assert tuple(first) == FIELDS and first["model_version"] == "fer@2" and first["time"].endswith("+00:00")
    assert (first["face_size"], first["brightness"], first["contrast"]) == (120, 120.0, 20.0)
    assert (first["predicted"], first["confidence"], second["predicted"], second["face_size"]) == (
        "happy",
        0.9,
        "angry",
        None,
    )
    assert len((tmp_path / "p.jsonl").read_text()) < 400  # two short lines: no pixels


def test_observe_faces_pairs_each_crop_with_its_box_size(tmp_path):
    seen = Observed()
    seen(np.zeros((48, 48), np.float32), stand_in_probabilities(np.array([1]))[0])
    with PredictionLog(tmp_path / "p.jsonl", "m") as log:
        log.observe_faces(seen, [{"box": [10, 20, 96, 90]}])
    assert read_log(tmp_path / "p.jsonl")[0]["face_size"] == 96


def test_concurrent_writers_lose_no_line(tmp_path):
    path = tmp_path / "shared.jsonl"
    crop, probs = np.zeros((48, 48), np.float32), stand_in_probabilities(np.array([2]))[0]

    def writer(name: str) -> None:
        log = PredictionLog(path, name)  # one log object each, as separate processes have
        for _ in range(50):
            log.observe(crop, probs)

    threads = [threading.Thread(target=writer, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    records = read_log(path)
    assert len(records) == 200 and {r["model_version"] for r in records} == {"w0", "w1", "w2", "w3"}


def test_the_test_split_is_not_drift(tmp_path, source, test_split, capsys):
    log = write_log(tmp_path / "p.jsonl", *test_split)
    code, out, err = monitor(log, source, capsys)
    assert code == 0, out + err
    assert "verdict: no drift" in out or "verdict: watch" in out


@pytest.mark.parametrize("shift", [brighter, rotated], ids=["brighter", "rotated"])
def test_shifted_faces_are_drift_and_named(tmp_path, source, test_split, capsys, shift):
    images, labels = test_split
    log = write_log(tmp_path / "p.jsonl", shift(images), labels)
    code, out, err = monitor(log, source, capsys)
    assert code == EXIT_DRIFT, out
    assert err.startswith("drift: brightness") and "verdict: DRIFT in brightness" in out


def test_a_skewed_class_mix_is_drift(tmp_path, source, test_split, capsys):
    images, labels = test_split
    log = write_log(tmp_path / "p.jsonl", images, skewed_labels(len(labels)))
    code, out, err = monitor(log, source, capsys, "--json")
    report = json.loads(out)
    assert code == EXIT_DRIFT and report["drifted"] == ["predicted class"] and "predicted class" in err
    mix = next(f["shares"] for f in report["features"] if f["name"] == "predicted class")
    assert mix["happy"]["live"] > 0.6 > mix["happy"]["reference"]


def test_thresholds_are_options(tmp_path, source, test_split, capsys):
    images, labels = test_split
    log = write_log(tmp_path / "p.jsonl", brighter(images), labels)
    code, _, _ = monitor(log, source, capsys, "--drift", "50", "--watch", "40")
    assert code == 0
    assert monitor(log, source, capsys, "--drift", "0.1", "--watch", "0.2")[0] == EXIT_USAGE
    code, _, err = monitor(log, source, capsys, "--drift", "inf", "--watch", "inf")  # could never report drift
    assert code == EXIT_USAGE and "both finite" in err


def test_a_small_log_is_unreliable_not_drift(tmp_path, source, test_split, capsys):
    images, labels = test_split
    log = write_log(tmp_path / "p.jsonl", brighter(images[:30]), labels[:30])
    code, out, _ = monitor(log, source, capsys)
    assert code == 0 and "only 30 faces (< 200): the estimate is unreliable" in out and "verdict: unreliable" in out
    table = out.split("verdict")[0]
    assert " drift" not in table and " watch" not in table and table.count("unreliable") >= 3  # one per feature


def test_a_canonical_dataset_folder_is_a_reference_too(tmp_path, dataset, test_split, capsys):
    folder = dataset.save(tmp_path / "canonical")
    log = write_log(tmp_path / "p.jsonl", brighter(test_split[0]), test_split[1], face_size=150)
    code, out, _ = monitor(log, folder, capsys)
    assert code == EXIT_DRIFT and "face size: median 150 px, 0.0% under 48 px (not compared" in out


def test_only_one_model_versions_lines_with_model_version(tmp_path, source, test_split, capsys):
    log = write_log(tmp_path / "p.jsonl", *test_split)
    code, _, err = monitor(log, source, capsys, "--model-version", "other@9")
    assert code == EXIT_USAGE and "has no lines of model version 'other@9'" in err


BAD_LOGS = {
    "missing": (None, "does not exist"),
    "empty": ("", "is empty"),
    "missing fields": ('{"a": 1}\n', ":1: missing field(s)"),
    "its only line cut short": ('{"time": "2026', ":1: not a JSON record"),  # nothing whole to read
    "a broken line between whole ones": ("GOOD\n" + '{"time": "2026\n' + "GOOD\n", ":2: not a JSON record"),
    "a list": ("[1, 2]\n", ":1: a JSON list"),
    "unknown class": ("GOOD\nGOOD\n" + "BAD_CLASS\n", ":3: predicted 'bored' is not one of"),
    "brightness out of range": ("BAD_BRIGHTNESS\n", ":1: brightness must be a number from 0 to 255"),
    "a version that is not text": ("GOOD\nBAD_VERSION\n", ":2: model_version must be text, got None"),
    "a time that is not text": ("BAD_TIME\n", ":1: time must be text, got 12"),
}


@pytest.mark.parametrize("name", sorted(BAD_LOGS))
def test_a_bad_log_is_one_line_naming_file_and_line(tmp_path, source, capsys, name):
    text, message = BAD_LOGS[name]
    good = {"time": "t", "model_version": "m", "face_size": None, "brightness": 1, "contrast": 1}
    good |= {"predicted": "sad", "confidence": 0.5}
    log = tmp_path / "p.jsonl"
    if text is not None:
        replacements = {
            "GOOD": good,
            "BAD_CLASS": good | {"predicted": "bored"},
            "BAD_BRIGHTNESS": good | {"brightness": 300},
            "BAD_VERSION": good | {"model_version": None},
            "BAD_TIME": good | {"time": 12},
        }
        for key, record in replacements.items():
            text = text.replace(key, json.dumps(record))
        log.write_text(text)
    code, _, err = monitor(log, source, capsys)
    assert code == EXIT_UNUSABLE_INPUT and message in err and str(log) in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_the_blank_line_case_is_named_by_its_line(tmp_path, source, capsys):
    record = {"time": "t", "model_version": "m", "face_size": None, "brightness": 1, "contrast": 1}
    record |= {"predicted": "sad", "confidence": 0.5}
    log = tmp_path / "p.jsonl"
    log.write_text(json.dumps(record) + "\n\n" + json.dumps(record) + "\n")
    code, _, err = monitor(log, source, capsys)
    assert code == EXIT_UNUSABLE_INPUT and f"{log}:2: blank line" in err


def test_an_unknown_dataset_is_one_line(tmp_path, test_split, capsys):
    log = write_log(tmp_path / "p.jsonl", *test_split)
    code, _, err = monitor(log, tmp_path / "nope.zip", capsys)
    assert code in (EXIT_UNUSABLE_INPUT, EXIT_USAGE) and "nope.zip does not exist" in err
    assert len(err.strip().splitlines()) == 1


# ---- the real FER-2013 zip (skipped where absent) ---------------------------------------------


@pytest.fixture(scope="module")
def real_dataset(real_zip) -> FerDataset:
    return read_source(real_zip).dataset


def real_log_records(tmp_path: Path, dataset: FerDataset, shift=None, name: str = "p.jsonl"):
    index = dataset.indices("test")
    images = dataset.images[index] if shift is None else shift(dataset.images[index])
    return read_log(write_log(tmp_path / name, images, dataset.labels[index].astype(np.int64)))


@pytest.mark.realdata
def test_real_test_split_is_not_drift_and_shifted_faces_are(real_dataset, tmp_path):
    reference = reference_from_dataset(real_dataset)
    plain = compare_log(real_log_records(tmp_path, real_dataset), reference, Thresholds())
    assert plain.reliable and plain.drifted == [], [(f.name, f.psi) for f in plain.features]
    for shift in (brighter, rotated):
        report = compare_log(real_log_records(tmp_path, real_dataset, shift, shift.__name__), reference, Thresholds())
        psis = [(f.name, round(f.psi, 3)) for f in report.features]
        assert set(report.drifted) & {"brightness", "contrast"}, (shift.__name__, psis)


@pytest.mark.realdata
def test_real_monitor_command_against_the_canonical_dataset(real_dataset, tmp_path, capsys):
    folder = real_dataset.save(tmp_path / "canonical")
    index = real_dataset.indices("test")
    log = write_log(tmp_path / "p.jsonl", rotated(real_dataset.images[index]), real_dataset.labels[index])
    code, out, _ = monitor(log, folder, capsys)
    assert code == EXIT_DRIFT and "verdict: DRIFT in " in out


# ---- fer-pipeline predict --log ---------------------------------------------------------------


def test_predict_log_appends_a_line_per_face_named_by_the_registry_version(tmp_path, capsys):
    keras = pytest.importorskip("keras")
    cv2 = pytest.importorskip("cv2")
    from fer_pipeline.registry import LocalRegistry
    from tiny_models import tiny_model

    (tmp_path / "trained").mkdir()
    keras.utils.set_random_seed(1)
    tiny_model().save(tmp_path / "trained" / "model.keras")
    LocalRegistry(tmp_path / "registry").register(
        "fer", tmp_path / "trained", {"macro_f1": 0.4}, labels={}, description=""
    )
    photos = [tmp_path / "a.png", tmp_path / "b.png"]
    for photo, level in zip(photos, (90, 160)):
        cv2.imwrite(str(photo), np.full((60, 60), level, np.uint8))
    log = tmp_path / "logs" / "p.jsonl"

    for ref in ("fer@1", str(tmp_path / "trained")):
        argv = ["-q", "predict", ref, *map(str, photos), "--no-detect", "--log", str(log)]
        assert cli.main([*argv, "--registry", str(tmp_path / "registry")]) == 0
    results, _ = json.JSONDecoder().raw_decode(capsys.readouterr().out)  # the first run's
    records = read_log(log)
    assert [r["model_version"] for r in records] == ["fer@1"] * 2 + [str(tmp_path / "trained")] * 2
    assert [r["face_size"] for r in records] == [60] * 4
    assert [round(r["brightness"]) for r in records] == [90, 160, 90, 160]
    assert records[0]["predicted"] == results[0]["faces"][0]["label"]


def test_a_last_line_cut_short_is_left_out_with_a_warning(tmp_path, caplog):
    """A writer stopped mid-line (a crash, a full disk) leaves its last line unfinished."""
    from fer_pipeline.prediction_log import read_log

    good = {"time": "t", "model_version": "m", "face_size": None, "brightness": 1, "contrast": 1}
    good |= {"predicted": "sad", "confidence": 0.5}
    log = tmp_path / "p.jsonl"
    log.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n" + '{"time": "2026')
    caplog.set_level("WARNING")
    assert read_log(log) == [good, good]
    assert f"{log}:3: the last line is cut short" in caplog.text
