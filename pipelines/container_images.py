"""The images a container run uses: tagged by what they are built from, built when missing.

A tag is the digest of the build context (the files .dockerignore lets in, the
Dockerfile, the target and the base image), so an image is stale exactly when one of
those changed; a rebuild goes through containers/build.sh and reuses the engine's layer
cache. Where no registry serves the Dockerfile's base image (machines without internet
access), a local Debian base is used or made with containers/base-image-local.sh.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pipelines.container_engine import ROOT, Engine, EngineError

DOCKERFILE = ROOT / "containers" / "Dockerfile"
LOCAL_BASE_IMAGE = "localhost/fer-base:bookworm"
TARGETS = ("cpu", "gpu")


@dataclass(frozen=True)
class Image:
    target: str  # "cpu" or "gpu"
    ref: str  # REGISTRY/fer-pipeline-TARGET:ctx-DIGEST


def build_context_files(root: Path = ROOT) -> list[Path]:
    """The files the image build can see: .dockerignore starts from deny-all and lets
    in the paths listed with ``!``; later exclusions (``src/**/__pycache__``) take away
    again, a folder's whole contents included, as Docker reads the file."""
    lines = [line.strip() for line in (root / ".dockerignore").read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#") and line != "*"]
    files: set[Path] = set()
    for pattern in patterns:
        if pattern.startswith("!"):
            target = root / pattern[1:]
            files |= (
                {p for p in target.rglob("*") if p.is_file()}
                if target.is_dir()
                else ({target} if target.is_file() else set())
            )
        else:
            excluded = ignore_regex(pattern)
            files = {p for p in files if not excluded.match(p.relative_to(root).as_posix())}
    return sorted(files | {root / "containers" / "Dockerfile"})


def ignore_regex(pattern: str) -> re.Pattern:
    """A .dockerignore pattern as a regex over relative POSIX paths: ``**`` any number of
    folders, ``*`` and ``?`` within one name; a match also covers everything below it."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] in "*?":
            out, i = out + ("[^/]*" if pattern[i] == "*" else "[^/]"), i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out.rstrip("/") + "(?:/.*)?$")


def context_digest(target: str, base_image: str, root: Path = ROOT) -> str:
    """12 hex digits that change whenever anything the image is built from changes."""
    digest = hashlib.sha256(f"{target}\0{base_image}\0".encode())
    for path in build_context_files(root):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def default_base_image(dockerfile: Path = DOCKERFILE) -> str:
    match = re.search(r"^ARG BASE_IMAGE=(\S+)", dockerfile.read_text(), re.M)
    if not match:
        raise EngineError(f"{dockerfile} has no default for ARG BASE_IMAGE")
    return match.group(1)


def _engine(engine: Engine, *args: str) -> bool:
    """Whether ``ENGINE ARGS...`` succeeds (its output is not shown)."""
    return subprocess.run([*engine.cli, *args], capture_output=True, check=False).returncode == 0


def image_exists(engine: Engine, ref: str) -> bool:
    return _engine(engine, "image", "inspect", ref)


def image_id(engine: Engine, ref: str) -> str:
    out = subprocess.run(
        [*engine.cli, "image", "inspect", "--format", "{{.Id}}", ref], capture_output=True, text=True, check=False
    )
    return out.stdout.strip().removeprefix("sha256:")[:12]


def resolve_base_image(engine: Engine, requested: str = "") -> str:
    """BASE_IMAGE if given; else the Dockerfile's default when present or pullable; else
    the local Debian base (made with debootstrap when absent)."""
    if requested:
        return requested
    default = default_base_image()
    if image_exists(engine, default) or _engine(engine, "pull", "--quiet", default):
        return default
    print(f"No registry serves {default}: building on the local Debian base {LOCAL_BASE_IMAGE}.")
    if not image_exists(engine, LOCAL_BASE_IMAGE):
        print(f"Making {LOCAL_BASE_IMAGE} with debootstrap (about a minute; make base-image-local).")
        env = {**os.environ, "ENGINE": engine.name}
        if subprocess.run(
            [str(ROOT / "containers" / "base-image-local.sh"), LOCAL_BASE_IMAGE], env=env, check=False
        ).returncode:
            raise EngineError(
                f"could not make {LOCAL_BASE_IMAGE}; see the output above, or set BASE_IMAGE= to an image the engine has."
            )
    return LOCAL_BASE_IMAGE


def ensure_image(engine: Engine, target: str, registry: str, base_image: str, log: Path) -> Image:
    """The image for ``target`` built from the current tree, built now if missing (the
    build's output goes to ``log``)."""
    if target not in TARGETS:
        raise EngineError(f"image target must be one of {TARGETS}, got {target!r}")
    ref = f"{registry}/fer-pipeline-{target}:ctx-{context_digest(target, base_image)}"
    if image_exists(engine, ref):
        return Image(target, ref)
    print(f"Building {ref}: no image of the current build context yet (a few minutes; log: {log})", flush=True)
    env = {**os.environ, "ENGINE": engine.name, "BASE_IMAGE": base_image}
    if target == "gpu":
        env.setdefault("GPU_BASE_IMAGE", base_image)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        result = subprocess.run(
            [str(ROOT / "containers" / "build.sh"), target, ref],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if result.returncode:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise EngineError(
            f"building the {target} image failed (exit {result.returncode}); the end of {log}:\n" + "\n".join(tail)
        )
    print(
        "  "
        + next(
            (line for line in reversed(log.read_text(errors="replace").splitlines()) if line.startswith("built ")),
            "built",
        )
    )
    removed = remove_older_contexts(engine, ref)
    if removed:
        print(f"  removed {len(removed)} image(s) of older build contexts: {', '.join(removed)}")
    return Image(target, ref)


def remove_older_contexts(engine: Engine, ref: str) -> list[str]:
    """Untag the images of the same target built from older contexts (never run again);
    the layers the new image shares with them stay in the cache."""
    repository, tag = ref.rsplit(":", 1)
    out = subprocess.run(
        [*engine.cli, "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True, check=False
    )
    older = []
    for name in out.stdout.split():
        other_repository, other_tag = name.rsplit(":", 1)
        # podman lists local names with a localhost/ prefix
        if (
            other_repository.removeprefix("localhost/") == repository
            and other_tag.startswith("ctx-")
            and other_tag != tag
        ):
            older.append(name)
    for name in older:
        subprocess.run([*engine.cli, "rmi", name], capture_output=True, check=False)
    return older


# KFP's launchers write under these (gs://, minio://, s3:// URIs); containers/install.sh
# makes them the image user's.
LAUNCHER_PATHS = ("/gcs", "/minio", "/s3")
PREFLIGHT = 'echo "$(id -u)"; for d in "$@"; do [ -d "$d" ] && [ -w "$d" ] || echo "not writable: $d"; done'


def check_user_and_paths(engine: Engine, ref: str) -> str:
    """Start ``ref`` once, offline, as the cloud would: it must run as a non-root user
    who can write KFP's launcher paths. Returns what to print; raises otherwise."""
    out = subprocess.run(
        [
            *engine.cli,
            "run",
            "--rm",
            "--network",
            "none",
            *engine.run_flags(),
            ref,
            "sh",
            "-c",
            PREFLIGHT,
            "sh",
            *LAUNCHER_PATHS,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = out.stdout.split()
    if out.returncode or not lines:
        raise EngineError(f"{ref} did not start (exit {out.returncode}): {out.stderr.strip()[-500:]}")
    uid, problems = lines[0], out.stdout.splitlines()[1:]
    if uid == "0":
        raise EngineError(f"{ref} runs as root; the images must run as their non-root user (USER 10001).")
    if problems:
        raise EngineError(
            f"{ref}: uid {uid} cannot write KFP's launcher paths ({'; '.join(problems)}); see containers/install.sh setup."
        )
    return f"runs as uid {uid}, can write {', '.join(LAUNCHER_PATHS)}"
