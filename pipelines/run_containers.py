"""Run the compiled pipeline with every task inside its component's image, on this machine.

    python -m pipelines.run_containers                      # generated sample
    python -m pipelines.run_containers --data fer2013.zip --epochs 1 --max-samples 2000

The same run as `make run-local` (same options, GCS emulator, local registry, runs.json,
summary), except that each task runs `python -m kfp.dsl.executor_main` in its image, as
Vertex AI and KFP start it: kfp.local.DockerRunner on the compiled pipeline file, over
Docker or Podman (pipelines.container_engine). Images are built first when missing or
stale (pipelines.container_images). On a host without a GPU the two training steps run
in the CPU image (--train-image auto|cpu|gpu). With the same parameters as an earlier
`make run-local`, the run is compared with it: dataset checksum, split and metrics.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from fer_pipeline.cli_parser import OneLineParser
from pipelines import run_local
from pipelines.container_engine import Engine, EngineError, detect_engine, docker_api, gpu_visible
from pipelines.container_images import Image, check_user_and_paths, ensure_image, image_id, resolve_base_image
from pipelines.container_tasks import TaskContainers

REGISTRY = "fer-pipeline"
TRAIN_IMAGES = ("auto", "cpu", "gpu")
# Metrics agree to this absolute tolerance between a subprocess and a container run.
METRIC_TOLERANCE = 1e-6


@dataclass
class ContainerExecutor:
    """Tasks in their images: the compiled pipeline file, DockerRunner, `TaskContainers`."""

    engine: Engine
    cpu: Image
    train: Image  # the GPU image, or the CPU image on hosts without a GPU
    compiled: Path
    use_gpu: bool
    tasks: TaskContainers = field(default_factory=TaskContainers)
    kind: str = "kfp-containers"

    def training_note(self) -> str:
        if self.train.target == "cpu":
            return f"Training steps: in the CPU image {self.train.ref} (no GPU here, or TRAIN_IMAGE=cpu)"
        return f"Training steps: in the GPU image {self.train.ref}, {'with every GPU' if self.use_gpu else 'without a GPU (none visible)'}"

    @contextlib.contextmanager
    def session(self, run: run_local.LocalRun, source: str, emulator_url: str):
        from kfp import components, local

        registry = run.local_dir / "registry"
        writable_by_any_user(run.local_dir / "pipeline-root", registry)
        self.tasks.extra_volumes = {str(registry): {"bind": str(registry), "mode": "rw"}}
        if Path(source).exists():  # not a gs:// or kaggle: source
            self.tasks.extra_volumes[source] = {"bind": source, "mode": "ro"}
        self.tasks.gpu_images = frozenset({self.train.ref} if self.use_gpu else ())
        runner = local.DockerRunner(
            # host network: the containers reach the GCS emulator on this machine's loopback
            network_mode="host",
            environment={"STORAGE_EMULATOR_HOST": emulator_url, "TF_CPP_MIN_LOG_LEVEL": "2"},
            **self.engine.run_args(),
        )
        with docker_api(self.engine), self.tasks.installed():
            yield runner, components.load_component_from_file(str(self.compiled))


def writable_by_any_user(pipeline_root: Path, registry: Path) -> None:
    """The images run as uid 10001, not as the user who owns build/local: let them create
    files in the pipeline root (each run's folder is made by its first task, so only the
    root itself) and in the registry (new version folders beside older ones, whoever wrote
    those). Files stay as they are (writers replace them atomically) except the lock
    files, which writers open for writing."""
    for folder in (pipeline_root, registry):
        folder.mkdir(parents=True, exist_ok=True)
    for path in (pipeline_root, registry, *registry.rglob("*")):
        extra = 0o777 if path.is_dir() else 0o666 if path.name.endswith(".lock") else 0
        with contextlib.suppress(PermissionError):
            if extra and (path.stat().st_mode & extra) != extra:
                path.chmod(path.stat().st_mode | extra)


def choose_training_image(wanted: str, has_gpu: bool) -> str:
    """auto: the GPU image where a GPU is visible, else the CPU image."""
    if wanted not in TRAIN_IMAGES:
        raise EngineError(f"--train-image (TRAIN_IMAGE=) must be one of {', '.join(TRAIN_IMAGES)}, got {wanted!r}.")
    if wanted == "auto":
        return "gpu" if has_gpu else "cpu"
    return wanted


def prepare(run: run_local.LocalRun, train_image: str, engine_name: str = "") -> ContainerExecutor:
    """Engine, images (built if missing or stale) and the compiled pipeline file."""
    from pipelines.compile import compile_target, current_commit

    engine = detect_engine(engine_name)
    has_gpu = gpu_visible()
    target = choose_training_image(train_image, has_gpu)
    print(f"Container engine: {engine.name} ({' '.join(engine.cli)}); GPU visible: {'yes' if has_gpu else 'no'}")
    base = resolve_base_image(engine, os.environ.get("BASE_IMAGE", ""))
    log = run.local_dir / "image-build.log"
    cpu = ensure_image(engine, "cpu", REGISTRY, base, log)
    train = ensure_image(engine, "gpu", REGISTRY, base, log) if target == "gpu" else cpu
    compiled = compile_target(
        "vertex",
        run.local_dir / "containers" / "pipeline.yaml",
        image=cpu.ref,
        gpu_image=train.ref,
        commit=current_commit(),
    )
    for image in dict.fromkeys((cpu.ref, train.ref)):
        print(f"Image {image} ({image_id(engine, image)}): {check_user_and_paths(engine, image)}")
    executor = ContainerExecutor(engine, cpu, train, compiled, use_gpu=target == "gpu" and has_gpu)
    print(executor.training_note())
    return executor


def task_table(executor: ContainerExecutor) -> str:
    lines = [f"  {executor.training_note()}", "  task images:"]
    for task in executor.tasks.runs:
        status = "ok" if task.exit_code == 0 and not task.missing_outputs else f"FAILED (exit {task.exit_code})"
        lines.append(f"    {task.task:18s} {task.image} ({task.image_id})  {task.seconds:7.1f} s  {status}")
    return "\n".join(lines)


# ---------------------------------------------------------------- same answer as run-local
# Parameters that must match for a subprocess run and a container run to be compared.
COMPARED_PARAMS = (
    "data_source",
    "seed",
    "val_fraction",
    "frozen_epochs",
    "finetune_epochs",
    "batch_size",
    "max_train_samples",
    "weights",
    "backbone",
    "frozen_lr",
    "finetune_lr",
    "preset",
)


def fingerprint(run_dir: Path) -> dict:
    """What two runs of the same parameters must share: the dataset (checksum, counts),
    the split (the whole split file) and every number in metrics.json, flattened."""
    dataset = json.loads((run_dir / "ingest" / "dataset").read_text())
    manifest = dataset.get("manifest", {})
    split = json.loads((run_dir / "split-and-weight" / "split").read_text())
    metrics = json.loads((run_dir / "evaluate" / "evaluation" / "metrics.json").read_text())
    return {
        "dataset": {
            "uri": dataset.get("uri"),
            "sha256": manifest.get("source_sha256"),
            "counts": manifest.get("counts"),
        },
        "split": split,
        "metrics": dict(_leaves(metrics)),
    }


def _leaves(value, path: str = ""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _leaves(item, f"{path}[{i}]")
    else:
        yield path, value


def differences(a: dict, b: dict, tolerance: float = METRIC_TOLERANCE) -> list[str]:
    """Where two fingerprints disagree: dataset and split exactly, numbers to ``tolerance``."""
    found = [f"{key} differs" for key in ("dataset", "split") if a[key] != b[key]]
    m1, m2 = a["metrics"], b["metrics"]
    for name in sorted(set(m1) | set(m2)):
        v1, v2 = m1.get(name), m2.get(name)
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (v1, v2))
        if (abs(v1 - v2) > tolerance) if numbers else v1 != v2:
            found.append(f"metrics.json {name}: {v1} vs {v2}")
    return found


def latest_subprocess_run(local_dir: Path, run_dir: Path) -> Path | None:
    """The latest `make run-local` run in runs.json with the same parameters as ``run_dir``."""
    from fer_pipeline import runs

    records = runs.RunIndex(local_dir / runs.INDEX_FILE).records()
    mine = next((r for r in records if r.get("run_id") == run_dir.name), {})
    params = mine.get("params", {})
    peers = [
        r
        for r in records
        if r.get("kind") == "kfp-local"
        and r.get("run_id") != run_dir.name
        and all(r.get("params", {}).get(k) == params.get(k) for k in COMPARED_PARAMS)
    ]
    return run_dir.parent / peers[-1]["run_id"] if mine and peers else None


def compare_runs(subprocess_dir: Path, container_dir: Path) -> tuple[bool, str]:
    """(agree, what to print) for a subprocess and a container run of the same parameters."""
    found = differences(fingerprint(subprocess_dir), fingerprint(container_dir))
    if found:
        return False, f"  compared:        DIFFERS from run-local run {subprocess_dir.name}:\n    " + "\n    ".join(
            found[:20]
        )
    return True, (
        f"  compared:        same dataset checksum, split and metrics (to {METRIC_TOLERANCE:g}) as "
        f"run-local run {subprocess_dir.name}"
    )


def parse_args(argv: list[str] | None) -> tuple[run_local.LocalRun, argparse.Namespace]:
    parser = OneLineParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[run_local.build_parser(add_help=False)],
    )
    parser.add_argument("--train-image", default=os.environ.get("TRAIN_IMAGE") or "auto", help="auto|cpu|gpu")
    parser.add_argument("--engine", default="", help="docker|podman (default: docker if its daemon answers)")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="then run the same pipeline with kfp.local's subprocess runner and compare the two",
    )
    args = parser.parse_args(argv)
    return run_local.local_run(args), args


def main(argv: list[str] | None = None) -> int:
    run, own = parse_args(argv)
    run_local.check_parameters(run)
    run_local.check_data(run)
    try:
        executor = prepare(run, own.train_image, own.engine)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    code, run_dir = run_local.execute(run, executor, how="kfp.local's DockerRunner (each task in its image)")
    print(task_table(executor))
    if code or run_dir is None:
        return code or 1
    if own.compare:
        print("\nThe same pipeline with kfp.local's subprocess runner, to compare:")
        code, subprocess_dir = run_local.execute(run)
        if code or subprocess_dir is None:
            return code or 1
    else:
        subprocess_dir = latest_subprocess_run(run.local_dir, run_dir)
    if subprocess_dir is None:
        print("  compared:        no `make run-local` run with the same parameters yet (COMPARE=1 runs one)")
        return 0
    agree, message = compare_runs(subprocess_dir, run_dir)
    print(message)
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
