"""Axis-aligned boxes given as (x, y, width, height), in pixels (int or float): their
overlap, which the detectors' merges (``faces``), BlazeFace's non-maximum suppression
(``blazeface``) and the detection benchmark's scoring share, and the part of a box inside
the photo, which ``predict`` reports."""

from __future__ import annotations

from collections.abc import Sequence


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x, y, w, h) boxes; 0 where they do not overlap."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = w * h
    return float(inter / (aw * ah + bw * bh - inter)) if inter else 0.0


def centre_inside(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether box ``a``'s centre lies inside box ``b``."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return bx <= ax + aw / 2 <= bx + bw and by <= ay + ah / 2 <= by + bh


def clip_box(box: Sequence[int], width: int, height: int) -> tuple[int, int, int, int]:
    """The part of box ``(x, y, w, h)`` inside a ``width`` x ``height`` photo (w or h 0 where
    none is): a face cut off by the photo's edge is reported as far as it shows."""
    x, y, w, h = box
    left, top = min(max(x, 0), width), min(max(y, 0), height)
    right, bottom = max(min(x + w, width), left), max(min(y + h, height), top)
    return left, top, right - left, bottom - top
