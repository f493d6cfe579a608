"""Box overlap shared by the detectors' merge, BlazeFace's NMS and the detection bench."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from fer_pipeline import blazeface
from fer_pipeline.boxes import box_iou, centre_inside, clip_box

sides = st.floats(min_value=0.5, max_value=500, allow_nan=False)
coords = st.floats(min_value=-500, max_value=500, allow_nan=False)
boxes = st.tuples(coords, coords, sides, sides)


def test_known_overlaps():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 10, 10)) == 50 / 150
    assert box_iou((0, 0, 10, 10), (10, 0, 10, 10)) == 0.0  # touching edges share no area
    assert box_iou((0, 0, 10, 10), (2, 2, 4, 4)) == 16 / 100
    assert centre_inside((2, 2, 4, 4), (0, 0, 10, 10)) and not centre_inside((0, 0, 10, 10), (6, 6, 4, 4))


@given(boxes, boxes)
def test_iou_is_symmetric_and_a_fraction(a, b):
    assert box_iou(a, b) == box_iou(b, a)
    assert 0.0 <= box_iou(a, b) <= 1.0 + 1e-12


@given(boxes, st.floats(min_value=1.01, max_value=4))
def test_a_box_inside_another_scores_their_area_ratio(box, factor):
    x, y, w, h = box
    outer = (x - w * (factor - 1) / 2, y - h * (factor - 1) / 2, w * factor, h * factor)
    assert np.isclose(box_iou(box, outer), 1 / factor**2, rtol=1e-6)
    assert centre_inside(box, outer) and centre_inside(outer, box)


@given(boxes, boxes)
def test_blazeface_corner_boxes_score_as_xywh_boxes(a, b):
    def corners(box):
        x, y, w, h = box
        return np.array([[x, y], [x + w, y + h]], np.float64)

    assert np.isclose(blazeface.corner_iou(corners(a), corners(b)), box_iou(a, b), atol=1e-9)


def test_clip_box_keeps_the_part_inside_the_photo():
    assert clip_box((220, -28, 166, 166), 640, 480) == (220, 0, 166, 138)  # cut off by the top edge
    assert clip_box((-10, 400, 100, 100), 640, 480) == (0, 400, 90, 80)
    assert clip_box((10, 10, 20, 20), 640, 480) == (10, 10, 20, 20)
    assert clip_box((700, 10, 20, 20), 640, 480) == (640, 10, 0, 20)  # wholly outside: nothing left


@given(boxes, st.integers(1, 400), st.integers(1, 400))
def test_a_clipped_box_lies_inside_the_photo(box, width, height):
    x, y, w, h = clip_box([int(v) for v in box], width, height)
    assert 0 <= x <= x + w <= width and 0 <= y <= y + h <= height
