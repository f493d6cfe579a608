"""Face detection (faces.py, blazeface.py): options checked with one clear line, the
detector picked by name, mtcnn-tta's and the ensemble's passes merged without counting a
face twice, BlazeFace's shipped model, anchors and letterbox, eyes levelled before
cropping, the predict CLI's detector flags, and MTCNN, BlazeFace and the ensemble on real
FER-2013 faces pasted into a photo."""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import zipfile
from unittest import mock

import numpy as np
import pytest

from fer_pipeline import blazeface, centerface, cli_models, faces
from fer_pipeline.errors import ConfigError, FerError
from fer_pipeline.faces import DetectorOptions, Face

cv2 = pytest.importorskip("cv2")


# ---- options -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "dlib"}, r"detector \(--detector\) must be one of ensemble, mtcnn, mtcnn-tta, haar, got 'dlib'"),
        ({"min_confidence": 1.5}, r"min_confidence \(--min-confidence\) must be from 0 to 1 .* got 1.5; lower it"),
        ({"min_confidence": "high"}, r"min_confidence \(--min-confidence\) must be a number from 0 to 1, got 'high'"),
        ({"min_face": 5}, r"min_face \(--min-face\) must be at least 12 pixels .* got 5"),
        ({"min_face": 20.5}, r"min_face \(--min-face\) must be a whole number of pixels, got 20.5"),
    ],
)
def test_bad_options_are_refused_in_one_line_naming_the_option(kwargs, message):
    with pytest.raises(ConfigError, match=message) as caught:
        DetectorOptions(**kwargs)
    assert "\n" not in str(caught.value)


def test_default_options_are_the_ensemble_and_frozen():
    options = DetectorOptions()
    assert options.name == "ensemble" and options == faces.DEFAULT_OPTIONS
    with pytest.raises(AttributeError):
        options.name = "haar"  # type: ignore[misc]


def test_measured_figures_are_exported_for_each_detector():
    assert set(faces.DETECTOR_RECALL) == set(faces.DETECTORS)
    for figures in faces.DETECTOR_RECALL.values():
        assert 0 <= figures["recall"] <= 1 and figures["false_positives_per_photo"] >= 0
        assert figures["ms_per_photo"] > 0 and figures["face_set"]


# ---- which detector runs, and what is kept -------------------------------------------


class FakeMtcnn:
    """Answers like mtcnn.MTCNN.detect_faces, in the coordinates of the image it is given."""

    def __init__(self, found):
        self.found, self.calls = found, []

    def detect_faces(self, rgb, min_face_size, **thresholds):
        self.calls.append((rgb.shape, min_face_size))
        return self.found


def mtcnn_face(box, confidence, left_eye=(10, 10), right_eye=(20, 10)):
    keypoints = {"left_eye": left_eye, "right_eye": right_eye, "nose": (15, 15)}
    return {"box": list(box), "confidence": confidence, "keypoints": keypoints}


def test_the_name_picks_the_detector():
    gray = np.full((200, 300), 128, np.uint8)
    fake = FakeMtcnn([mtcnn_face((50, 40, 60, 70), 0.99)])
    haar = mock.Mock()
    haar.detectMultiScale.return_value = np.array([[150, 60, 50, 50]])
    with (
        mock.patch.object(faces, "load_mtcnn", return_value=fake),
        mock.patch.object(faces, "load_haar", return_value=haar),
    ):
        by_mtcnn = faces.detect_faces(gray, DetectorOptions(name="mtcnn", min_face=20))  # searched at full size
        by_haar = faces.detect_faces(gray, DetectorOptions(name="haar", min_face=30))
    assert [f.box for f in by_mtcnn] == [(50, 40, 60, 70)] and by_mtcnn[0].eyes == ((10.0, 10.0), (20.0, 10.0))
    assert fake.calls == [((200, 300, 3), 20)]
    assert [f.box for f in by_haar] == [(150, 60, 50, 50)] and by_haar[0].eyes is None
    assert haar.detectMultiScale.call_args.kwargs["minSize"] == (30, 30)


