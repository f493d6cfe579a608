"""Fine-tuning on several machines: a Vertex AI custom job with one chief and N-1 workers.

The fine-tuning component calls ``run_fine_tune_job`` when the pipeline parameter
``finetune_replicas`` is above 1. Vertex starts every replica of the job's worker pools
with the same image and sets ``TF_CONFIG`` on each, so ``feed_tf.configure_devices``
picks ``tf.distribute.MultiWorkerMirroredStrategy`` (synchronous all-reduce across the
machines, and across each machine's GPUs). Each replica runs the CLI's ``fine-tune``
with the same flags; ``batch_size`` is per replica and the learning rate is scaled by
the number of replicas (``TrainConfig.scale_with_replicas``, ``trainer.scale_for_replicas``).

Paths: the KFP artifacts of a Vertex pipeline are ``/gcs/BUCKET/...`` paths, and Vertex
custom jobs mount Cloud Storage at ``/gcs/`` too, so the chief reads the dataset, the
split and the phase-1 model, and writes ``model.keras`` and ``history.json`` straight
into the component's output artifact. The workers train the same replicated model but
write their (identical) copy to a local scratch directory.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fer_pipeline.config import TrainConfig
from fer_pipeline.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_MACHINE_TYPE = "n1-standard-8"  # 8 vCPUs, 30 GB: room for tf.data beside one or more T4s
WORKER_SCRATCH = "/tmp/fer-finetune-worker"  # where non-chief replicas write their copy


@dataclass(frozen=True)
class MultiWorkerJob:
    """Where and on what the multi-replica fine-tuning job runs."""

    project: str
    location: str
    image: str  # the GPU training image (the one the pipeline's GPU steps use)
    staging_bucket: str  # gs:// prefix for the job's staging files
    replicas: int  # machines in all: 1 chief + (replicas - 1) workers
    machine_type: str = DEFAULT_MACHINE_TYPE
    accelerator_type: str = "NVIDIA_TESLA_T4"
    accelerator_count: int = 1  # GPUs per machine; MirroredStrategy spans them inside each replica
    display_name: str = "fer-finetune-multiworker"
    service_account: str = ""  # "" = the project's default compute service account

    def check(self) -> None:
        """Raise one ConfigError naming every missing or invalid setting."""
        missing = [name for name in ("project", "location", "image", "staging_bucket") if not getattr(self, name)]
        problems = [f"{', '.join(missing)} must be set"] if missing else []
        if self.replicas < 2:
            problems.append(f"replicas must be >= 2 for a multi-worker job, got {self.replicas}")
        if self.staging_bucket and not self.staging_bucket.startswith("gs://"):
            problems.append(f"staging_bucket must be a gs:// URI, got {self.staging_bucket!r}")
        if problems:
            raise ConfigError(
                "Multi-replica fine-tuning (finetune_replicas > 1) needs a Vertex custom job: "
                + "; ".join(problems)
                + ". Pass the pipeline parameters project, location, data_prefix and finetune_image "
                "(the GPU image tag that `make compile GPU_IMAGE=...` used), or finetune_replicas=1."
            )


def fine_tune_args(dataset: str, split: str, model: str, out_dir: str, cfg: TrainConfig) -> list[str]:
    """``fer-pipeline fine-tune`` arguments that rebuild ``cfg`` on a replica: every field
    that differs from its default becomes a flag."""
    args = ["fine-tune", str(dataset), "--split", str(split), "--model", str(model), "--out", str(out_dir)]
    defaults = TrainConfig()
    for field in dataclasses.fields(TrainConfig):
        value = getattr(cfg, field.name)
        if value == getattr(defaults, field.name):
            continue
        if isinstance(value, tuple):
            text = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        args += [f"--{field.name.replace('_', '-')}", text]
    return args


def worker_pool_specs(job: MultiWorkerJob, chief_args: list[str], worker_args: list[str]) -> list[dict[str, Any]]:
    """The CustomJob's two pools: the chief (pool 0, one replica) and the workers (pool 1)."""
    machine = {
        "machine_type": job.machine_type,
        "accelerator_type": job.accelerator_type,
        "accelerator_count": job.accelerator_count,
    }

    def pool(count: int, args: list[str]) -> dict[str, Any]:
        return {
            "machine_spec": dict(machine),
            "replica_count": count,
            "container_spec": {"image_uri": job.image, "command": ["fer-pipeline"], "args": list(args)},
        }

    return [pool(1, chief_args), pool(job.replicas - 1, worker_args)]


def run_fine_tune_job(
    job: MultiWorkerJob, *, dataset: str, split: str, model: str, out_dir: str, cfg: TrainConfig
) -> dict[str, Any]:
    """Run fine-tuning as a Vertex AI custom job on ``job.replicas`` machines and wait for it.

    Args:
        job: Project, region, image, machines.
        dataset: The canonical dataset (a ``/gcs/...`` path or ``gs://`` URI, or a pointer file).
        split: The split JSON.
        model: The phase-1 ``model.keras``.
        out_dir: Where the chief writes ``model.keras`` and ``history.json``.
        cfg: The training config; each replica gets it as CLI flags.

    Returns:
        ``{"resource_name", "state", "history"}``: the job, its final state, and the
        chief's history.json record (empty if the chief wrote none).

    Raises:
        ConfigError: A setting is missing or invalid.
        RuntimeError: The job did not succeed (from the Vertex SDK).
    """
    from google.cloud import aiplatform

    job.check()
    worker_cfg = dataclasses.replace(cfg, backup_dir="")  # only the chief backs up (and resumes)
    specs = worker_pool_specs(
        job,
        fine_tune_args(dataset, split, model, out_dir, cfg),
        fine_tune_args(dataset, split, model, WORKER_SCRATCH, worker_cfg),
    )
    custom_job = aiplatform.CustomJob(
        display_name=job.display_name,
        worker_pool_specs=specs,
        project=job.project,
        location=job.location,
        staging_bucket=job.staging_bucket,
    )
    log.info(
        "fine-tune: custom job on %d replicas of %s + %dx %s",
        job.replicas,
        job.machine_type,
        job.accelerator_count,
        job.accelerator_type,
    )
    custom_job.run(sync=True, service_account=job.service_account or None)
    history_path = Path(out_dir) / "history.json"
    history = json.loads(history_path.read_text()) if history_path.is_file() else {}
    return {"resource_name": custom_job.resource_name, "state": str(custom_job.state), "history": history}


def phase_result(outcome: dict[str, Any]):
    """What ``component_io.phase_outputs`` reads of a phase (history, epochs run, best
    epoch, seconds), rebuilt from the chief's history.json in ``run_fine_tune_job``'s result."""
    from types import SimpleNamespace

    record = outcome.get("history") or {}
    return SimpleNamespace(
        history=record.get("history", {}),
        epochs_run=int(record.get("epochs_run", 0)),
        best_epoch=int(record.get("best_epoch", 0)),
        seconds=float(record.get("seconds", 0.0)),
    )
