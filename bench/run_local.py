"""Wall time of ``make run-local`` on the generated sample, step by step.

    .venv/bin/python -m bench.run_local

Runs what ``make run-local`` runs (``python -m pipelines.run_local``, the whole DAG
under kfp.local with the GCS emulator) in a fresh temporary ``--local-dir``, so it
neither reuses nor disturbs ``build/local``; ``make run-local`` adds only its
idempotent set-up check. Each console progress line is timestamped as it arrives;
a step's time runs from kfp.local's "Executing task" line to its "finished with
status" line.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time

from bench._common import REPO_ROOT, append_section, load_average, markdown_table

STARTED = re.compile(r"Executing task '([\w-]+)'")
FINISHED = re.compile(r"Task '([\w-]+)' finished with status (\w+)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-append", action="store_true")
    args, extra = parser.parse_known_args(argv)
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="fer-bench-run-local-") as tmp:
        command = [sys.executable, "-m", "pipelines.run_local", "--local-dir", tmp, *extra]
        start = time.perf_counter()
        started: dict[str, float] = {}
        steps: list[list[str]] = []
        with subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as proc:
            for line in proc.stdout:
                now = time.perf_counter() - start
                print(line, end="")
                if match := STARTED.search(line):
                    started[match.group(1)] = now
                elif match := FINISHED.search(line):
                    name, status = match.groups()
                    begun = started.get(name, now)
                    steps.append([name, status, f"{begun:.0f}", f"{now - begun:.1f}"])
        total = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"run-local failed with exit code {proc.returncode}")
    steps.append(["whole run (start-up, emulator, compile, all steps)", "exit 0", "0", f"{total:.1f}"])
    table = markdown_table(["step", "status", "started at s", "wall s"], steps)
    notes = [
        "same as `make run-local` (generated sample: 40 train / 12 test images per class, 2+1 epochs, weights none)"
    ]
    if args.no_append:
        print(table)
    else:
        append_section("make run-local on the generated sample, per step", table, load_before=load_before, notes=notes)
    return 0


if __name__ == "__main__":
    from fer_pipeline.errors import exit_in_one_line

    raise SystemExit(exit_in_one_line(main))