def test_low_confidence_and_small_faces_are_dropped_and_boxes_come_back_in_photo_pixels():
    gray = np.full((1600, 2048), 128, np.uint8)  # searched at half size (DETECTION_MAX_SIDE)
    fake = FakeMtcnn(
        [
            mtcnn_face((300, 100, 40, 50), 0.97, left_eye=(310, 120), right_eye=(330, 118)),
            mtcnn_face((10, 10, 40, 40), 0.50),  # below min_confidence
            mtcnn_face((500, 500, 12, 14), 0.99),  # 28 photo pixels: below min_face
        ]
    )
    with mock.patch.object(faces, "load_mtcnn", return_value=fake):
        found = faces.detect_faces(gray, DetectorOptions(name="mtcnn", min_confidence=0.9, min_face=40))
    assert fake.calls == [((800, 1024, 3), 20)]  # min_face 40 photo pixels = 20 searched
    assert found == [Face((600, 200, 80, 100), 0.97, ((620.0, 240.0), (660.0, 236.0)))]


class FakeMtcnnPasses:
    """Answers like mtcnn.MTCNN.detect_faces with one list of faces per call, in order, and
    keeps each image it was given."""

    def __init__(self, *answers):
        self.answers, self.images = list(answers), []

    def detect_faces(self, rgb, min_face_size, **thresholds):
        self.images.append(rgb[..., 0].copy())
        return self.answers[len(self.images) - 1]


def test_tta_merges_the_mirrored_and_darker_passes_counting_each_face_once():
    gray = np.tile(np.linspace(0, 255, 300).astype(np.uint8), (200, 1))  # 300 wide, searched at full size
    fake = FakeMtcnnPasses(
        [mtcnn_face((50, 40, 60, 70), 0.99, left_eye=(65, 60), right_eye=(95, 62))],
        [
            mtcnn_face((192, 42, 58, 66), 0.95),  # the first face mirrored (x 192 -> 300 - 192 - 58 = 50): not new
            mtcnn_face((20, 100, 50, 50), 0.9, left_eye=(30, 115), right_eye=(55, 112)),  # new: at x 230 in the photo
            mtcnn_face((120, 10, 40, 40), 0.6),  # under min_confidence 0.7
        ],
        [
            mtcnn_face((232, 98, 50, 54), 0.8),  # the mirrored pass's face again: not new
            mtcnn_face((130, 120, 44, 44), 0.75),  # found only in the darker copy
        ],
    )
    with mock.patch.object(faces, "load_mtcnn", return_value=fake):
        found = faces.detect_faces(gray, DetectorOptions(name="mtcnn-tta", min_face=20))
    assert [f.box for f in found] == [(50, 40, 60, 70), (130, 120, 44, 44), (230, 100, 50, 50)]
    assert found[0].eyes == ((65.0, 60.0), (95.0, 62.0))
    assert found[2].eyes == ((245.0, 112.0), (270.0, 115.0))  # mirrored back, the photo's left eye first
    original, mirrored, darker = fake.images
    np.testing.assert_array_equal(mirrored, original[:, ::-1])
    assert darker[0, 150] == round(255 * (original[0, 150] / 255) ** faces.MTCNN_TTA_GAMMA) < original[0, 150]


