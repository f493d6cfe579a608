"""`predict` and `models` at the edges: photos of odd shapes and formats, models that are
not the project's, annotation names, and damaged registries. Each photo or model is tiny
and made here; nothing is trained."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from PIL import Image, ImageOps

cv2 = pytest.importorskip("cv2")
keras = pytest.importorskip("keras")

from fer_pipeline import cli  # noqa: E402
from fer_pipeline.faces import DETECTORS, DetectorOptions, Face, detect_faces  # noqa: E402
from fer_pipeline.predict import ModelOutputError, decode_image, predict_images  # noqa: E402
from fer_pipeline.registry import LocalRegistry  # noqa: E402
from tiny_models import tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def model_file(model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.keras"
    model.save(path)
    return path


def gray_photo(path: Path, width: int = 64, height: int = 48, mode: str = "L") -> Path:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)
    return path


def predict_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["-q", "predict", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---- photos ------------------------------------------------------------------------


@pytest.mark.parametrize("detector", DETECTORS)
@pytest.mark.parametrize("size", [(5000, 1), (1, 3000), (100_000, 1)])
def test_a_photo_one_pixel_thin_has_no_face_with_every_detector(detector, size):
    width, height = size
    assert detect_faces(np.full((height, width), 128, np.uint8), DetectorOptions(name=detector)) == []


def test_a_thin_photo_gets_a_note_and_the_others_are_still_classified(model, tmp_path):
    strip = gray_photo(tmp_path / "strip.png", 5000, 1)
    photo = gray_photo(tmp_path / "photo.png")
    results = predict_images(model, [strip, photo], detector=DetectorOptions(name="haar"))
    assert results[0]["faces"] == [] and "no face found" in results[0]["note"]
    assert "error" not in results[1]


def test_a_face_cut_off_by_the_edge_is_reported_inside_the_photo(model, tmp_path):
    photo = gray_photo(tmp_path / "photo.png", 640, 480)
    cut_off = Face((220, -28, 166, 166))  # the box a detector gives for a face above the top edge
    with mock.patch("fer_pipeline.predict.detect_faces", return_value=[cut_off, Face((560, 400, 120, 120))]):
        [result] = predict_images(model, [photo])
    assert [face["box"] for face in result["faces"]] == [[220, 0, 166, 138], [560, 400, 80, 80]]


def test_a_jpeg_stored_sideways_is_turned_upright_by_its_exif_orientation(model, tmp_path):
    upright = np.tile(np.linspace(0, 255, 60, dtype=np.uint8), (40, 1))  # 60 wide, 40 high
    exif = Image.Exif()
    exif[0x0112] = 8  # Orientation: viewers turn the stored pixels 90 degrees counter-clockwise
    path = tmp_path / "sideways.jpg"
    Image.fromarray(upright).transpose(Image.Transpose.ROTATE_270).save(path, exif=exif, quality=95)
    with Image.open(path) as stored:
        shown = np.asarray(ImageOps.exif_transpose(stored).convert("L"), dtype=int)  # what viewers show

    image = decode_image(path.read_bytes(), str(path))
    assert image.shape[:2] == shown.shape == (40, 60)
    assert np.abs(image.astype(int) - shown).mean() < 1 and np.abs(shown - upright).mean() < 3
    [result] = predict_images(model, [path], skip_detection=True)
    assert result["faces"][0]["box"] == [0, 0, 60, 40]


def test_animated_and_multi_page_files_say_only_their_first_frame_was_used(model, tmp_path):
    frames = [Image.fromarray(np.full((48, 48), level, np.uint8)) for level in (40, 120, 200)]
    gif, tif, single = tmp_path / "anim.gif", tmp_path / "pages.tif", tmp_path / "one.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:2], duration=100, loop=0)
    frames[0].save(tif, save_all=True, append_images=frames[1:])
    frames[0].save(single)

    results = predict_images(model, [gif, tif, single], skip_detection=True)

    assert "first of its 2 frames" in results[0]["note"] and "first of its 3 frames" in results[1]["note"]
    assert "note" not in results[2]
    assert all(len(r["faces"]) == 1 for r in results)


def test_float_and_32_bit_photos_are_refused_by_name_not_read_as_black(model, tmp_path):
    levels = np.random.default_rng(1).random((48, 48), dtype=np.float32)
    floats, ints = tmp_path / "float.tif", tmp_path / "int32.tif"
    Image.fromarray(levels).save(floats)  # mode F, 0..1
    Image.fromarray((levels * 1000).astype(np.int32)).save(ints)  # mode I
    good = gray_photo(tmp_path / "good.png")

    results = predict_images(model, [floats, ints, good], skip_detection=True)

    for entry, path in zip(results, (floats, ints)):
        assert entry["faces"] == [] and str(path) in entry["error"] and "8- or 16-bit" in entry["error"]
    assert len(results[2]["faces"]) == 1


# ---- annotation ----------------------------------------------------------------------


def test_annotated_copies_never_share_a_name(model, tmp_path):
    photos = [gray_photo(tmp_path / name) for name in ("x.jpg", "x-2.jpg", "x.png", "X.bmp")]
    out = tmp_path / "annotated"

    results = predict_images(model, photos, skip_detection=True, annotate_dir=out)

    written = [r["annotated"] for r in results]
    assert len({name.casefold() for name in written}) == 4
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(name).name for name in written)
    assert Path(written[0]).name == "x.png" and Path(written[1]).name == "x-2.png"


def test_annotating_into_a_photos_own_folder_is_refused_and_nothing_is_written(model_file, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    photo = gray_photo(folder / "gray.png")
    before = photo.read_bytes()

    code, out, err = predict_cli(capsys, str(model_file), str(photo), "--no-detect", "--annotate", str(folder))

    assert code == 2 and out == "" and err.count("\n") == 1
    assert "--annotate" in err and str(photo) in err and "choose a separate folder" in err
    assert photo.read_bytes() == before and [p.name for p in folder.iterdir()] == ["gray.png"]


def test_a_refused_predict_leaves_no_annotation_folder(model_file, tmp_path, capsys):
    out = tmp_path / "annotated"
    code, _, _ = predict_cli(capsys, str(model_file), str(tmp_path / "missing.png"), "--annotate", str(out))
    assert code == 1 and not out.exists()


def test_a_margin_out_of_range_is_refused_while_parsing_naming_the_option(tmp_path, capsys):
    with mock.patch("fer_pipeline.predict.load_model_ref") as load, pytest.raises(SystemExit) as exit_:
        cli.main(["predict", "model.keras", str(tmp_path / "p.png"), "--margin", "5"])
    assert exit_.value.code == 2 and not load.called
    assert "argument --margin" in capsys.readouterr().err


# ---- models that are not the project's ----------------------------------------------


def saved(model, path: Path) -> Path:
    model.save(path)
    return path


def nan_model():
    inputs = keras.Input((48, 48, 1))
    dense = keras.layers.Dense(7, activation="softmax")
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    weights = model.get_weights()
    weights[1][:] = np.nan
    model.set_weights(weights)
    return model


def logits_model():
    inputs = keras.Input((48, 48, 1))
    return keras.Model(inputs, keras.layers.Dense(7)(keras.layers.Flatten()(inputs)))


@pytest.mark.parametrize("build", [nan_model, logits_model])
def test_a_model_whose_outputs_are_not_probabilities_is_refused_naming_it(build, tmp_path, capsys):
    model_path = saved(build(), tmp_path / "odd.keras")
    log, out_dir = tmp_path / "log.jsonl", tmp_path / "annotated"
    photo = gray_photo(tmp_path / "photo.png")

    with pytest.raises(ModelOutputError, match="does not output class probabilities"):
        predict_images(keras.models.load_model(model_path), [photo], skip_detection=True)
    code, out, err = predict_cli(
        capsys, str(model_path), str(photo), "--no-detect", "--log", str(log), "--annotate", str(out_dir)
    )

    assert code == 1 and out == "" and err.count("\n") == 1
    assert err.startswith(f"error: Model {model_path} does not output class probabilities")
    assert not log.exists() and not out_dir.exists()


@pytest.mark.parametrize(
    ("shape", "classes", "problem"), [((48, 48, 1), 10, "(None, 10)"), ((48, 48, 3), 7, "(None, 48, 48, 3)")]
)
def test_a_model_of_the_wrong_shape_is_an_unusable_input_named_by_its_path(shape, classes, problem, tmp_path, capsys):
    inputs = keras.Input(shape)
    model_path = saved(
        keras.Model(inputs, keras.layers.Dense(classes)(keras.layers.Flatten()(inputs))), tmp_path / "m.keras"
    )
    code, _, err = predict_cli(capsys, str(model_path), str(gray_photo(tmp_path / "p.png")))
    assert code == 1 and str(model_path) in err and problem in err and "model.keras written by training" in err


# ---- registries ----------------------------------------------------------------------


@pytest.fixture()
def registry(model_file, tmp_path) -> LocalRegistry:
    registry = LocalRegistry(tmp_path / "registry")
    registry.register("fer", model_file.parent, {"macro_f1": 0.4}, labels={}, description="tiny")
    return registry


@pytest.mark.parametrize(
    ("damage", "listed"),
    [
        (lambda index: "{bad", 1),
        (
            lambda index: json.dumps(
                index | {"models": {"fer": {"versions": "x", "aliases": {}, "default_version": 1}}}
            ),
            1,
        ),
        # `models list` shows a dangling alias, flagged; what it points at cannot be loaded
        (
            lambda index: json.dumps(
                index | {"models": {"fer": index["models"]["fer"] | {"aliases": {"champion": 5}}}}
            ),
            0,
        ),
    ],
    ids=["not-json", "wrong-shape", "dangling-alias"],
)
def test_predict_from_a_damaged_registry_gives_the_registrys_own_line_and_exit_1(
    damage, listed, registry, tmp_path, capsys
):
    index_file = registry.root / "index.json"
    index_file.write_text(damage(json.loads(index_file.read_text())))
    photo = str(gray_photo(tmp_path / "p.png"))

    code, _, err = predict_cli(capsys, "fer@champion", photo, "--registry", str(registry.root))

    assert code == 1 and err.startswith(f"error: {index_file}") and "not in the registry" not in err
    assert cli.main(["models", "list", "--registry", str(registry.root)]) == listed


def test_a_version_whose_folder_is_gone_is_flagged_and_refused(registry, tmp_path, capsys):
    shutil.rmtree(registry.root / "fer" / "1")
    root = str(registry.root)

    assert cli.main(["models", "list", "--registry", root]) == 0
    captured = capsys.readouterr()
    assert "FILES MISSING" in captured.out and "fer@1's files are missing under" in captured.err

    assert cli.main(["models", "show", "fer@champion", "--registry", root]) == 0
    err = capsys.readouterr().err
    assert "fer@1's files are missing under" in err and "without a model card" not in err

    code, _, err = predict_cli(capsys, "fer@champion", str(gray_photo(tmp_path / "p.png")), "--registry", root)
    assert code == 1 and f"fer@1's files are missing under {registry.root / 'fer' / '1'}" in err


def test_listing_a_registry_folder_that_does_not_exist_says_so(tmp_path, capsys, monkeypatch):
    typo = tmp_path / "typo"
    assert cli.main(["models", "list", "--registry", str(typo)]) == 1
    assert f"{typo} (--registry) does not exist" in capsys.readouterr().err
    monkeypatch.setenv("FER_REGISTRY", str(tmp_path / "not-yet"))  # the default place: nothing registered yet
    assert cli.main(["models", "list"]) == 0
    assert "No models registered" in capsys.readouterr().out


def test_serve_refuses_a_model_whose_outputs_are_not_probabilities_before_serving(tmp_path):
    from fer_pipeline.serve_model import load_served_model, warm_up

    model_path = saved(logits_model(), tmp_path / "odd.keras")
    with pytest.raises(ModelOutputError, match=f"Model {re.escape(str(model_path))} does not output class"):
        warm_up(load_served_model(str(model_path), None, tmp_path / "scratch"))


def test_serve_names_a_registered_version_whose_folder_is_gone(model_file, tmp_path):
    from fer_pipeline.registry import LocalRegistry, RegistryFileError
    from fer_pipeline.serve_model import locate_model

    registry = LocalRegistry(tmp_path / "registry")
    version = registry.register("fer", model_file.parent, {"macro_f1": 0.5}, labels={}, description="")
    shutil.rmtree(version.path)
    with pytest.raises(RegistryFileError, match="files are missing"):
        locate_model("fer@1", tmp_path / "registry")


def test_a_model_path_that_does_not_exist_is_named_as_a_path_by_predict_as_by_serve(tmp_path, capsys):
    missing = tmp_path / "gone" / "model.keras"
    code, out, err = predict_cli(capsys, str(missing), str(gray_photo(tmp_path / "photo.png")))
    assert code == 2 and out == "" and err.startswith(f"error: {missing} does not exist; pass a model folder")
