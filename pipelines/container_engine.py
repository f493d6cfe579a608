"""The container engine that `make run-containers` drives: Docker when its daemon answers,
otherwise Podman through its Docker-compatible API socket (`podman system service`).

kfp.local's DockerRunner speaks docker-py, which reads DOCKER_HOST
(kubeflow/pipelines#11865), so Podman is started on a private socket for the run and
stopped after it. The engine and its options come from containers/engine.sh, as for the
build scripts: Podman on hosts without systemd or cgroup delegation needs runc with
cgroupfs and bounded ulimits, which the task containers must get too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Prints the engine's command (ENGINE) and the options of `run` (RUN_OPTS) as the
# container scripts use them: one place decides the engine and its options.
ENGINE_SH = 'source containers/engine.sh >/dev/null && printf "%s\\n" "${ENGINE[@]}" --- "${RUN_OPTS[@]}"'


class EngineError(RuntimeError):
    """No usable container engine; the message says how to get one."""


@dataclass(frozen=True)
class Engine:
    """One engine: the CLI (for builds) and what docker-py needs to run containers."""

    name: str  # "docker" or "podman"
    cli: tuple[str, ...]  # the command with its global options
    ulimits: dict[str, int] = field(default_factory=dict)

    def run_flags(self) -> list[str]:
        """The same limits as `run_args`, as command-line flags of `ENGINE run`."""
        return [f"--ulimit={name}={value}:{value}" for name, value in self.ulimits.items()]

    def run_args(self) -> dict:
        """docker-py `containers.run` arguments every task container gets on this engine."""
        from docker.types import Ulimit

        return {"ulimits": [Ulimit(name=n, soft=v, hard=v) for n, v in self.ulimits.items()]} if self.ulimits else {}


def _answers(command: list[str]) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=20, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def detect_engine(wanted: str = "") -> Engine:
    """The engine containers/engine.sh picks: ENGINE=docker|podman forces one; otherwise
    Docker if its daemon answers, else Podman (with its runtime, cgroup manager and
    ulimits, which docker-py must pass on too)."""
    env = {**os.environ, **({"ENGINE": wanted} if wanted else {})}
    bash = shutil.which("bash") or "/bin/bash"
    out = subprocess.run([bash, "-c", ENGINE_SH], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        hint = (
            " (Debian: apt-get install podman runc; `make container-engine` does it as root)"
            if "no container engine" in out.stderr
            else ""
        )
        raise EngineError(out.stderr.strip().splitlines()[-1] + hint)
    cli, _, run_opts = out.stdout.partition("\n---\n")
    engine = Engine(cli.splitlines()[0], tuple(cli.splitlines()), _ulimits(run_opts.split()))
    if engine.name == "docker" and not _answers(["docker", "info"]):
        raise EngineError(
            "ENGINE=docker but no Docker daemon answers `docker info`; start it, or leave ENGINE empty to use Podman."
        )
    return engine


def _ulimits(run_opts: list[str]) -> dict[str, int]:
    """``--ulimit nofile=1024:1024`` pairs of RUN_OPTS as {name: limit} (soft = hard here)."""
    limits = {}
    for flag, value in zip(run_opts, run_opts[1:]):
        if flag == "--ulimit":
            name, _, soft_hard = value.partition("=")
            limits[name] = int(soft_hard.split(":")[0])
    return limits


@contextlib.contextmanager
def docker_api(engine: Engine) -> Iterator[str]:
    """Point DOCKER_HOST at the engine for the duration: Docker's own socket, or a Podman
    API service on a private socket (started here, stopped on exit). Yields DOCKER_HOST."""
    if engine.name == "docker":
        yield os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        return
    with tempfile.TemporaryDirectory(prefix="fer-podman-") as tmp:
        socket = Path(tmp) / "podman.sock"
        url = f"unix://{socket}"
        log = open(Path(tmp) / "service.log", "w+b")
        # --time=0: the service never exits on its own while the run is idle between tasks
        service = subprocess.Popen([*engine.cli, "system", "service", "--time=0", url], stdout=log, stderr=log)
        previous = os.environ.get("DOCKER_HOST")
        try:
            _wait_for_socket(service, socket, log)
            os.environ["DOCKER_HOST"] = url
            yield url
        finally:
            if previous is None:
                os.environ.pop("DOCKER_HOST", None)
            else:
                os.environ["DOCKER_HOST"] = previous
            service.terminate()
            try:
                service.wait(timeout=10)
            except subprocess.TimeoutExpired:
                service.kill()
                service.wait()
            log.close()


def _wait_for_socket(service: subprocess.Popen, socket: Path, log, timeout: float = 30.0) -> None:
    import docker

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.poll() is not None:
            log.seek(0)
            raise EngineError(
                f"`podman system service` exited with {service.returncode}: {log.read().decode(errors='replace').strip()}"
            )
        if socket.exists():
            try:
                client = docker.DockerClient(base_url=f"unix://{socket}", timeout=10)
                client.ping()
                client.close()
                return
            except (docker.errors.DockerException, OSError):  # not listening yet (requests' errors are OSErrors)
                pass
        time.sleep(0.2)
    raise EngineError(f"Podman's API socket {socket} did not answer within {timeout:.0f} s.")


def gpu_visible() -> bool:
    """Whether this host has an NVIDIA GPU and driver that containers could be given."""
    return bool(shutil.which("nvidia-smi")) and _answers(["nvidia-smi", "-L"])