def test_ensemble_merges_its_passes_counting_each_face_once_and_keeps_weak_faces_only_where_tiles_agree():
    gray = np.arange(200 * 300, dtype=np.uint32).reshape(200, 300).astype(np.uint8)  # searched at full size
    fake = FakeMtcnnPasses(
        [
            mtcnn_face((50, 40, 60, 70), 0.99),
            mtcnn_face((10, 130, 40, 40), 0.55),  # weak (under 0.7): kept only because a tile agrees
            mtcnn_face((250, 150, 40, 40), 0.55),  # weak, and no tile sees it: dropped
        ],
        [
            mtcnn_face((192, 42, 58, 66), 0.95),  # the first face mirrored: not new
            mtcnn_face((20, 100, 50, 50), 0.9),  # new: at x 230 in the photo
        ],
    )
    tile_h, tile_w = int(200 * faces.TILE_SIDE), int(300 * faces.TILE_SIDE)
    lower_left = gray[200 - tile_h :, :tile_w]

    def blaze(image, min_score=blazeface.MIN_SCORE, model=blazeface.BACK):
        eyes = ((0.0, 0.0), (1.0, 0.0))
        if model is blazeface.FRONT:
            return [blazeface.Detection((60, 45, 50, 60), 0.7, eyes), blazeface.Detection((150, 10, 40, 40), 0.8, eyes)]
        if image.shape == gray.shape and np.array_equal(image, gray):
            return [
                blazeface.Detection((52, 38, 62, 66), 0.9, eyes),
                blazeface.Detection((130, 120, 44, 44), 0.65, eyes),
            ]
        assert min_score == faces.TILE_MIN_SCORE and image.shape == (tile_h, tile_w)
        if np.array_equal(image, lower_left):  # tile corner (0, 80): the weak face at (10, 130) is (10, 50) here
            return [
                blazeface.Detection((12, 52, 38, 38), 0.45, eyes),
                blazeface.Detection((100, 20, 40, 40), 0.9, eyes),
            ]
        return []

    def center(image, min_score=centerface.MIN_SCORE):
        assert np.array_equal(image, gray) and min_score == centerface.MIN_SCORE
        eyes = ((0.0, 0.0), (1.0, 0.0))
        return [blazeface.Detection((48, 42, 58, 64), 0.9, eyes), blazeface.Detection((200, 150, 36, 40), 0.5, eyes)]

    with (
        mock.patch.object(faces, "load_mtcnn", return_value=fake),
        mock.patch.object(blazeface, "detect", side_effect=blaze) as blaze_run,
        mock.patch.object(centerface, "detect", side_effect=center) as center_run,
    ):
        found = faces.detect_faces(gray, DetectorOptions(name="ensemble", min_face=20))
    assert [(f.box, f.confidence) for f in found] == [
        ((12, 132, 38, 38), 0.45),  # the tile's box for the weak MTCNN face, in the photo's pixels
        ((50, 40, 60, 70), 0.99),
        ((130, 120, 44, 44), 0.65),  # BlazeFace on the photo
        ((150, 10, 40, 40), 0.8),  # the front-camera model
        ((200, 150, 36, 40), 0.5),  # CenterFace: only the face no other pass found
        ((230, 100, 50, 50), 0.9),  # MTCNN on the mirror image
    ]
    assert len(fake.images) == 2 and blaze_run.call_count == 2 + 4  # back and front on the photo, four tiles
    assert center_run.call_count == 1
    np.testing.assert_array_equal(fake.images[1], fake.images[0][:, ::-1])
    # with no weak MTCNN face there is nothing for a tile to confirm: no tile search
    strong_only = FakeMtcnnPasses([mtcnn_face((50, 40, 60, 70), 0.99)], [])
    with (
        mock.patch.object(faces, "load_mtcnn", return_value=strong_only),
        mock.patch.object(blazeface, "detect", side_effect=blaze) as blaze_run,
        mock.patch.object(centerface, "detect", return_value=[]),
    ):
        faces.detect_faces(gray, DetectorOptions(name="ensemble", min_face=20))
    assert blaze_run.call_count == 2


def test_centerface_searches_the_photo_at_its_own_size_capped_and_maps_faces_back():
    photo = np.zeros((1000, 2 * faces.DETECTION_MAX_SIDE), np.uint8)
    seen = []

    def center(image, min_score=centerface.MIN_SCORE):
        seen.append((image.shape, min_score))
        return [blazeface.Detection((100, 50, 40, 40), 0.8, ((110.0, 60.0), (130.0, 60.0)))]

    with mock.patch.object(centerface, "detect", side_effect=center):
        found = faces.centerface_faces(photo)
    assert seen == [((500, faces.DETECTION_MAX_SIDE), centerface.MIN_SCORE)]  # halved to the cap
    assert found == [Face((200, 100, 80, 80), 0.8, ((220.0, 120.0), (260.0, 120.0)))]  # back in the photo's pixels
    with mock.patch.object(centerface, "detect", side_effect=center):
        assert faces.centerface_faces(np.zeros((300, 400), np.uint8))[0].box == (100, 50, 40, 40)
    assert seen[-1][0] == (300, 400)  # under the cap: its own size, not the MTCNN search's


