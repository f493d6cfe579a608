"""Run the whole pipeline on this machine: kfp.local, a GCS emulator, a local registry.

    python -m pipelines.run_local                       # generated sample (not faces), ~2-3 min
    python -m pipelines.run_local --data fer2013.zip --epochs 1 --max-samples 2000
    python -m pipelines.run_local --data fer2013.zip --preset cpu   # compact CNN from scratch, ~1.6 h on 2 cores (bfloat16)

Everything lands under build/local/: the emulator's bucket (gcs/), the KFP artifacts
(pipeline-root/), and the model registry (registry/).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol

from fer_pipeline import synthetic
from fer_pipeline.cli_parser import OneLineParser
from fer_pipeline.errors import EXIT_UNUSABLE_INPUT, EXIT_USAGE
from fer_pipeline.presets import PRESETS
from fer_pipeline.recipe import minimal_overrides, preset_values

LOCAL_DIR = Path("build/local")
BUCKET = "fer-local"
SAMPLE_PER_CLASS = (40, 12)  # train, test images per class in the generated sample
REMOTE_SOURCES = ("gs://", "kaggle:")  # passed to ingest as they are


@dataclass(frozen=True)
class LocalRun:
    data: str
    frozen_epochs: int
    finetune_epochs: int
    max_train_samples: int
    batch_size: int
    threshold: float
    weights: str
    frozen_lr: float
    finetune_lr: float
    local_dir: Path
    cache: bool = False
    preset: str = ""  # fer_pipeline.presets; its parameters, then the explicit flags above, win over defaults


def parse_args(argv: list[str] | None) -> LocalRun:
    return local_run(build_parser().parse_args(argv))


def build_parser(**kwargs) -> argparse.ArgumentParser:
    """run-local's options; run_containers builds on them (``add_help=False`` for a parent parser)."""
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
    parser.add_argument("--data", default="", help="Kaggle zip, folder or fer2013.csv (default: generated sample)")
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs of each phase the recipe runs; a phase the preset turns off stays off (default: 2+1 sample, "
        "20+10 data, or the preset's)",
    )
    parser.add_argument("--max-samples", type=int, default=0, help="cap on training samples (0 = all)")
    parser.add_argument(
        "--preset", default="", choices=["", *PRESETS], help="named parameter set (fer_pipeline.presets)"
    )
    parser.add_argument("--batch-size", type=int, default=None, help="batch size (default 64, or the preset's)")
    parser.add_argument("--threshold", type=float, default=0.0, help="test accuracy needed to register")
    parser.add_argument(
        "--weights", default=None, help='backbone weights: "none" (default here), "imagenet", or a file'
    )
    parser.add_argument("--frozen-lr", type=float, default=None, help="phase-1 learning rate")
    parser.add_argument("--finetune-lr", type=float, default=None, help="phase-2 learning rate")
    parser.add_argument("--local-dir", type=Path, default=LOCAL_DIR)
    parser.add_argument("--cache", action="store_true", help="reuse outputs of unchanged steps from earlier runs")
    return parser


def local_run(args: argparse.Namespace) -> LocalRun:
    """The parsed options as one LocalRun: each value from its flag, else the preset, else the default."""
    sample = not args.data
    epochs = args.epochs
    chosen = preset_values(args.preset)
    return LocalRun(
        data=args.data,
        frozen_epochs=phase_epochs(epochs, chosen.get("frozen_epochs"), 2 if sample else 20),
        finetune_epochs=phase_epochs(epochs, chosen.get("finetune_epochs"), 1 if sample else 10),
        max_train_samples=args.max_samples,
        batch_size=first_set(args.batch_size, chosen.get("batch_size"), 64),
        threshold=args.threshold,
        weights=first_set(args.weights, chosen.get("weights"), "none"),
        # A randomly initialised backbone needs a larger rate than fine-tuning ImageNet features.
        frozen_lr=first_set(args.frozen_lr, chosen.get("frozen_lr"), 1e-3 if sample else 1e-4),
        finetune_lr=first_set(args.finetune_lr, chosen.get("finetune_lr"), 1e-4 if sample else 1e-5),
        local_dir=args.local_dir.resolve(),
        cache=args.cache,
        preset=args.preset,
    )


