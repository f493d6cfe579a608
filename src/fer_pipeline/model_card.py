"""A model card for each evaluated and registered model: what it is, what it was trained
and tested on, how well it does per class, and what it must not be used for.

One card, built once (``build_card``) from the evaluation's ``metrics.json`` and the
run's parameters, rendered two ways: Markdown (``to_markdown``, the ``model_card.md``
stored with the model in the local registry and beside its files on Vertex AI) and an
HTML section of the evaluation report (``to_html``). Facts about FER-2013 come from
the data's README (shared/data/fer2013/README.md) and docs/model-quality.md; the card
names them as its sources instead of repeating numbers it cannot check.
"""

from __future__ import annotations

import html
import importlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fer_pipeline.classes import CLASSES, averaged_classes_note

MODEL_CARD_FILE = "model_card.md"
DATA_README = "shared/data/fer2013/README.md"
QUALITY_DOC = "docs/model-quality.md"
DETECTION_DOC = 'docs/benchmarks.md, "Face detection"'
_CODE_SPAN = re.compile(r"`([^`]+)`")
TITLE = "Model card: facial-emotion classifier (FER-2013, 7 classes)"


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


Block = str | list[str] | Table  # a paragraph, a bullet list, or a table


@dataclass(frozen=True)
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


# ------------------------------------------------------------------ building
def build_card(
    metrics: Mapping[str, Any], params: Mapping[str, Any] | None = None, data: Mapping[str, Any] | None = None
) -> list[Section]:
    """The card's sections from an evaluation's metrics, the run's parameters and the
    dataset's counts (``evaluate.dataset_summary``; None: not recorded)."""
    return [
        model_section(params),
        data_section(data),
        evaluation_section(metrics),
        per_class_section(metrics),
        detection_section(detector_recall()),
        uses_section(),
    ]


def model_section(params: Mapping[str, Any] | None) -> Section:
    blocks: list[Block] = [
        "Classifies the facial expression in a face crop (grayscale, resized to the model's input) as one of "
        f"{len(CLASSES)} classes: {', '.join(CLASSES)}. The served model takes encoded images "
        '(`{"image_bytes": {"b64": ...}}`) and returns `scores` (one probability per class), `label` and `classes`.'
    ]
    if params:
        blocks.append("The run's recipe (every resolved field; `preset` and `recipe` are what was asked for):")
        blocks.append(Table(("parameter", "value"), tuple((str(k), _value_text(v)) for k, v in params.items())))
    else:
        blocks.append("The run's recipe was not recorded with this evaluation.")
    return Section("Model", blocks)


def data_section(data: Mapping[str, Any] | None = None) -> Section:
    """What the model learnt from: the run's own dataset where its counts were recorded, and
    what is known of FER-2013, the data the project is built for."""
    return Section(
        "Training data, its biases and label noise",
        [
            _data_source_text(data),
            [
                _imbalance_text(data),
                "Label noise: one label per image, and FER-2013 holds exact duplicate images (some blank or "
                "placeholder), two file names appear in two class folders with different images, and the images "
                f"are lossy JPEG re-encodings of the original pixels ({DATA_README}).",
                "No demographic labels (age, gender, skin tone): performance per group cannot be measured on this "
                "data and is unknown. Expect it to differ for faces unlike FER-2013's.",
                "Labels name the expression an annotator saw, not what the person felt.",
            ],
        ],
    )


def _data_source_text(data: Mapping[str, Any] | None) -> str:
    crops = "48x48 grayscale face crops, one emotion label each"
    if not data:
        return (
            f"FER-2013 (the Kaggle `msambare/fer2013` layout): {crops}; the train split trains (a stratified share "
            f"of it validates); the test split is touched once, by this evaluation. Counts per class and split: "
            f"{DATA_README}."
        )
    source = str(data.get("manifest source") or "").rstrip("/").rsplit("/", 1)[-1] or "the dataset"  # its file name
    return (
        f"`{source}`: {crops}; {_number(data.get('train images'), 0)} training images (a stratified share "
        f"validates) and {_number(data.get('test images'), 0)} test images, touched once, by this evaluation. "
        f"The Kaggle FER-2013 download holds 28,709 and 7,178 ({DATA_README})."
    )


