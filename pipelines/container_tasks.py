"""Run each kfp.local task in its image, and trust nothing DockerRunner cannot see.

kfp 2.17's DockerRunner starts every container with a hard-coded ``auto_remove=True``
and, when the container is gone before it asks for the exit code, assumes success
(kubeflow/pipelines#13332); Podman answers 500 rather than 404 there, so DockerRunner
raises instead. `TaskContainers.installed()` replaces the one function that starts the
container for the duration of a run: it waits for the exit code, then removes the
container itself, prints the image each task ran in, and fails a task that exited 0
without writing its outputs.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Output types the executor records in executor_output.json instead of writing a file.
METADATA_ONLY_TYPES = {"system.Metrics", "system.ClassificationMetrics", "system.SlicedClassificationMetrics"}


@dataclass(frozen=True)
class TaskRun:
    """One task container: which image (tag and id) and how it ended."""

    task: str
    image: str
    image_id: str
    exit_code: int
    seconds: float
    missing_outputs: tuple[str, ...] = ()


def executor_input(command: list[str]) -> dict[str, Any]:
    """The ``--executor_input`` JSON kfp.local put in a task's command ({} if absent)."""
    for flag, value in zip(command, command[1:]):
        if flag == "--executor_input":
            return json.loads(value)
    return {}


def task_name(command: list[str]) -> str:
    """The component function the command runs (``--function_to_execute``)."""
    for flag, value in zip(command, command[1:]):
        if flag == "--function_to_execute":
            return value
    return "task"


def missing_outputs(spec: dict[str, Any]) -> list[str]:
    """Outputs a finished task should have left on the mounted pipeline root but did not:
    the executor's output file and every file-backed output artifact."""
    outputs = spec.get("outputs", {})
    missing = []
    output_file = outputs.get("outputFile")
    if output_file and not Path(output_file).exists():
        missing.append(f"executor output {output_file}")
    for name, entry in outputs.get("artifacts", {}).items():
        for artifact in entry.get("artifacts", []):
            uri = artifact.get("uri", "")
            schema = artifact.get("type", {}).get("schemaTitle", "")
            if schema in METADATA_ONLY_TYPES or not uri.startswith("/"):
                continue
            if not Path(uri).exists():
                missing.append(f"artifact {name} ({uri})")
    return missing


@dataclass
class TaskContainers:
    """What each task container gets beyond DockerRunner's own arguments.

    extra_volumes: host paths mounted at the same path (the data source, the local
        registry), ``{host: {"bind": path, "mode": "ro"|"rw"}}``.
    gpu_images: images whose containers get every GPU (training on a GPU host).
    """

    extra_volumes: dict[str, dict[str, str]] = field(default_factory=dict)
    gpu_images: frozenset[str] = frozenset()
    runs: list[TaskRun] = field(default_factory=list)

    def run_container(self, client, image: str, command: list[str], volumes: dict, **run_args) -> int:
        """Drop-in for kfp.local.docker_task_handler.run_docker_container."""
        import time

        import docker

        try:
            found = client.images.get(image)
        except docker.errors.ImageNotFound:
            print(f"Image {image} is not in the local engine; `make run-containers` builds it.")
            return 125
        name = task_name(command)
        print(f"Task image: {name} runs in {image} ({found.short_id.removeprefix('sha256:')})")
        if image in self.gpu_images:
            run_args.setdefault("device_requests", [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])])
        started = time.monotonic()
        container = client.containers.run(
            image=image,
            command=command,
            detach=True,
            stdout=True,
            stderr=True,
            volumes={**volumes, **self.extra_volumes},
            **run_args,
        )
        try:
            for chunk in container.logs(stream=True, follow=True):
                print(chunk.decode(errors="replace"), end="")
            exit_code = int(container.wait()["StatusCode"])
        finally:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
        missing = tuple(missing_outputs(executor_input(command))) if exit_code == 0 else ()
        self.runs.append(
            TaskRun(
                name,
                image,
                found.short_id.removeprefix("sha256:"),
                exit_code,
                round(time.monotonic() - started, 1),
                missing,
            )
        )
        if missing:
            print(f"Task {name} exited 0 but did not write: {', '.join(missing)}")
            return 1
        return exit_code

    @contextlib.contextmanager
    def installed(self) -> Iterator[TaskContainers]:
        """Use `run_container` for every DockerRunner task started inside the block."""
        from kfp.local import docker_task_handler

        original = docker_task_handler.run_docker_container
        docker_task_handler.run_docker_container = self.run_container
        try:
            yield self
        finally:
            docker_task_handler.run_docker_container = original
