"""The recipe sweep's table: ``bench/gpu.py sweep`` results, averaged over seeds, against the preset.

    python bench/gpu_report.py build/bench/gpu-sweep-1.jsonl build/bench/gpu-sweep-2.jsonl

Prints one Markdown row per candidate (validation accuracy with 1 and 10 views, 10-view
macro-F1, each the mean over the candidate's seeds, and the change against ``base``;
where the results have them, the ten-crop views' accuracy too), then how much the
test-time views add across all runs. Standard library only, so it
runs anywhere the results file is.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from statistics import mean

SCORES = ("val_accuracy", "val_accuracy_tta10", "val_macro_f1_tta10")
CROPS = "val_accuracy_tta_crops"  # ten-crop views, in results since issue 24


def load_sweep(paths: list[Path]) -> dict[str, list[dict]]:
    """Sweep results grouped by candidate name, in first-seen order."""
    runs: dict[str, list[dict]] = defaultdict(list)
    for path in paths:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                result = json.loads(line)
            except ValueError as error:
                raise SystemExit(
                    f"{path}:{number}: not a JSON line ({error}); is this a bench/gpu.py results file?"
                ) from error
            if result.get("kind") == "sweep":
                runs[result["name"]].append(result)
    return runs


def table(runs: dict[str, list[dict]], reference: str = "base") -> list[str]:
    """Markdown rows: candidate, seeds, the mean scores and their change against ``reference``."""
    if reference not in runs:
        raise SystemExit(f"No {reference!r} runs in the results: the table's deltas are against it.")
    ref = {score: mean(r[score] for r in runs[reference]) for score in SCORES}
    crops = any(CROPS in r for rs in runs.values() for r in rs)
    rows = [
        "| candidate | seeds | 1 view acc. | 10 views acc. | 10 views macro-F1 | "
        + ("10 crops acc. | " if crops else "")
        + "change (1 / 10 views / F1) | hit deadline |",
        "|---|---|---|---|---|---|---|" + ("---|" if crops else ""),
    ]
    for name, results in runs.items():
        means = {score: mean(r[score] for r in results) for score in SCORES}
        change = "" if name == reference else " / ".join(f"{means[s] - ref[s]:+.3f}" for s in SCORES)
        seeds = ", ".join(str(r.get("seed", "?")) for r in results)
        late = sum(bool(r.get("deadline_hit")) for r in results)
        cropped = [r[CROPS] for r in results if CROPS in r]
        crop_cell = (f"{mean(cropped):.4f} | " if cropped else " | ") if crops else ""
        rows.append(
            f"| {name} | {seeds} | {means[SCORES[0]]:.4f} | {means[SCORES[1]]:.4f} | "
            f"{means[SCORES[2]]:.4f} | {crop_cell}{change} | {late or ''} |"
        )
    return rows


def view_gains(runs: dict[str, list[dict]]) -> str:
    """What the mirror and the ten views add to single-view accuracy, over every run."""
    results = [r for rs in runs.values() for r in rs]
    flip = [r["val_accuracy_tta"] - r["val_accuracy"] for r in results]
    ten = [r["val_accuracy_tta10"] - r["val_accuracy_tta"] for r in results]
    return (
        f"Over {len(results)} runs: the mirror adds {mean(flip):+.4f} ({min(flip):+.4f} to {max(flip):+.4f}); "
        f"ten views add {mean(ten):+.4f} more ({min(ten):+.4f} to {max(ten):+.4f}, lower in "
        f"{sum(g < 0 for g in ten)})."
    )


def main(argv: list[str] | None = None) -> int:
    paths = [Path(p) for p in (argv if argv is not None else sys.argv[1:])]
    if not paths:
        raise SystemExit("usage: python bench/gpu_report.py RESULTS.jsonl [...]")
    runs = load_sweep(paths)
    if not runs:
        raise SystemExit(f"No sweep results in {', '.join(map(str, paths))}.")
    print("\n".join(table(runs)))
    print()
    print(view_gains(runs))
    return 0


if __name__ == "__main__":
    from fer_pipeline.errors import exit_in_one_line

    raise SystemExit(exit_in_one_line(main))
