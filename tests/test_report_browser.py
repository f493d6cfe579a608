"""The HTML report opened in headless Chromium, as a person opens it: every image loads,
the per-class table has seven rows, nothing is logged as an error, and on a phone's
width nothing scrolls sideways. The report is written by ``evaluate()`` itself (a tiny
stand-in model on generated data, so this takes seconds).

Chromium is Debian's ``chromium`` package; ``.ci/run`` installs it when absent. Without
it the tests skip, except in CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import browser  # noqa: E402  (tests/browser.py, a helper)
from fer_pipeline.classes import CLASSES  # noqa: E402

CHROMIUM = browser.find_chromium()


@pytest.fixture(scope="module", autouse=True)
def chromium():
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but Chromium is not installed; .ci/run installs Debian's chromium package.")
        pytest.skip("Chromium not found (apt-get install chromium, or set CHROMIUM=); CI runs these tests")
    return CHROMIUM


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A report from evaluate(): generated data, a tiny saved model, two phases' histories."""
    import keras

    from fer_pipeline import synthetic
    from fer_pipeline.evaluate import evaluate
    from fer_pipeline.ingest import IngestOptions, read_source

    tmp = tmp_path_factory.mktemp("report")
    source = synthetic.write_kaggle_zip(tmp / "fer2013.zip", n_train=6, n_test=4)
    dataset = read_source(source, IngestOptions()).dataset  # with the duplicate and leakage analysis
    inputs = keras.Input((48, 48, 1))
    x = keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(4, 3, strides=2)(keras.layers.Rescaling(1 / 255)(inputs))
    )
    model = keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(x))
    model.save(tmp / "model.keras")
    histories = [
        {
            "phase": "frozen",
            "history": {
                "loss": [1.9, 1.7, 1.6],
                "val_loss": [1.95, 1.8, 1.75],
                "accuracy": [0.2, 0.3, 0.35],
                "val_accuracy": [0.18, 0.25, 0.3],
            },
        },
        {
            "phase": "finetune",
            "history": {
                "loss": [1.5, 1.4],
                "val_loss": [1.7, 1.68],
                "accuracy": [0.4, 0.45],
                "val_accuracy": [0.33, 0.34],
            },
        },
    ]
    evaluate(
        tmp / "model.keras",
        dataset,
        tmp / "evaluation",
        histories=histories,
        run_info={"frozen_lr": 1e-4, "finetune_lr": 1e-5, "weights": "imagenet", "source": "<fer2013.zip>"},
    )
    return tmp / "evaluation" / "report.html"


@pytest.fixture(scope="module")
def phone(report) -> dict:
    return browser.check_report(report, width=390)


def test_every_image_loads(phone):
    assert len(phone["images"]) == 3
    for image in phone["images"]:
        assert image["complete"] and image["naturalWidth"] > 0 and image["naturalHeight"] > 0, image
        assert 0 < image["shownWidth"] <= phone["viewportWidth"], image  # scaled to the screen


def test_per_class_table_has_seven_rows_in_class_order(phone):
    assert phone["classRows"] == 7
    assert phone["classNames"] == list(CLASSES)


def test_no_console_errors(phone):
    assert phone["consoleErrors"] == []
    assert phone["readyState"] == "complete"


def test_readable_on_a_phone_headline_first(phone):
    assert phone["documentWidth"] <= phone["viewportWidth"], "the page scrolls sideways on a phone"
    assert phone["bodyFontPx"] >= 14
    assert phone["headings"][0] == "Headline" and phone["firstCardTop"] < 200
    assert {"Dataset", "Run parameters"} <= set(phone["headings"])


def test_full_page_screenshot_on_a_desktop(report, tmp_path):
    out = tmp_path / "report.png"
    with browser.Browser() as chrome:
        chrome.open(report, width=1000, height=700)
        facts = chrome.facts()
        assert chrome.console_errors() == []
        chrome.screenshot(out)
    assert all(image["naturalWidth"] > 0 for image in facts["images"]) and facts["classRows"] == 7
    width, height = struct.unpack(">II", out.read_bytes()[16:24])  # the PNG's IHDR
    assert width == 1000 and height > 700  # the whole page, not just the viewport


def test_the_checks_catch_a_broken_page(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><link rel='icon' href='data:,'></head><body>"
        "<img src='data:image/png;base64,AAAA' alt='broken'>"
        "<div style='width:2000px'>wide</div><script>console.error('boom'); undefinedFunction();</script>"
        "</body></html>"
    )
    facts = browser.check_report(page, width=390)
    assert facts["images"][0]["naturalWidth"] == 0
    assert facts["classRows"] == 0 and facts["documentWidth"] > facts["viewportWidth"]
    errors = " ".join(facts["consoleErrors"])
    assert "boom" in errors and "undefinedFunction" in errors


def test_shrink_png_keeps_size_and_cuts_bytes(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    path = tmp_path / "noise.png"
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(path)
    before = path.stat().st_size
    browser.shrink_png(path, max_kb=1)
    with Image.open(path) as image:
        assert image.size == (400, 300) and image.mode == "P"
    assert path.stat().st_size < before
