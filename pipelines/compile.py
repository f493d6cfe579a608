"""Compile the pipeline for both targets and point it at one pair of images.

    python -m pipelines.compile --image REG/fer-pipeline-cpu:TAG --gpu-image REG/fer-pipeline-gpu:TAG \
        [--kfp-profile kind|gke] [--gpu-count N] [--frozen-on-gpu]

writes build/pipeline.yaml (Vertex AI: one YAML document) and build/pipeline-kfp.yaml
(KFP on kind/GKE: the pipeline plus the kfp-kubernetes platform spec). The training
steps' CPU, memory and GPU requests come from pipelines.resources' profiles.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from kfp import compiler

from components.images import CPU_IMAGE, GPU_IMAGE
from fer_pipeline.cli_parser import OneLineParser
from fer_pipeline.cli_paths import output_dir, output_file
from pipelines.resources import KFP_PROFILES, MAX_GPUS, Profile, profile
from pipelines.training import make_pipeline

VERTEX_FILE = "pipeline.yaml"
KFP_FILE = "pipeline-kfp.yaml"


def current_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _set_images(documents: list[dict], image: str, gpu_image: str) -> None:
    """Replace the components' placeholder images by the built tags."""
    executors = documents[0]["deploymentSpec"]["executors"]
    for executor in executors.values():
        container = executor["container"]
        container["image"] = {CPU_IMAGE: image, GPU_IMAGE: gpu_image}.get(container["image"], container["image"])


def render_target(target: str, *, image: str, gpu_image: str, commit: str, placement: Profile | None = None) -> str:
    """One target's compiled YAML with the given images, commit label and profile."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "pipeline.yaml"
        defaults = {"commit": commit}
        if placement is not None and placement.storage is not None:
            defaults |= placement.storage.parameter_defaults()
        compiler.Compiler().compile(make_pipeline(target, placement), str(raw), pipeline_parameters=defaults)
        documents = list(yaml.safe_load_all(raw.read_text()))
    _set_images(documents, image, gpu_image)
    return yaml.safe_dump_all(documents, sort_keys=False)


def write_together(texts: dict[Path, str]) -> None:
    """Write each file under a temporary name beside it, then rename them all: a failure while
    writing (a full disk, a folder in a file's place) leaves the old files as they were. Only a
    rename failing after another succeeded, which writing both first makes unlikely, would
    leave one new file beside an old one."""
    staged: list[tuple[Path, Path]] = []
    try:
        for path, text in texts.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # open(): the umask's mode, not mkstemp's 0600
            staged.append((tmp, path))
            tmp.write_text(text, encoding="utf-8")
        for tmp, path in staged:
            os.replace(tmp, path)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)


def compile_target(
    target: str, out_path: Path, *, image: str, gpu_image: str, commit: str, placement: Profile | None = None
) -> Path:
    """Compile one target to ``out_path`` with the given images, commit label and profile."""
    text = render_target(target, image=image, gpu_image=gpu_image, commit=commit, placement=placement)
    write_together({out_path: text})
    return out_path


def compile_pipelines(
    out_dir: Path,
    image: str,
    gpu_image: str,
    commit: str | None = None,
    *,
    kfp_profile: str = "kind",
    gpu_count: int | None = None,
    frozen_on_gpu: bool | None = None,
) -> tuple[Path, Path]:
    """Write the Vertex and the KFP target into ``out_dir``; returns both paths.
    ``gpu_count`` (nvidia.com/gpu per GPU step) applies to the KFP file; on Vertex the
    count is the gpu_count pipeline parameter. ``frozen_on_gpu`` applies to both."""
    commit = commit or current_commit()
    vertex_profile = profile("vertex", frozen_on_gpu=frozen_on_gpu)
    kfp_placement = profile(kfp_profile, gpu_count=gpu_count, frozen_on_gpu=frozen_on_gpu)
    images = {"image": image, "gpu_image": gpu_image, "commit": commit}
    vertex, kfp = Path(out_dir) / VERTEX_FILE, Path(out_dir) / KFP_FILE
    # both compiled before either is written: the two files always name the same images
    texts = {
        vertex: render_target("vertex", placement=vertex_profile, **images),
        kfp: render_target("kfp", placement=kfp_placement, **images),
    }
    write_together(texts)
    return vertex, kfp


# An image reference as Docker and Kubernetes parse it: [host[:port]/]path[:tag][@digest],
# path components in lower case (distribution/reference's grammar, condensed).
_DOMAIN = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]+)?"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_REFERENCE = re.compile(
    rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::\w[\w.-]{{0,127}})?(?:@[A-Za-z][A-Za-z0-9]*:[0-9a-fA-F]{{32,}})?"
)


def image_reference(value: str) -> str:
    """An image name a cluster can pull (IMAGE=, GPU_IMAGE=, or REGISTRY= and TAG= that make them)."""
    if not IMAGE_REFERENCE.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an image reference such as europe-west4-docker.pkg.dev/PROJECT/REPO/fer-pipeline-cpu:TAG "
            "(lower-case path, no spaces or quotes); check IMAGE=, REGISTRY= and TAG="
        )
    return value


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m pipelines.compile", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--image", required=True, type=image_reference, help="image for ingest, split, evaluation, registration"
    )
    parser.add_argument("--gpu-image", required=True, type=image_reference, help="image for both training phases")
    parser.add_argument(
        "--out-dir", type=output_dir, default=Path("build"), help="folder for both files (made if absent)"
    )
    parser.add_argument("--commit", default=None, help="source commit recorded on models (default: git HEAD)")
    parser.add_argument(
        "--kfp-profile",
        default="kind",
        choices=KFP_PROFILES,
        help="resources of the KFP file: kind (a laptop) or gke (a GPU node pool); pipelines/resources.py",
    )
    parser.add_argument(
        "--gpu-count",
        type=int,
        default=None,
        help="nvidia.com/gpu per GPU step in the KFP file (default: the profile's, 1)",
    )
    parser.add_argument(
        "--frozen-on-gpu", action="store_true", default=None, help="run frozen training on the GPU too (both files)"
    )
    args = parser.parse_args(argv)
    if args.gpu_count is not None and not 0 <= args.gpu_count <= MAX_GPUS:
        parser.error(f"--gpu-count (GPU_COUNT=) must be from 0 to {MAX_GPUS} GPUs per step, got {args.gpu_count}")
    for name in (VERTEX_FILE, KFP_FILE):  # each file must be writable too: not a folder, not read-only
        try:
            output_file(str(args.out_dir / name))
        except argparse.ArgumentTypeError as exc:
            parser.error(f"--out-dir: {exc}")
    paths = compile_pipelines(
        args.out_dir,
        args.image,
        args.gpu_image,
        args.commit,
        kfp_profile=args.kfp_profile,
        gpu_count=args.gpu_count,
        frozen_on_gpu=args.frozen_on_gpu,
    )
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
