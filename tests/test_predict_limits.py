"""`predict` refuses photos over a pixel limit before decoding them (the header says how
large they are), and OpenCV's own decode errors become the image's "error" entry: the
other photos are still classified, and nothing escapes as a traceback."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("cv2")

from fer_pipeline import cli  # noqa: E402
from fer_pipeline.errors import FerError  # noqa: E402
from fer_pipeline.predict import UnreadableImage, predict_images, read_image  # noqa: E402
from tiny_models import tiny_model  # noqa: E402


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height, with one tiny compressed row: decoding it
    would allocate the whole claimed size."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    return path


def small_photo(path: Path) -> Path:
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (120, 160), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def test_a_photo_over_the_limit_is_refused_from_its_header(tmp_path):
    huge = png_header_only(tmp_path / "huge.png", 30_000, 30_000)  # 900 Mpx claimed, 100 bytes on disk
    with pytest.raises(UnreadableImage, match=r"huge.png has 900,000,000 pixels, over the 100,000,000-pixel limit"):
        read_image(huge)


def test_a_format_whose_size_cannot_be_read_before_decoding_is_refused(tmp_path):
    """Radiance HDR is run-length encoded: a few kilobytes may declare any number of pixels,
    and PIL cannot read its header, so the limit could not be checked before OpenCV decodes."""
    import cv2

    ok, encoded = cv2.imencode(".hdr", np.ones((200, 200, 3), np.float32))
    assert ok
    hdr = tmp_path / "photo.hdr"
    hdr.write_bytes(encoded.tobytes())
    with pytest.raises(UnreadableImage, match=r"photo.hdr: not an image whose size can be read before decoding"):
        read_image(hdr, max_pixels=10_000)


def test_the_limit_is_an_option_and_the_other_photos_are_still_classified(model, tmp_path):
    photo = small_photo(tmp_path / "photo.png")  # 19,200 pixels
    huge = png_header_only(tmp_path / "huge.png", 30_000, 30_000)
    results = predict_images(model, [huge, photo], skip_detection=True, max_pixels=20_000)
    assert "over the 20,000-pixel limit" in results[0]["error"] and results[0]["faces"] == []
    assert len(results[1]["faces"]) == 1
    results = predict_images(model, [photo], skip_detection=True, max_pixels=10_000)
    assert "19,200 pixels, over the 10,000-pixel limit" in results[0]["error"]


def test_a_bad_limit_is_refused(model, tmp_path):
    with pytest.raises(FerError, match="max_pixels must be a positive number of pixels, got 0"):
        predict_images(model, [small_photo(tmp_path / "p.png")], max_pixels=0)


def test_cli_predict_reports_the_limit_in_the_error_field(model, tmp_path, capsys):
    model.save(tmp_path / "model.keras")
    huge = png_header_only(tmp_path / "huge.png", 30_000, 30_000)
    code = cli.main(["predict", str(tmp_path / "model.keras"), str(huge), "--no-detect"])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    assert "over the 100,000,000-pixel limit" in captured.out
