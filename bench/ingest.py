"""Full ingest and validation of the real FER-2013 zip: time to the canonical dataset.

    .venv/bin/python -m bench.ingest                  # 3 timed reads of the real zip

Times ``ingest.read_source`` (open the zip, decode and check all 35,887 JPEGs, classes,
splits, duplicates and train/test leakage: what ``fer-pipeline validate`` runs) over
``--repeats`` runs, then one whole local ``steps.ingest_step`` (the same, plus writing
the canonical dataset and its report). Process CPU time is shown beside wall time:
on a machine shared with other test runs, wall time includes the time the process
waited for a core. Target: under 20 s.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

from bench._common import DEFAULT_ZIP, append_section, load_average, markdown_table, median

TARGET_S = 20.0


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return value, time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zip", type=Path, default=DEFAULT_ZIP)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args(argv)
    if not args.zip.is_file():
        sys.exit(f"FER-2013 zip not found at {args.zip}; pass --zip or set FER2013_ZIP.")
    logging.basicConfig(level=logging.WARNING)
    load_before = load_average()
    from fer_pipeline.ingest import read_source
    from fer_pipeline.steps import ingest_step

    rows = []
    walls = []
    for i in range(args.repeats):
        result, wall, cpu = timed(lambda: read_source(args.zip))
        walls.append(wall)
        rows.append(
            [
                f"read_source (ingest + validation), run {i + 1}",
                len(result.dataset),
                f"{wall:.1f}",
                f"{cpu:.1f}",
                "yes" if wall < TARGET_S else "no",
            ]
        )
    with tempfile.TemporaryDirectory(prefix="fer-bench-ingest-") as tmp:
        _, wall, cpu = timed(lambda: ingest_step(str(args.zip), Path(tmp) / "dataset"))
        size = sum(f.stat().st_size for f in (Path(tmp) / "dataset").iterdir()) / 2**20
    rows.append(
        [
            f"ingest_step to a local directory ({size:.0f} MiB written)",
            len(result.dataset),
            f"{wall:.1f}",
            f"{cpu:.1f}",
            "yes" if wall < TARGET_S else "no",
        ]
    )
    table = markdown_table(["what", "images", "wall s", "CPU s", f"< {TARGET_S:.0f} s"], rows)
    notes = [f"median read_source wall time {median(walls):.1f} s over {args.repeats} runs; zip {args.zip.name}"]
    if args.no_append:
        print(table, *notes, sep="\n")
    else:
        append_section("Ingest and validation of the real FER-2013 zip", table, load_before=load_before, notes=notes)
    return 0


if __name__ == "__main__":
    from fer_pipeline.errors import exit_in_one_line

    raise SystemExit(exit_in_one_line(main))