def _imbalance_text(data: Mapping[str, Any] | None) -> str:
    counts = (data or {}).get("train per class") or {}
    total = sum(counts.values()) if all(isinstance(v, int) for v in counts.values()) else 0
    if not total:
        return (
            "Imbalanced classes: in FER-2013 `disgust` is about 1.5% of the training images and `happy` the largest "
            f"class ({DATA_README}; {QUALITY_DOC}). Class weights soften this; per-class recall below shows what is left."
        )
    rarest, largest = min(counts, key=counts.get), max(counts, key=counts.get)
    return (
        f"Class balance of these training images: `{rarest}` is the rarest ({counts[rarest] / total:.1%}) and "
        f"`{largest}` the largest ({counts[largest] / total:.1%}); in FER-2013 `disgust` is about 1.5% "
        f"({QUALITY_DOC}). Class weights soften an imbalance; per-class recall below shows what is left."
    )


def evaluation_section(metrics: Mapping[str, Any]) -> Section:
    headline = Table(
        ("metric", "value"),
        (
            ("test images", _number(metrics.get("num_test_samples"), 0)),
            ("accuracy", _number(metrics.get("accuracy"))),
            ("macro-F1" + averaged_classes_note(metrics, "macro_f1"), _number(metrics.get("macro_f1"))),
            ("weighted F1", _number(metrics.get("weighted_f1"))),
            ("macro ROC-AUC" + averaged_classes_note(metrics, "macro_roc_auc"), _number(metrics.get("macro_roc_auc"))),
        ),
    )
    counts = metrics.get("source_split_counts") or {}
    splits = Table(
        ("test half", "images", "accuracy"),
        tuple(
            (name, _number(counts.get(name), 0), _number(metrics.get(key)))
            for name, key in (("PublicTest", "public_test_accuracy"), ("PrivateTest", "private_test_accuracy"))
        ),
    )
    return Section(
        "Evaluation",
        [
            headline,
            "FER-2013's test split is two halves from the original `Usage` column, PublicTest and PrivateTest "
            "(n/a where the test set does not name them). For one model they differ by up to 0.021 accuracy in "
            f"the runs {QUALITY_DOC} reports: a difference of that size between two models is not a clear effect.",
            splits,
        ],
    )


def per_class_section(metrics: Mapping[str, Any]) -> Section:
    per_class = metrics.get("per_class") or {}
    rows = tuple(
        (
            name,
            _number((per_class.get(name) or {}).get("precision")),
            _number((per_class.get(name) or {}).get("recall")),
            _number((per_class.get(name) or {}).get("f1")),
            _number((per_class.get(name) or {}).get("support"), 0),
        )
        for name in CLASSES
    )
    return Section("Per class (test split)", [Table(("class", "precision", "recall", "F1", "support"), rows)])


def detection_section(recall: Mapping[str, Any]) -> Section:
    blocks: list[Block] = [
        "On photos (`fer-pipeline predict`) a face detector finds the faces first, and only the faces it finds "
        "are classified: faces it misses (turned away, small, occluded, poorly lit) get no prediction at all."
    ]
    if recall:
        blocks.append(f"Measured recall of each detector (`fer_pipeline.faces.DETECTOR_RECALL`; {DETECTION_DOC}):")
        blocks.append(Table(("detector", "measured"), tuple((str(k), _value_text(v)) for k, v in recall.items())))
    else:
        blocks.append(f"Its measured recall: see {DETECTION_DOC}.")
    return Section("Face detection", blocks)


