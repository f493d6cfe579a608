"""A single self-contained HTML evaluation report.

Images are embedded as base64 data URIs and the CSS is inline, so the file can be
mailed, stored as a pipeline artifact or opened on a phone with no network access.
Every string from the metrics, the summary or the run parameters is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from fer_pipeline.classes import CLASSES, averaged_classes_note

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;padding:1rem;
  color:#1f2933;background:#f7f8fa;line-height:1.4}
main{max-width:960px;margin:0 auto}
h1{font-size:1.5rem;margin:.2rem 0 1rem}
h2{font-size:1.15rem;margin:1.6rem 0 .6rem;border-bottom:1px solid #d9dee4;padding-bottom:.2rem}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(140px,1fr));gap:.6rem}
.card{background:#fff;border:1px solid #d9dee4;border-radius:8px;padding:.6rem .8rem}
.card .label{font-size:.8rem;color:#52606d}
.card .value{font-size:1.5rem;font-weight:600}
figure{margin:0 0 1rem;background:#fff;border:1px solid #d9dee4;border-radius:8px;padding:.5rem}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{font-size:.85rem;color:#52606d;margin-top:.3rem}
.table-wrap{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;width:100%;background:#fff;font-size:.9rem}
th,td{border:1px solid #d9dee4;padding:.35rem .5rem;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
thead th{background:#eef1f4}
td.text{text-align:left;white-space:normal;word-break:break-word}
"""

_PLOT_TITLES = {
    "history": "Training curves of every phase that trained, on one epoch axis (a dotted line marks where a phase starts)",
    "confusion_matrix": "Confusion matrix on the test split",
    "roc": "ROC curves, one class vs rest",
}


def render_report(
    metrics: dict,
    plots: dict[str, Path],
    out_path: Path,
    *,
    dataset_summary: dict | None = None,
    run_info: dict | None = None,
    model_card: list | None = None,
) -> Path:
    """Write the evaluation report as one self-contained HTML file.

    Args:
        metrics: The dict ``evaluate`` returns (accuracy, macro_f1, macro_roc_auc,
            public_test_accuracy, private_test_accuracy, per_class, ...); missing
            entries show as "n/a".
        plots: Plot name (e.g. "history") to PNG path; each is embedded as a data URI.
        out_path: HTML file to write; its directory is created.
        dataset_summary: Optional flat or nested dict describing the data.
        run_info: Optional run parameters (config, pipeline run id, ...).
        model_card: Optional ``fer_pipeline.model_card.build_card`` sections, shown as
            the report's last section (the same card that is registered with the model).

    Returns:
        ``out_path``.
    """
    sections = [
        "<h1>Facial-emotion classifier: evaluation</h1>",
        _headline(metrics),
        _plots_section(plots),
        _per_class_section(metrics),
    ]
    if dataset_summary:
        sections.append(_key_value_section("Dataset", dataset_summary))
    if run_info:
        sections.append(_key_value_section("Run parameters", run_info))
    if model_card:
        from fer_pipeline.model_card import to_html

        sections.append(to_html(model_card))
    document = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        "<title>FER evaluation report</title>\n"
        '<link rel="icon" href="data:,">\n'  # no favicon request from a file:// page
        f"<style>{_CSS}</style>\n</head>\n<body>\n<main>\n" + "\n".join(sections) + "\n</main>\n</body>\n</html>\n"
    )
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(document, encoding="utf-8")
    return out_path


def _esc(value: Any) -> str:
    """HTML-escape any value's text, quotes included."""
    return html.escape(str(value), quote=True)


def _number(value: Any, digits: int = 3) -> str:
    """A metric for display: fixed decimals, or "n/a" when missing."""
    if value is None:
        return "n/a"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    return _esc(value)


def _headline(metrics: dict) -> str:
    """Cards with the headline metrics."""
    cards = [
        ("Accuracy", metrics.get("accuracy")),
        ("Macro F1" + averaged_classes_note(metrics, "macro_f1"), metrics.get("macro_f1")),
        ("Macro ROC-AUC" + averaged_classes_note(metrics, "macro_roc_auc"), metrics.get("macro_roc_auc")),
    ]
    sources = (("PublicTest", "public_test_accuracy"), ("PrivateTest", "private_test_accuracy"))
    for source, key in sources:  # shown only where the test set has them
        if metrics.get(key) is not None:
            cards.append((f"{source} accuracy", metrics[key]))
    cards.append(("Test images", metrics.get("num_test_samples")))
    body = "".join(
        f'<div class="card"><div class="label">{_esc(label)}</div><div class="value">{_number(value)}</div></div>'
        for label, value in cards
    )
    return f'<section><h2>Headline</h2><div class="cards">{body}</div></section>'


def _plots_section(plots: dict[str, Path]) -> str:
    """Each plot as an embedded PNG with a caption."""
    figures = []
    for name, path in plots.items():
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        title = _PLOT_TITLES.get(name, name)
        figures.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(title)}">'
            f"<figcaption>{_esc(title)}</figcaption></figure>"
        )
    return "<section><h2>Plots</h2>" + "".join(figures) + "</section>"


def _per_class_section(metrics: dict) -> str:
    """One row per class, in CLASSES order, whatever the metrics hold."""
    per_class = metrics.get("per_class") or {}
    columns = (("precision", 3), ("recall", 3), ("f1", 3), ("support", 0), ("roc_auc", 3))
    rows = []
    for name in CLASSES:
        values = per_class.get(name) or {}
        cells = "".join(f"<td>{_number(values.get(key), digits)}</td>" for key, digits in columns)
        rows.append(f'<tr class="class-row"><th scope="row">{_esc(name)}</th>{cells}</tr>')
    head = "".join(f"<th>{_esc(label)}</th>" for label in ("class", "precision", "recall", "F1", "support", "ROC-AUC"))
    return (
        '<section><h2>Per class (test split)</h2><div class="table-wrap"><table>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div></section>"
    )


def _key_value_section(title: str, values: dict) -> str:
    """A two-column table; nested values are shown as compact JSON."""
    rows = "".join(
        f'<tr><th scope="row">{_esc(key)}</th><td class="text">{_esc(_display(value))}</td></tr>'
        for key, value in values.items()
    )
    return (
        f'<section><h2>{_esc(title)}</h2><div class="table-wrap"><table><tbody>{rows}</tbody></table></div></section>'
    )


def _display(value: Any) -> str:
    """Text for one value: a flat dict as "key: value" pairs, other dicts and lists as JSON, the rest as str."""
    if isinstance(value, dict) and value and all(not isinstance(v, (dict, list, tuple)) for v in value.values()):
        return ", ".join(f"{key}: {item}" for key, item in value.items())
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str)
    return str(value)