def test_ensemble_adds_centerface_faces_after_the_others_are_final():
    """A CenterFace face overlapping only a face that min_face drops is kept, and one under
    min_face is dropped: CenterFace merges after the search copy's faces are filtered."""
    tiny_mtcnn = FakeMtcnnPasses([mtcnn_face((49, 49, 16, 16), 0.99)], [])  # (98, 98, 32, 32) in the photo
    center = [
        blazeface.Detection((98, 98, 44, 44), 0.6, ((110.0, 110.0), (130.0, 110.0))),  # over the tiny face
        blazeface.Detection((10, 10, 30, 30), 0.9, ((15.0, 20.0), (30.0, 20.0))),  # under min_face 40
    ]
    with (
        mock.patch.object(faces, "load_mtcnn", return_value=tiny_mtcnn),
        mock.patch.object(blazeface, "detect", return_value=[]),
        mock.patch.object(centerface, "detect", return_value=center),
    ):
        found = faces.detect_faces(np.full((200, 300), 128, np.uint8), DetectorOptions(name="ensemble", min_face=40))
    assert [(f.box, f.confidence) for f in found] == [((98, 98, 44, 44), 0.6)]


@pytest.mark.parametrize("detector", faces.DETECTORS)
def test_without_opencv_every_detector_says_so_in_one_line_even_for_a_tiny_photo(detector):
    with mock.patch.dict(sys.modules, {"cv2": None}), pytest.raises(FerError, match="needs OpenCV"):
        faces.detect_faces(np.zeros((8, 8), np.uint8), DetectorOptions(name=detector))


def test_tiles_cover_the_photo_and_map_faces_back_to_its_pixels():
    gray = np.zeros((300, 500), np.uint8)
    corners = []

    def blaze(image, min_score, model=blazeface.BACK):
        corners.append(image.shape)
        return [blazeface.Detection((5, 6, 40, 40), 0.5 + len(corners) / 100, ((10.0, 20.0), (30.0, 20.0)))]

    with mock.patch.object(blazeface, "detect", side_effect=blaze):
        found = faces.blazeface_on_tiles(gray)
    tile_h, tile_w = int(300 * faces.TILE_SIDE), int(500 * faces.TILE_SIDE)
    assert corners == [(tile_h, tile_w)] * 4 and 2 * tile_w > 500 and 2 * tile_h > 300  # overlapping
    # best score first: the last tile (lower right) first
    assert [f.box[:2] for f in found] == [(505 - tile_w, 306 - tile_h), (5, 306 - tile_h), (505 - tile_w, 6), (5, 6)]
    assert found[0].eyes == ((510.0 - tile_w, 320.0 - tile_h), (530.0 - tile_w, 320.0 - tile_h))
    with mock.patch.object(blazeface, "detect", side_effect=blaze) as small:
        assert faces.blazeface_on_tiles(np.zeros((150, faces.TILE_MIN_PHOTO_SIDE - 1), np.uint8)) == []
    small.assert_not_called()


def test_one_pass_mtcnn_searches_the_photo_once():
    fake = FakeMtcnnPasses([mtcnn_face((50, 40, 60, 70), 0.99)])
    with mock.patch.object(faces, "load_mtcnn", return_value=fake):
        found = faces.detect_faces(np.full((200, 300), 128, np.uint8), DetectorOptions(name="mtcnn", min_face=20))
    assert [f.box for f in found] == [(50, 40, 60, 70)] and len(fake.images) == 1


@pytest.mark.parametrize(
    ("box", "same"),
    [
        ((100, 100, 50, 50), True),  # the same box
        ((110, 110, 50, 50), True),  # IoU 0.47
        ((120, 120, 60, 60), True),  # IoU 0.17, but the first box's centre (125, 125) is inside it
        ((110, 60, 30, 70), True),  # IoU 0.24, its centre (125, 95) outside the first; the first's inside it
        ((151, 100, 50, 50), False),  # side by side
        ((140, 140, 50, 50), False),  # IoU 0.02, neither centre inside the other
    ],
)
def test_merge_keeps_the_first_face_and_adds_only_new_ones(box, same):
    first = Face((100, 100, 50, 50), 0.9, ((110.0, 115.0), (140.0, 115.0)))
    merged = faces.merge_faces([first], [Face(box, 0.8)])
    assert merged == ([first] if same else [first, Face(box, 0.8)])