def phase_epochs(flag: int | None, preset: int | None, default: int) -> int:
    """--epochs wins over the preset's epochs of a phase, except where the preset turns the phase
    off: ``PRESET=cpu EPOCHS=48`` shortens its one phase and adds no fine-tuning phase."""
    if preset == 0:
        return 0
    return first_set(flag, preset, default)


def check_parameters(run: LocalRun) -> None:
    """Build the typed configs the components will build from these parameters, so that a
    bad value fails now, in one line, and not in the training step after ingest."""
    from fer_pipeline.errors import ConfigError
    from fer_pipeline.recipe import from_parameters

    try:
        from_parameters(pipeline_arguments(run, run.data))
    except ConfigError as exc:
        refuse(str(exc), EXIT_USAGE)
    if not 0.0 <= run.threshold <= 1.0:
        refuse(f"--threshold must be an accuracy in [0, 1], got {run.threshold}.", EXIT_USAGE)
    if run.max_train_samples < 0:
        refuse(f"--max-samples must be >= 0 (0 = all), got {run.max_train_samples}.", EXIT_USAGE)


def refuse(message: str, code: int) -> NoReturn:
    """End in one line with the CLI's exit codes (fer_pipeline.errors): 2 for a wrong option,
    1 for data that cannot be used as it is."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def float32_epochs_note(run: LocalRun, cpu_flags: frozenset[str] | None = None, gpu: bool | None = None) -> str:
    """presets.float32_epochs_note for this run, in make's words (EPOCHS=)."""
    from fer_pipeline import presets

    values = preset_values(run.preset)  # "" (no preset): {}, and no note
    precision, budget = values.get("precision", "auto"), values.get("time_budget_minutes", 0.0)
    return presets.float32_epochs_note(run.preset, run.frozen_epochs, precision, "EPOCHS=", budget, cpu_flags, gpu)


def check_data(run: LocalRun) -> None:
    """Refuse a DATA= that does not exist, or a local one that ingest would refuse, before
    anything is built or written: read here (seconds, even for the whole zip), a damaged
    file ends in one line instead of in the ingest task after its retries (minutes)."""
    if not run.data or run.data.startswith(REMOTE_SOURCES):
        return
    path = Path(run.data).expanduser()
    if not path.exists():
        refuse(
            f"DATA={run.data} does not exist; pass the Kaggle zip, its folder, fer2013.csv, a gs:// URI or "
            "kaggle:msambare/fer2013.",
            EXIT_USAGE,
        )
    from fer_pipeline.errors import DatasetError
    from fer_pipeline.ingest import read_source

    print(f"Checking DATA={run.data} before the pipeline starts (its ingest task reads it again):")
    try:
        read_source(path)
    except DatasetError as exc:
        refuse(f"DATA={run.data}: {exc}", EXIT_UNUSABLE_INPUT)


def first_set(*values):
    """The first value that was given: an explicit 0 is a value, not "unset"."""
    return next(v for v in values if v is not None)


def data_source(run: LocalRun) -> str:
    """The user's data as an absolute path (a gs:// or kaggle: source as given), or the
    generated sample (written once)."""
    check_data(run)
    if run.data.startswith(REMOTE_SOURCES):
        return run.data
    if run.data:
        return str(Path(run.data).expanduser().resolve())
    sample = run.local_dir / "sample" / "fer2013-sample.zip"
    if not sample.exists():
        synthetic.write_kaggle_zip(sample, n_train=SAMPLE_PER_CLASS[0], n_test=SAMPLE_PER_CLASS[1])
    print(f"No DATA= given: using a generated sample ({sample}), bars on noise, not faces.")
    return str(sample)


def recipe_fields(run: LocalRun) -> dict:
    """The recipe fields this run sets (flags, or run-local's own defaults where the preset is silent)."""
    return {
        "weights": run.weights,
        "batch_size": run.batch_size,
        "frozen_epochs": run.frozen_epochs,
        "finetune_epochs": run.finetune_epochs,
        "frozen_lr": run.frozen_lr,
        "finetune_lr": run.finetune_lr,
        "max_train_samples": run.max_train_samples,
        # The sample's few DenseNet169 steps cost less run eagerly than tracing its graph
        # (fine-tuning's one epoch: 144 s traced, 26 s eager; docs/benchmarks.md). A preset
        # decides for itself, so PRESET=cpu trains as preset=cpu does on Vertex.
        "run_eagerly": not run.data and not run.preset,
    }