def uses_section() -> Section:
    return Section(
        "Intended and out-of-scope uses",
        [
            "Intended: research and teaching on facial-expression recognition; aggregate, consented analysis of "
            "expressions in images, with the error rates above in view; a baseline to compare models against.",
            [
                "Not for decisions about people: hiring, admission, grading, credit, insurance, policing, "
                "border control, access to services, or medical and mental-health assessment.",
                "Not a lie detector, and not a reading of what someone feels: it labels a visible expression, "
                "which people show differently and can pose.",
                "Not for surveillance, tracking, or identifying people (it does not recognise identity).",
                "Not validated for children, for groups or conditions FER-2013 does not cover, or for video "
                "streams; measure it on your own data first.",
            ],
        ],
    )


def detector_recall() -> dict[str, Any]:
    """``{detector: its measurements}`` from ``fer_pipeline.faces.DETECTOR_RECALL``; {} where
    that module or its measurements are not there (the card then points at the write-up)."""
    try:  # through sys.modules, so that a test can stand in for the module
        faces = importlib.import_module("fer_pipeline.faces")
    except ImportError:
        return {}
    recall = getattr(faces, "DETECTOR_RECALL", None)
    if isinstance(recall, Mapping):
        return dict(recall)
    return {} if recall is None else {"detector": recall}


# ------------------------------------------------------------------ rendering
def to_markdown(card: list[Section]) -> str:
    lines = [f"# {TITLE}", ""]
    for section in card:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            lines += _markdown_block(block) + [""]
    return "\n".join(lines).rstrip() + "\n"


def _markdown_block(block: Block) -> list[str]:
    if isinstance(block, Table):
        cells = [block.header, tuple("---" for _ in block.header), *block.rows]
        return ["| " + " | ".join(_markdown_cell(c) for c in row) + " |" for row in cells]
    if isinstance(block, list):
        return [f"- {item}" for item in block]
    return [block]


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_html(card: list[Section]) -> str:
    """The card as one ``<section>`` of the report: headings, paragraphs, lists and tables, all escaped."""
    parts = [f'<section class="model-card"><h2>{_esc(TITLE)}</h2>']
    for section in card:
        parts.append(f"<h3>{_esc(section.title)}</h3>")
        parts += [_html_block(block) for block in section.blocks]
    return "".join(parts) + "</section>"


def _html_block(block: Block) -> str:
    if isinstance(block, Table):
        head = "".join(f"<th>{_esc(c)}</th>" for c in block.header)
        body = "".join(
            f'<tr><th scope="row">{_esc(row[0])}</th>' + "".join(f"<td>{_esc(c)}</td>" for c in row[1:]) + "</tr>"
            for row in block.rows
        )
        return f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
    if isinstance(block, list):
        return "<ul>" + "".join(f"<li>{_esc(item)}</li>" for item in block) + "</ul>"
    return f"<p>{_esc(block)}</p>"


def _esc(text: str) -> str:
    """Escaped text, the Markdown's `code` spans as <code> (html.escape leaves backticks alone)."""
    return _CODE_SPAN.sub(r"<code>\1</code>", html.escape(text, quote=True))


def _number(value: Any, digits: int = 4) -> str:
    if value is None or isinstance(value, bool):
        return "n/a"
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}" if digits else str(int(value))
    return str(value)


def _value_text(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_value_text(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return json.dumps(value, default=str)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def short_description(metrics: Mapping[str, Any], card_uri: str) -> str:
    """One paragraph for a registry's description field: the headline numbers, the card's place, the limit."""
    return (
        f"FER-2013 facial-emotion classifier ({len(CLASSES)} classes): test accuracy "
        f"{_number(metrics.get('accuracy'))}, macro-F1 {_number(metrics.get('macro_f1'))} on "
        f"{_number(metrics.get('num_test_samples'), 0)} images. Model card: {card_uri}. "
        "Not for decisions about people; not a lie detector."
    )