def test_mirroring_a_face_twice_gives_it_back():
    face = Face((20, 30, 40, 50), 0.9, ((28.0, 45.0), (50.0, 47.0)))
    once = faces.mirrored_face(face, 200)
    assert once.box == (140, 30, 40, 50) and once.eyes == ((150.0, 47.0), (172.0, 45.0))
    assert faces.mirrored_face(once, 200) == face


@pytest.mark.parametrize("detector", ["mtcnn-tta", "ensemble"])
def test_merged_detectors_find_no_face_on_a_blank_or_noise_photo(detector):
    pytest.importorskip("mtcnn")
    rng = np.random.default_rng(0)
    blank = np.full((360, 480), 128, np.uint8)
    noise = cv2.GaussianBlur(rng.normal(128, 40, (360, 480)).clip(0, 255).astype(np.uint8), (0, 0), 2)
    options = DetectorOptions(name=detector)
    assert faces.detect_faces(blank, options) == [] and faces.detect_faces(noise, options) == []


# ---- BlazeFace (blazeface.py) ------------------------------------------------------------


@pytest.mark.parametrize("model", blazeface.MODELS, ids=lambda m: m.file)
def test_the_shipped_model_files_match_their_notice(model):
    digest = hashlib.sha256(model.path.read_bytes()).hexdigest()
    notice = (blazeface.MODELS_DIR / "NOTICE").read_text()
    assert digest == model.sha256 == blazeface.model_sha256(model)
    section = notice[notice.index(model.file + "\n") :]
    assert re.search(r"sha256:\s+(\w+)", section).group(1) == digest
    assert f"Size:     {model.path.stat().st_size} bytes" in section
    assert "Apache License 2.0" in section and "MediaPipe" in section


@pytest.mark.parametrize("model", blazeface.MODELS, ids=lambda m: m.file)
def test_anchors_match_the_models_output_rows(model):
    anchors = blazeface.model_anchors(model)
    assert anchors.shape == (16 * 16 * 2 + 8 * 8 * 6, 2) and anchors.min() > 0 and anchors.max() < 1
    # the first cell's two anchors, then the next cell's; the coarser grid after the 16x16 one
    np.testing.assert_allclose(anchors[:3], [(1 / 32, 1 / 32), (1 / 32, 1 / 32), (3 / 32, 1 / 32)])
    np.testing.assert_allclose(anchors[512], (1 / 16, 1 / 16))
    net = blazeface.load_net(model)
    net.setInput(np.zeros((1, 3, model.input_side, model.input_side), np.float32))
    scores, boxes = net.forward(["classificators", "regressors"])
    assert scores.shape == (1, len(anchors), 1) and boxes.shape == (1, len(anchors), 16)


@pytest.mark.parametrize("shape", [(360, 640), (500, 200), (100, 100)])
@pytest.mark.parametrize("side", [128, 256])
def test_letterbox_keeps_the_aspect_and_maps_points_back(shape, side):
    height, width = shape
    tensor, padding = blazeface.letterbox(np.full(shape, 255, np.uint8), side)
    assert tensor.shape == (1, 3, side, side) and tensor.dtype == np.float32
    assert tensor.min() >= -1 and tensor.max() <= 1
    longer = max(shape)
    photo = np.array([[0.0, 0.0], [width, height]])
    in_input = photo / longer + padding  # 0..1 of the input: the photo centred in its longer side
    np.testing.assert_allclose(blazeface.to_photo(in_input, padding, width, height), photo, atol=1e-9)
    columns = np.flatnonzero(tensor[0, 0].max(axis=0) > 0)  # the photo's white inside the -1 padding
    assert abs(len(columns) - side * width / longer) <= 2


