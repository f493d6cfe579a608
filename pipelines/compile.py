"""Compile the pipeline for both targets and point it at one pair of images.

    python -m pipelines.compile --image REG/fer-pipeline-cpu:TAG --gpu-image REG/fer-pipeline-gpu:TAG

writes build/pipeline.yaml (Vertex AI: one YAML document) and build/pipeline-kfp.yaml
(KFP on kind/GKE: the pipeline plus the kfp-kubernetes platform spec).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from kfp import compiler

from components.images import CPU_IMAGE, GPU_IMAGE
from pipelines.training import GpuPool, make_pipeline

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


def compile_target(target: str, out_path: Path, *, image: str, gpu_image: str, commit: str, pool: GpuPool = GpuPool()) -> Path:
    """Compile one target to ``out_path`` with the given images and commit label."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "pipeline.yaml"
        compiler.Compiler().compile(make_pipeline(target, pool), str(raw), pipeline_parameters={"commit": commit})
        documents = list(yaml.safe_load_all(raw.read_text()))
    _set_images(documents, image, gpu_image)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return out_path


def compile_pipelines(out_dir: Path, image: str, gpu_image: str, commit: str | None = None) -> tuple[Path, Path]:
    """Write the Vertex and the KFP target into ``out_dir``; returns both paths."""
    commit = commit or current_commit()
    vertex = compile_target("vertex", Path(out_dir) / VERTEX_FILE, image=image, gpu_image=gpu_image, commit=commit)
    kfp = compile_target("kfp", Path(out_dir) / KFP_FILE, image=image, gpu_image=gpu_image, commit=commit)
    return vertex, kfp


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", required=True, help="image for ingest, split, evaluation, registration")
    parser.add_argument("--gpu-image", required=True, help="image for both training phases")
    parser.add_argument("--out-dir", type=Path, default=Path("build"))
    parser.add_argument("--commit", default=None, help="source commit recorded on models (default: git HEAD)")
    args = parser.parse_args(argv)
    for path in compile_pipelines(args.out_dir, args.image, args.gpu_image, args.commit):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