def pipeline_arguments(run: LocalRun, source: str) -> dict:
    """The pipeline's parameters: the preset by name and only the recipe fields that differ
    from it, as a Vertex run of the same recipe would pass them."""
    return {
        "data_source": source,
        "data_prefix": f"gs://{BUCKET}/fer",
        "registry": str(run.local_dir / "registry"),
        "preset": run.preset,
        "recipe": minimal_overrides(run.preset, recipe_fields(run)),
        "accuracy_threshold": run.threshold,
        "model_display_name": "fer-emotion-local",
    }


# What reaches the console; everything else (kfp.local's full executor dumps) goes to the log file.
PROGRESS = re.compile(
    r"Executing task|Task image: |did not write|finished with status|Skipping conditional|fer_pipeline\.\w+: |^Epoch \d+/\d+|- loss: "
)
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@contextlib.contextmanager
def progress_only(log_path: Path):
    """Send this process's (and its children's) stdout/stderr to ``log_path`` and echo
    only progress lines to the console."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    console = os.fdopen(os.dup(1), "w", buffering=1)
    saved = os.dup(1), os.dup(2)
    sys.stdout.flush(), sys.stderr.flush()
    with open(log_path, "wb") as log:
        os.dup2(log.fileno(), 1), os.dup2(log.fileno(), 2)
    done = threading.Event()
    follower = threading.Thread(target=_echo_progress, args=(log_path, console, done), daemon=True)
    follower.start()
    try:
        yield
    finally:
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(saved[0], 1), os.dup2(saved[1], 2)
        done.set()
        follower.join()
        console.close()


def _echo_progress(log_path: Path, console, done: threading.Event) -> None:
    with open(log_path, errors="replace") as log:
        while True:
            line = log.readline()
            if not line:
                if done.is_set():
                    return
                time.sleep(0.2)
                continue
            line = ANSI.sub("", line).strip()
            if PROGRESS.search(line):
                console.write(f"  {line[:160]}\n")


def run_pipeline(run: LocalRun, source: str, executor: Executor | None = None) -> Path:
    """Run the DAG with kfp.local against the emulator; returns this run's artifact root.

    ``executor`` chooses how tasks run; the default runs the pipeline function's
    components as subprocesses in this virtualenv (pipelines.run_containers runs the
    compiled file's components in their images)."""
    from kfp import local

    from fer_pipeline import storage
    from pipelines.compile import current_commit
    from pipelines.gcs_emulator import GcsEmulator

    executor = executor or SubprocessExecutor()
    started = time.time()
    pipeline_root = run.local_dir / "pipeline-root"
    with (
        GcsEmulator(run.local_dir / "gcs") as emulator,
        executor.session(run, source, emulator.url) as (runner, pipeline),
    ):
        storage.ensure_bucket(BUCKET)
        local.init(
            runner=runner,
            pipeline_root=str(pipeline_root),
            raise_on_error=True,
            enable_caching=run.cache,
            cache_root=str(run.local_dir / "cache"),
        )
        before = set(pipeline_root.glob("*")) if pipeline_root.exists() else set()
        arguments = pipeline_arguments(run, source) | {"commit": current_commit()}
        pipeline(**arguments)
    created = sorted(set(pipeline_root.glob("*")) - before, key=lambda p: p.stat().st_mtime)
    run_dir = created[-1] if created else pipeline_root
    record_run(run, run_dir, arguments, started, kind=executor.kind)
    return run_dir


class SubprocessExecutor:
    """Every task as a subprocess of this Python (kfp.local.SubprocessRunner)."""

    kind = "kfp-local"

    @contextlib.contextmanager
    def session(self, run: LocalRun, source: str, emulator_url: str):
        from kfp import local

        from pipelines.training import make_pipeline

        yield local.SubprocessRunner(use_venv=False), make_pipeline("vertex")


class Executor(Protocol):
    """How tasks run: ``kind`` labels the run in runs.json; ``session`` yields the
    kfp.local runner and the pipeline to call while the emulator is up."""

    kind: str

    def session(
        self, run: LocalRun, source: str, emulator_url: str
    ) -> contextlib.AbstractContextManager[tuple[Any, Callable[..., Any]]]: ...


def record_run(run: LocalRun, run_dir: Path, arguments: dict, started: float, kind: str = "kfp-local") -> dict | None:
    """Append the run to ``local_dir/runs.json``: the evaluation's record (run.json) plus
    the pipeline arguments, the wall-clock duration and what was registered."""
    from fer_pipeline import runs

    found = sorted(run_dir.glob("evaluate/evaluation/run.json"))
    if not found:
        return None
    finished = time.time()
    record = json.loads(found[0].read_text())
    local_only = ("registry", "data_prefix")  # paths of this machine's set-up, not of the run
    record["params"] = {**record.get("params", {}), **{k: v for k, v in arguments.items() if k not in local_only}}
    record.update(
        run_id=run_dir.name,
        kind=kind,
        duration_s=round(finished - started, 1),
        started=runs.iso(started),
        finished=runs.iso(finished),
    )
    record["artifacts"] = {
        "report": str(run_dir / "evaluate" / "report"),
        "metrics": str(run_dir / "evaluate" / "evaluation" / "metrics.json"),
        "tensorboard": [str(run_dir / task / "model" / "tensorboard") for task in ("train-frozen", "fine-tune")],
    }
    registered = sorted(run_dir.glob("**/register/registered"))
    if registered:
        version = json.loads(registered[0].read_text())
        record["registered"] = f"{version.get('name')}@{version.get('version')}"
    runs.RunIndex(run.local_dir / runs.INDEX_FILE).append(record)
    return record


def summarize(run_dir: Path, registry_dir: Path, seconds: float) -> str:
    """Where the report, the metrics and the registered model are."""
    lines = [f"\nPipeline finished in {seconds:.0f} s. Artifacts: {run_dir}"]
    for label, pattern in (("HTML report", "evaluate/report"), ("metrics", "evaluate/evaluation/metrics.json")):
        found = sorted(run_dir.glob(pattern))
        lines.append(f"  {label:16s} {found[0] if found else '(not written)'}")
    metrics_files = sorted(run_dir.glob("evaluate/evaluation/metrics.json"))
    if metrics_files:
        m = json.loads(metrics_files[0].read_text())
        lines.append(f"  test accuracy    {m['accuracy']:.4f}   macro-F1 {m['macro_f1']:.4f}")
    registered = sorted(run_dir.glob("**/register/registered"))
    if registered:
        version = json.loads(registered[0].read_text())
        lines.append(
            f"  registered model {version.get('name')} v{version.get('version')} {version.get('aliases')} in {registry_dir}"
        )
    else:
        lines.append("  registered model (none: test accuracy below the threshold)")
    lines.append(f"  list models:     .venv/bin/fer-pipeline models list --registry {registry_dir}")
    lines.append(f"  compare runs:    .venv/bin/fer-pipeline runs compare --index {registry_dir.parent / 'runs.json'}")
    lines.append(f"  training curves: make tensorboard LOGDIR={run_dir}")
    return "\n".join(lines)


def execute(run: LocalRun, executor: Executor | None = None, how: str = "kfp.local") -> tuple[int, Path | None]:
    """Run the pipeline with progress on the console and the rest in run.log; print the
    summary. Returns the exit code and the run's artifact root."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.time()
    check_parameters(run)
    source = data_source(run)
    if note := float32_epochs_note(run):
        print(note)
    log_path = run.local_dir / "run.log"
    print(f"Running the pipeline with {how}; full log: {log_path}")
    try:
        with progress_only(log_path):
            run_dir = run_pipeline(run, source, executor)
    except Exception as exc:  # the log has the component's traceback
        cause = last_error(log_path)
        print(f"\nPipeline failed: {ANSI.sub('', str(exc))}", file=sys.stderr)
        if cause:
            print(f"  {cause}", file=sys.stderr)
        print(f"See the full log: {log_path}", file=sys.stderr)
        return 1, None
    print(summarize(run_dir, run.local_dir / "registry", time.time() - started))
    return 0, run_dir


ERROR_LINE = re.compile(r"^\s*(?:[\w.]+\.)?\w*(?:Error|Exception): .+")


def last_error(log_path: Path) -> str:
    """The last exception line a task wrote to the log (what went wrong, in one line)."""
    if not log_path.is_file():
        return ""
    found = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if ERROR_LINE.match(line)]
    return ANSI.sub("", found[-1]) if found else ""


def main(argv: list[str] | None = None) -> int:
    return execute(parse_args(argv))[0]


if __name__ == "__main__":
    sys.exit(main())