def test_weighted_nms_merges_overlapping_boxes_by_score():
    def points(x0, y0, x1, y1):
        return np.array([[x0, y0], [x1, y1]] + [[x0, y0]] * 6, np.float32)

    boxes = np.stack([points(0.1, 0.1, 0.3, 0.3), points(0.12, 0.1, 0.32, 0.3), points(0.6, 0.6, 0.8, 0.8)])
    kept = blazeface.weighted_nms(boxes, np.array([0.9, 0.6, 0.7], np.float32))
    assert [round(score, 2) for _, score in kept] == [0.9, 0.7]  # the best of each group
    np.testing.assert_allclose(kept[0][0][0], (0.1 + 0.6 / 1.5 * 0.02, 0.1), atol=1e-6)  # weighted 0.9 : 0.6
    np.testing.assert_allclose(kept[1][0][1], (0.8, 0.8))


@pytest.mark.parametrize("model", blazeface.MODELS, ids=lambda m: m.file)
def test_blazeface_finds_no_face_on_a_blank_or_noise_photo(model):
    rng = np.random.default_rng(0)
    blank = np.full((360, 480), 128, np.uint8)
    noise = cv2.GaussianBlur(rng.normal(128, 40, (360, 480)).clip(0, 255).astype(np.uint8), (0, 0), 2)
    assert blazeface.detect(blank, model=model) == [] and blazeface.detect(noise, model=model) == []


# ---- CenterFace (centerface.py) ------------------------------------------------------------


def test_the_shipped_centerface_model_matches_its_notice():
    digest = hashlib.sha256(centerface.MODEL_FILE.read_bytes()).hexdigest()
    notice = (blazeface.MODELS_DIR / "NOTICE").read_text()
    assert digest == centerface.MODEL_SHA256 == centerface.model_sha256()
    section = notice[notice.index(centerface.MODEL_FILE.name + "\n") :]
    assert re.search(r"sha256:\s+(\w+)", section).group(1) == digest
    assert f"Size:     {centerface.MODEL_FILE.stat().st_size} bytes" in section
    assert "MIT License" in section and "Star-Clouds/CenterFace" in section


@pytest.mark.parametrize(("shape", "padded"), [((360, 640), (384, 640)), ((100, 33), (128, 64)), ((32, 32), (32, 32))])
def test_centerface_pads_the_photo_to_multiples_of_32_without_resizing(shape, padded):
    gray = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    tensor = centerface.padded_input(gray)
    assert tensor.shape == (1, 3, *padded) and tensor.dtype == np.float32
    for channel in range(3):  # gray in R, G and B at 0..255, zeros beyond the photo
        np.testing.assert_array_equal(tensor[0, channel, : shape[0], : shape[1]], gray)
    assert tensor[0, :, shape[0] :].sum() == 0 and tensor[0, :, :, shape[1] :].sum() == 0


def test_centerface_decodes_a_cell_into_its_box_and_landmarks():
    heatmap = np.zeros((1, 1, 20, 30), np.float32)
    heatmap[0, 0, 5, 7] = 0.8  # one face centred near cell (row 5, column 7)
    heatmap[0, 0, 10, 10] = 0.05  # under the threshold: no box
    sizes = np.zeros((1, 2, 20, 30), np.float32)
    sizes[0, :, 5, 7] = np.log([10.0, 6.0])  # 40 px high, 24 px wide (x stride 4)
    offsets = np.zeros((1, 2, 20, 30), np.float32)
    offsets[0, :, 5, 7] = (0.25, 0.5)  # within the cell, y then x
    landmarks = np.zeros((1, 10, 20, 30), np.float32)
    landmarks[0, :4, 5, 7] = (0.25, 0.25, 0.25, 0.75)  # eyes as (y, x) fractions of the box
    boxes, scores, points = centerface.decode(heatmap, sizes, offsets, landmarks, 0.1)
    # centre y (5 + 0.25 + 0.5) x 4 = 23, x (7 + 0.5 + 0.5) x 4 = 32
    np.testing.assert_allclose(boxes, [[32 - 12, 23 - 20, 24, 40]], rtol=1e-6)
    np.testing.assert_allclose(scores, [0.8])
    np.testing.assert_allclose(points[0, :2], [[20 + 6, 3 + 10], [20 + 18, 3 + 10]], rtol=1e-6)


