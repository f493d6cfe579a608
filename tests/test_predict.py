"""Prediction on photos: face detection, crops, one batched model call, annotation, the CLI."""

from __future__ import annotations

import argparse
import json
import zipfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from fer_pipeline import cli_models
from fer_pipeline.classes import CLASSES
from fer_pipeline.errors import FerError
from fer_pipeline.registry import LocalRegistry

cv2 = pytest.importorskip("cv2")
keras = pytest.importorskip("keras")

from fer_pipeline.predict import DetectorOptions, crop_face, load_model_ref, predict_images  # noqa: E402

# The drawn faces below are cartoons: the Haar cascade finds them, MTCNN (the default,
# trained on photos) mostly does not. These tests are about batching, boxes, crops and
# annotation, so they use Haar; tests/test_faces.py covers the detectors themselves.
HAAR = DetectorOptions(name="haar")


def build_tiny_model():
    """A stand-in with fer_pipeline.model's contract: (48, 48, 1) raw pixels -> softmax."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((48, 48, 1), name="image")
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(len(CLASSES), activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs)


class CountingModel:
    """Wraps a Keras model and counts predict calls (all faces must go in one call)."""

    def __init__(self, model):
        self.model, self.calls, self.batch_sizes = model, 0, []
        self.input_shape, self.output_shape = model.input_shape, model.output_shape

    def predict(self, x, **kwargs):
        self.calls += 1
        self.batch_sizes.append(len(x))
        return self.model.predict(x, **kwargs)


@pytest.fixture(scope="module")
def model():
    return build_tiny_model()


@pytest.fixture(scope="module")
def model_dir(model, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("trained")
    model.save(directory / "model.keras")
    return directory


def draw_face(canvas: np.ndarray, center: tuple[int, int], size: int) -> None:
    """Draw a plain frontal face (oval, brows, eyes, nose, mouth) that the Haar cascade finds."""
    cx, cy = center
    cv2.ellipse(canvas, (cx, cy), (int(size * 0.42), int(size * 0.55)), 0, 0, 360, (200, 200, 200), -1)
    eye_y = cy - int(size * 0.12)
    for side in (-1, 1):
        ex = cx + side * int(size * 0.17)
        cv2.ellipse(canvas, (ex, eye_y), (int(size * 0.09), int(size * 0.045)), 0, 0, 360, (40, 40, 40), -1)
        brow_y = eye_y - int(size * 0.1)
        cv2.line(
            canvas, (ex - int(size * 0.1), brow_y), (ex + int(size * 0.1), brow_y), (60, 60, 60), max(2, size // 30)
        )
    cv2.line(canvas, (cx, eye_y + 10), (cx, cy + int(size * 0.12)), (170, 170, 170), 3)
    cv2.ellipse(canvas, (cx, cy + int(size * 0.28)), (int(size * 0.15), int(size * 0.04)), 0, 0, 360, (70, 70, 70), -1)


def scene(width: int, height: int, faces: list[tuple[int, int, int]], seed: int = 0) -> np.ndarray:
    """A color BGR photo: a blurred noisy background with drawn faces at (cx, cy, size)."""
    rng = np.random.default_rng(seed)
    canvas = rng.normal((90, 110, 100), 12, size=(height, width, 3)).clip(0, 255).astype(np.uint8)
    for cx, cy, size in faces:
        draw_face(canvas, (cx, cy), size)
    return cv2.GaussianBlur(canvas, (0, 0), 2)


def write(path: Path, image: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), image)
    return path


def center_of(box) -> tuple[float, float]:
    x, y, w, h = box
    return x + w / 2, y + h / 2


def test_finds_each_face_and_classifies_all_in_one_batch(model, tmp_path):
    two = write(tmp_path / "two.jpg", scene(640, 400, [(170, 200, 140), (470, 210, 120)]))
    one = write(tmp_path / "one.png", scene(300, 300, [(150, 150, 130)], seed=1))
    counting = CountingModel(model)

    results = predict_images(counting, [two, one], detector=HAAR)

    assert counting.calls == 1 and counting.batch_sizes == [3]
    assert [r["image"] for r in results] == [str(two), str(one)]
    assert [len(r["faces"]) for r in results] == [2, 1]
    # Left to right, each box centred on the drawn face (within a fifth of its size).
    for face, (cx, cy, size) in zip(
        results[0]["faces"] + results[1]["faces"], [(170, 200, 140), (470, 210, 120), (150, 150, 130)]
    ):
        fx, fy = center_of(face["box"])
        assert abs(fx - cx) < size / 5 and abs(fy - cy) < size / 5, face["box"]
        assert set(face["scores"]) == set(CLASSES)
        assert sum(face["scores"].values()) == pytest.approx(1.0, abs=1e-4)
        assert face["label"] == max(face["scores"], key=face["scores"].get)
    assert all("note" not in r and "error" not in r for r in results)


def test_scores_are_the_models_on_the_crop(model, tmp_path):
    image = scene(300, 300, [(150, 150, 130)], seed=2)
    path = write(tmp_path / "face.png", image)
    face = predict_images(model, [path], margin=0.3, detector=HAAR)[0]["faces"][0]
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    expected = model.predict(crop_face(gray, face["box"], 48, 0.3)[None, ..., None], verbose=0)[0]
    np.testing.assert_allclose([face["scores"][c] for c in CLASSES], expected, atol=1e-6)


def test_large_photo_boxes_are_in_original_pixels(model, tmp_path):
    path = write(tmp_path / "big.jpg", scene(2400, 1600, [(1800, 500, 480)]))
    faces = predict_images(model, [path], detector=HAAR)[0]["faces"]
    assert len(faces) == 1
    fx, fy = center_of(faces[0]["box"])
    assert abs(fx - 1800) < 96 and abs(fy - 500) < 96 and faces[0]["box"][2] > 300


def test_no_face_gives_an_empty_list_and_a_note(model, tmp_path):
    path = write(tmp_path / "wall.png", scene(320, 240, []))
    [result] = predict_images(model, [path])
    assert result["faces"] == [] and "--no-detect" in result["note"] and "error" not in result


def test_unreadable_files_get_an_error_entry_and_the_rest_is_classified(model, tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    empty = tmp_path / "empty.png"
    empty.touch()
    missing = tmp_path / "missing.png"
    good = write(tmp_path / "good.png", scene(300, 300, [(150, 150, 130)]))

    results = predict_images(model, [text, empty, missing, good], detector=HAAR)

    for entry, path in zip(results[:3], [text, empty, missing]):
        assert entry["faces"] == [] and str(path) in entry["error"]
    assert len(results[3]["faces"]) == 1


def test_skip_detection_classifies_the_whole_image_as_fer_crop(model, tmp_path):
    pixels = np.random.default_rng(5).integers(0, 256, (48, 48), dtype=np.uint8)
    path = write(tmp_path / "crop.png", pixels)
    [result] = predict_images(model, [path], skip_detection=True)
    [face] = result["faces"]
    assert face["box"] == [0, 0, 48, 48]
    expected = model.predict(pixels[None, ..., None].astype("float32"), verbose=0)[0]
    np.testing.assert_allclose([face["scores"][c] for c in CLASSES], expected, atol=1e-6)


def test_annotations_get_one_file_per_readable_image(model, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = write(tmp_path / "a" / "photo.jpg", scene(300, 300, [(150, 150, 130)]))
    b = write(tmp_path / "b" / "photo.jpg", scene(320, 240, []))
    out = tmp_path / "annotated"

    results = predict_images(model, [a, b, tmp_path / "missing.png"], annotate_dir=out, detector=HAAR)

    written = sorted(p.name for p in out.iterdir())
    assert len(written) == 2  # same stem twice: no overwrite; the unreadable file gets none
    annotated = cv2.imread(results[0]["annotated"])
    assert annotated.shape == (300, 300, 3)
    original = cv2.imread(str(a))
    x, y, w, h = results[0]["faces"][0]["box"]
    assert not np.array_equal(annotated[y, x : x + w], original[y, x : x + w])  # the box was drawn
    assert "annotated" not in results[2]


def test_crop_at_the_image_border_keeps_its_size(model):
    gray = np.arange(100 * 80, dtype=np.uint8).reshape(100, 80)
    crop = crop_face(gray, (0, 0, 40, 40), 48, margin=0.5)
    assert crop.shape == (48, 48) and crop.dtype == np.float32
    with pytest.raises(FerError, match="margin"):
        predict_images(model, [], margin=-0.1)


# ---- loading models ----------------------------------------------------------------


def test_load_model_from_folder_file_and_registry(model, model_dir, tmp_path):
    probe = np.zeros((1, 48, 48, 1), np.float32)
    expected = model.predict(probe, verbose=0)
    registry = LocalRegistry(tmp_path / "registry")
    registry.register("fer", model_dir, {"macro_f1": 0.4}, labels={}, description="tiny")

    for ref in (str(model_dir), str(model_dir / "model.keras"), "fer@champion", "fer", "fer@1"):
        loaded = load_model_ref(ref, registry.root)
        np.testing.assert_allclose(loaded.predict(probe, verbose=0), expected, atol=1e-6)


def test_unknown_model_ref_says_what_was_tried(tmp_path):
    with pytest.raises(FerError, match=r"not a local path, not a gs:// URI, and not in the registry.*registered: none"):
        load_model_ref("fer@champion", tmp_path / "registry")
    with pytest.raises(FerError, match="no model.keras"):
        load_model_ref(str(tmp_path), None)


def test_load_model_from_gcs_downloads_model_keras(model_dir):
    def fake_download(filename):
        Path(filename).write_bytes((model_dir / "model.keras").read_bytes())

    with mock.patch("google.cloud.storage.Client", autospec=True) as client_cls:
        blob = client_cls.return_value.bucket.return_value.blob.return_value
        blob.download_to_filename.side_effect = fake_download
        loaded = load_model_ref("gs://models-bucket/runs/42/model/", None)

    client_cls.return_value.bucket.assert_called_once_with("models-bucket")
    client_cls.return_value.bucket.return_value.blob.assert_called_once_with("runs/42/model/model.keras")
    assert loaded.output_shape == (None, len(CLASSES))


# ---- `predict` CLI -------------------------------------------------------------------


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fer-pipeline")
    cli_models.add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_predict_cli_prints_json_and_exit_codes(model_dir, tmp_path, capsys):
    face = write(tmp_path / "face.png", scene(300, 300, [(150, 150, 130)]))
    wall = write(tmp_path / "wall.png", scene(200, 200, []))
    broken = tmp_path / "broken.jpg"
    broken.write_text("nope")

    assert run_cli(["predict", str(model_dir), str(face), str(wall), str(broken), "--detector", "haar"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [len(r["faces"]) for r in results] == [1, 0, 0]
    assert "note" in results[1] and "error" in results[2]

    assert run_cli(["predict", str(model_dir), str(broken), "--no-detect"]) == cli_models.EXIT_NO_IMAGE_READ
    assert "none of the images could be read" in capsys.readouterr().err

    assert (
        run_cli(["predict", "nope@champion", str(face), "--registry", str(tmp_path / "r")])
        == cli_models.EXIT_USER_ERROR
    )
    assert capsys.readouterr().err.startswith("error: Model 'nope@champion'")


# ---- real FER-2013 faces -----------------------------------------------------------


@pytest.mark.realdata
def test_detects_real_fer_faces_pasted_into_a_photo(real_zip, model, tmp_path):
    """Real faces (read from the zip at test time, never stored) upscaled into a larger scene."""
    with zipfile.ZipFile(real_zip) as archive:
        names = sorted(n for n in archive.namelist() if n.startswith("test/happy/"))[:12]
        crops = [cv2.imdecode(np.frombuffer(archive.read(n), np.uint8), cv2.IMREAD_GRAYSCALE) for n in names]
    paths = []
    for i, crop in enumerate(crops):
        canvas = np.full((360, 480), 120, np.uint8)
        canvas[100:244, 150:294] = cv2.resize(crop, (144, 144), interpolation=cv2.INTER_CUBIC)
        paths.append(write(tmp_path / f"real_{i}.png", cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR)))

    results = predict_images(model, paths, detector=HAAR)

    # The Haar cascade finds about two thirds of FER-2013's tightly cropped faces.
    found = [r for r in results if r["faces"]]
    assert len(found) >= len(paths) // 2, [r.get("note") for r in results]
    for result in found:
        fx, fy = center_of(result["faces"][0]["box"])
        assert abs(fx - 222) < 30 and abs(fy - 172) < 30


def test_classify_photo_finds_the_faces_of_one_decoded_photo_as_predict_images_does(model, tmp_path):
    import cv2

    from fer_pipeline.predict import classify_photo, decode_image, predict_images

    photo = tmp_path / "crop.png"
    cv2.imwrite(str(photo), np.full((48, 48), 120, np.uint8))
    faces = classify_photo(model, decode_image(photo.read_bytes(), "crop.png"), skip_detection=True)
    (entry,) = predict_images(model, [photo], skip_detection=True)
    assert faces == entry["faces"] and len(faces[0]["scores"]) == 7


def test_observe_sees_each_face_crop_the_model_saw_with_its_probabilities(model, tmp_path):
    import cv2

    from fer_pipeline.predict import classify_photo, decode_image, predict_images

    photo = tmp_path / "crop.png"
    cv2.imwrite(str(photo), np.full((60, 60), 90, np.uint8))
    seen = []
    (entry,) = predict_images(model, [photo], skip_detection=True, observe=lambda c, p: seen.append((c, p)))
    faces = classify_photo(
        model, decode_image(photo.read_bytes(), "p"), skip_detection=True, observe=lambda c, p: seen.append((c, p))
    )
    assert len(seen) == 2 and seen[0][0].shape == (48, 48) and float(seen[0][0].mean()) == pytest.approx(90, abs=1)
    assert max(entry["faces"][0]["scores"].values()) == pytest.approx(float(seen[0][1].max()), abs=1e-6)
    assert faces == entry["faces"]
