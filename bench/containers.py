"""Image build times (cold, warm, unchanged) and the container run's time per step next to
the subprocess run's, on the generated sample.

    .venv/bin/python -m bench.containers               # builds + both runs (~15 min on 2 cores)
    .venv/bin/python -m bench.containers --skip-builds  # only the two runs

Builds: the CPU image from a temporary copy of the build context, tagged apart from
`make run-containers`' images: cold (`--no-cache`: every layer, the pip install of the
locked dependencies included), warm (one line of src/ changed: the engine reuses the
dependency layers), unchanged (`container_images.ensure_image` finds the tag of the
same context and builds nothing). Runs: `python -m pipelines.run_containers --compare`
in a fresh temporary --local-dir: the container run, then the same pipeline with
kfp.local's subprocess runner (whose ingest finds the dataset already published, so its
ingest row is not comparable); a step runs from kfp.local's "Executing task" line to its
"finished with status" line, timestamped as the lines arrive.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._common import REPO_ROOT, append_section, load_average, markdown_table
from pipelines.container_engine import detect_engine
from pipelines.container_images import build_context_files, ensure_image, resolve_base_image

STARTED = re.compile(r"Executing task '([\w-]+)'")
FINISHED = re.compile(r"Task '([\w-]+)' finished with status (\w+)")
SECOND_RUN = "with kfp.local's subprocess runner, to compare"


def copy_context(target: Path) -> Path:
    for path in build_context_files():
        dest = target / path.relative_to(REPO_ROOT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
    for script in (REPO_ROOT / "containers").glob("*.sh"):
        shutil.copy2(script, target / "containers" / script.name)
    return target


def timed_build(context: Path, ref: str, base: str, extra: str = "") -> float:
    env = {**os.environ, "BASE_IMAGE": base, "EXTRA_BUILD_OPTS": extra, "GIT_COMMIT": "bench"}
    start = time.perf_counter()
    result = subprocess.run(
        [str(context / "containers" / "build.sh"), "cpu", ref],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        check=False,
    )
    if result.returncode:
        sys.exit(f"building {ref} failed (exit {result.returncode}); run containers/build.sh cpu {ref} to see why")
    return time.perf_counter() - start


def builds(engine) -> list[list[str]]:
    base = resolve_base_image(engine, os.environ.get("BASE_IMAGE", ""))
    rows = []
    with tempfile.TemporaryDirectory(prefix="fer-bench-build-") as tmp:
        context = copy_context(Path(tmp))
        cold = timed_build(context, "fer-bench/fer-pipeline-cpu:cold", base, "--no-cache")
        rows.append(["cold (`--no-cache`)", f"{cold:.0f}"])
        init = context / "src" / "fer_pipeline" / "__init__.py"
        init.write_text(init.read_text() + "# bench: one changed line\n")
        warm = timed_build(context, "fer-bench/fer-pipeline-cpu:warm", base)
        rows.append(["warm (one line of src/ changed)", f"{warm:.0f}"])
    with tempfile.TemporaryDirectory() as tmp:
        ensure_image(engine, "cpu", "fer-pipeline", base, Path(tmp) / "build.log")  # make sure it exists
        start = time.perf_counter()
        image = ensure_image(engine, "cpu", "fer-pipeline", base, Path(tmp) / "build.log")
        rows.append([f"unchanged (`{image.ref}` found)", f"{time.perf_counter() - start:.1f}"])
    subprocess.run(
        [*engine.cli, "rmi", "fer-bench/fer-pipeline-cpu:cold", "fer-bench/fer-pipeline-cpu:warm"],
        capture_output=True,
        check=False,
    )
    return rows


def runs(extra: list[str]) -> tuple[list[list[str]], float]:
    """Per step: container run's seconds and the subprocess run's; and the whole command's."""
    steps: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="fer-bench-containers-") as tmp:
        command = [sys.executable, "-m", "pipelines.run_containers", "--local-dir", tmp, "--compare", *extra]
        start = time.perf_counter()
        started: dict[str, float] = {}
        which = "containers"
        with subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as proc:
            for line in proc.stdout:
                now = time.perf_counter() - start
                print(line, end="")
                if SECOND_RUN in line:
                    which = "subprocess"
                elif match := STARTED.search(line):
                    started[match.group(1)] = now
                elif match := FINISHED.search(line):
                    name = match.group(1)
                    steps.setdefault(name, {})[which] = now - started.get(name, now)
        total = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"run_containers --compare failed with exit code {proc.returncode}")
    rows = []
    for name, times in steps.items():
        c, s = times.get("containers"), times.get("subprocess")
        ratio = f"{c / s:.2f}" if c and s else ""
        rows.append([name, f"{c:.1f}" if c else "", f"{s:.1f}" if s else "", ratio])
    return rows, total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-builds", action="store_true")
    parser.add_argument("--no-append", action="store_true")
    args, extra = parser.parse_known_args(argv)
    engine = detect_engine()
    load_before = load_average()
    notes = [f"engine: {engine.name} ({' '.join(engine.cli)})"]
    sections = []
    if not args.skip_builds:
        sections.append(("CPU image build times", markdown_table(["build", "wall s"], builds(engine)), []))
    rows, total = runs(extra)
    sections.append(
        (
            "make run-containers vs make run-local on the generated sample, per step",
            markdown_table(["step", "container run s", "subprocess run s", "ratio"], rows),
            [
                f"the whole `run_containers --compare` command: {total:.0f} s (both runs, compile, emulator, comparison)",
                "the subprocess run goes second: its ingest finds the dataset published and uploads nothing",
            ],
        )
    )
    for title, table, more in sections:
        if args.no_append:
            print(table)
        else:
            append_section(title, table, load_before=load_before, notes=notes + more)
    return 0


if __name__ == "__main__":
    from fer_pipeline.errors import exit_in_one_line

    raise SystemExit(exit_in_one_line(main))