def test_centerface_finds_no_face_on_a_blank_or_noise_photo_and_keeps_nets_per_shape():
    rng = np.random.default_rng(0)
    blank = np.full((360, 480), 128, np.uint8)
    noise = cv2.GaussianBlur(rng.normal(128, 40, (200, 300)).clip(0, 255).astype(np.uint8), (0, 0), 2)
    centerface.load_net.cache_clear()
    assert centerface.detect(blank, min_score=0.3) == [] and centerface.detect(noise, min_score=0.3) == []
    assert centerface.load_net.cache_info().currsize == 2  # OpenCV fixes a net's shapes at its first input


def test_mtcnn_is_built_once_per_process():
    pytest.importorskip("mtcnn")
    faces.load_mtcnn.cache_clear()
    with mock.patch("mtcnn.MTCNN") as built:
        assert faces.load_mtcnn() is faces.load_mtcnn()
    assert built.call_count == 1
    faces.load_mtcnn.cache_clear()


# ---- alignment -----------------------------------------------------------------------


@pytest.mark.parametrize("degrees", [-25.0, -8.0, 12.0, 30.0])
def test_rotating_by_the_eye_angle_levels_the_eyes(degrees):
    center = (100.0, 80.0)
    half = 30.0
    radians = np.radians(degrees)  # the right eye lower on screen for positive angles (y down)
    eyes = ((center[0] - half * np.cos(radians), center[1] - half * np.sin(radians)),
            (center[0] + half * np.cos(radians), center[1] + half * np.sin(radians)))  # fmt: skip
    assert faces.eye_angle(eyes) == pytest.approx(degrees)
    (lx, ly), (rx, ry) = faces.rotate_points(np.array(eyes), center, faces.eye_angle(eyes))
    assert ly == pytest.approx(ry, abs=1e-9) and rx - lx == pytest.approx(2 * half)


def two_eyes_photo(degrees: float) -> tuple[np.ndarray, Face]:
    """A gray photo with two dark eye blobs 40 px apart, their line turned ``degrees``
    (clockwise on screen), and the Face a detector would report for it."""
    photo = np.full((200, 240), 200, np.uint8)
    cx, cy = 120.0, 100.0
    radians = np.radians(degrees)
    dx, dy = 20 * np.cos(radians), 20 * np.sin(radians)
    eyes = ((cx - dx, cy - dy), (cx + dx, cy + dy))
    for x, y in eyes:
        cv2.circle(photo, (int(round(x)), int(round(y))), 5, 0, -1)
    return photo, Face((80, 60, 80, 80), 0.99, eyes)  # the box centred on the eyes


def dark_blob_centres(crop: np.ndarray) -> list[tuple[float, float]]:
    """Centres (x, y) of the two dark blobs in a crop, left to right."""
    mask = (crop < 100).astype(np.uint8)
    count, _, _, centroids = cv2.connectedComponentsWithStats(mask)
    assert count == 3, f"expected two blobs, found {count - 1}"
    return sorted(tuple(c) for c in centroids[1:])


@pytest.mark.parametrize("degrees", [-20.0, 15.0])
def test_aligned_crop_has_level_eyes_centred_on_the_box(degrees):
    photo, face = two_eyes_photo(degrees)
    crop = faces.align_face(photo, face, side=96, margin=0.2)
    (lx, ly), (rx, ry) = dark_blob_centres(crop)
    assert abs(ly - ry) < 1.0, (ly, ry)
    assert (lx + rx) / 2 == pytest.approx(48, abs=1.5)  # the box centre stays the crop's centre
    # 40 px apart in a 96 px square crop: the crop is the box's side times 1.2
    assert rx - lx == pytest.approx(40 * 96 / (80 * 1.2), abs=1.5)
    assert crop.dtype == np.float32 and crop.shape == (96, 96)


def test_nearly_level_eyes_or_no_eyes_are_cropped_without_rotation():
    photo, face = two_eyes_photo(0.4)
    np.testing.assert_array_equal(faces.align_face(photo, face, 48, 0.2), faces.crop_face(photo, face.box, 48, 0.2))
    haar_face = Face(face.box)
    np.testing.assert_array_equal(
        faces.align_face(photo, haar_face, 48, 0.2), faces.crop_face(photo, face.box, 48, 0.2)
    )


# ---- the predict CLI's flags -----------------------------------------------------------


def parse_predict(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fer-pipeline")
    cli_models.add_subcommands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["predict", "model-dir", "photo.jpg", *argv])


def test_cli_detector_flags_reach_predict_images(capsys):
    args = parse_predict(["--detector", "haar", "--min-confidence", "0.5", "--min-face", "30"])
    with (
        mock.patch("fer_pipeline.predict.load_model_ref"),
        mock.patch("fer_pipeline.predict.predict_images", return_value=[{"image": "photo.jpg", "faces": []}]) as run,
    ):
        assert args.func(args) == 0
    assert run.call_args.kwargs["detector"] == DetectorOptions(name="haar", min_confidence=0.5, min_face=30)
    capsys.readouterr()


def test_cli_defaults_to_the_default_options():
    args = parse_predict([])
    assert cli_models.detector_options(args) == faces.DEFAULT_OPTIONS


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--detector", "dlib"], "invalid choice: 'dlib'"),
        (["--min-face", "5"], "min_face (--min-face) must be at least 12 pixels"),
        (["--min-confidence", "2"], "min_confidence (--min-confidence) must be from 0 to 1"),
    ],
)
def test_cli_bad_detector_values_are_one_line_usage_errors(argv, message, capsys):
    try:
        args = parse_predict(argv)
    except SystemExit as exit_:  # argparse's own check
        assert exit_.code == 2
    else:
        with mock.patch("fer_pipeline.predict.load_model_ref") as load:
            assert args.func(args) == cli_models.EXIT_USER_ERROR
        load.assert_not_called()  # refused before the model is loaded
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


# ---- real FER-2013 faces -------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("detector", "at_least"), [("mtcnn", 10), ("mtcnn-tta", 10), ("ensemble", 12), ("blazeface", 9), ("centerface", 9)]
)
def test_real_fer_faces_pasted_into_a_photo_are_found(real_zip, detector, at_least):
    """Fourteen real test crops (two per class, read at test time, never stored) upscaled to
    96 and 160 px, two per gray photo: each detector with its default options finds at
    least ``at_least``, each box centred inside its face, and no false one (``blazeface``:
    blazeface.detect alone, which finds about two thirds of the bench's faces).
    (bench/face_detection.py measures 91% (MTCNN) and 95-97% (ensemble) on 100-124 faces;
    some FER-2013 crops are profiles or covered faces that no setting finds.)"""
    from fer_pipeline.classes import CLASSES

    with zipfile.ZipFile(real_zip) as archive:
        names = archive.namelist()
        pairs = [sorted(n for n in names if n.startswith(f"test/{c}/"))[3:5] for c in CLASSES]
        crops = [[decode_gray(archive.read(n)) for n in pair] for pair in pairs]
    found = 0
    for pair in crops:
        photo = np.full((360, 640), 110, np.uint8)
        pasted = [(60, 120, 96), (320, 100, 160)]
        for crop, (x, y, size) in zip(pair, pasted):
            photo[y : y + size, x : x + size] = cv2.resize(crop, (size, size), interpolation=cv2.INTER_CUBIC)
        if detector == "blazeface":
            boxes = [d.box for d in blazeface.detect(photo)]
        elif detector == "centerface":
            boxes = [d.box for d in centerface.detect(photo)]
        else:
            boxes = [face.box for face in faces.detect_faces(photo, DetectorOptions(name=detector))]
        found += sum(any(centre_inside(box, square) for box in boxes) for square in pasted)
        assert len(boxes) <= 2, boxes  # no false face on a flat background
    assert found >= at_least, f"{found} of 14 found"


def decode_gray(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)


def centre_inside(box, square) -> bool:
    x, y, w, h = box
    left, top, size = square
    return left <= x + w / 2 <= left + size and top <= y + h / 2 <= top + size
