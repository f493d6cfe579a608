"""Multi-replica fine-tuning on Vertex: the exact CustomJob request, with the client mocked."""

from __future__ import annotations

import json
from unittest import mock

import pytest

aiplatform = pytest.importorskip("google.cloud.aiplatform")

from fer_pipeline.cli import build_parser, recipe_from_args  # noqa: E402
from fer_pipeline.cloud import vertex_training  # noqa: E402
from fer_pipeline.cloud.vertex_training import (  # noqa: E402
    WORKER_SCRATCH,
    MultiWorkerJob,
    fine_tune_args,
    phase_result,
    run_fine_tune_job,
)
from fer_pipeline.config import TrainConfig  # noqa: E402
from fer_pipeline.errors import ConfigError  # noqa: E402

JOB = MultiWorkerJob(
    project="my-project",
    location="europe-west4",
    image="europe-docker.pkg.dev/p/r/fer-pipeline-gpu:abc",
    staging_bucket="gs://bucket/fer",
    replicas=3,
    accelerator_type="NVIDIA_L4",
    accelerator_count=2,
)
PATHS = dict(dataset="/gcs/b/run/dataset", split="/gcs/b/run/split", model="/gcs/b/run/frozen/model.keras")
CFG = TrainConfig(
    batch_size=32,
    finetune_epochs=4,
    finetune_lr=2e-5,
    dense_units=(128, 64),
    jit_compile=True,
    backup_dir="/gcs/b/run/finetune-backup",
)


@pytest.fixture()
def custom_job(monkeypatch):
    job_class = mock.create_autospec(aiplatform.CustomJob)
    job_class.return_value.resource_name = "projects/1/locations/europe-west4/customJobs/42"
    job_class.return_value.state = "JOB_STATE_SUCCEEDED"
    monkeypatch.setattr(aiplatform, "CustomJob", job_class)
    return job_class


def test_job_has_a_chief_pool_and_a_worker_pool_running_the_cli(custom_job, tmp_path):
    out = tmp_path / "finetune"
    out.mkdir()
    (out / "history.json").write_text(
        json.dumps({"epochs_run": 3, "best_epoch": 2, "seconds": 90.5, "history": {"val_loss": [1.0, 0.9, 0.95]}})
    )

    outcome = run_fine_tune_job(JOB, out_dir=str(out), cfg=CFG, **PATHS)

    kwargs = custom_job.call_args.kwargs
    assert kwargs["project"] == "my-project" and kwargs["location"] == "europe-west4"
    assert kwargs["staging_bucket"] == "gs://bucket/fer"
    chief, workers = kwargs["worker_pool_specs"]
    machine = {"machine_type": "n1-standard-8", "accelerator_type": "NVIDIA_L4", "accelerator_count": 2}
    assert chief["machine_spec"] == workers["machine_spec"] == machine
    assert (chief["replica_count"], workers["replica_count"]) == (1, 2)
    for pool in (chief, workers):
        assert pool["container_spec"]["image_uri"] == JOB.image
        assert pool["container_spec"]["command"] == ["fer-pipeline"]
    chief_args, worker_args = chief["container_spec"]["args"], workers["container_spec"]["args"]
    assert chief_args[:8] == [
        "fine-tune",
        PATHS["dataset"],
        "--split",
        PATHS["split"],
        "--model",
        PATHS["model"],
        "--out",
        str(out),
    ]
    assert worker_args[7] == WORKER_SCRATCH  # workers keep their identical copy off the output artifact
    assert "--backup-dir" in chief_args and "--backup-dir" not in worker_args
    custom_job.return_value.run.assert_called_once_with(sync=True, service_account=None)
    assert outcome["state"] == "JOB_STATE_SUCCEEDED"
    result = phase_result(outcome)
    assert (result.epochs_run, result.best_epoch, result.seconds) == (3, 2, 90.5)


def test_replicas_rebuild_the_same_config_from_the_cli_flags():
    args = fine_tune_args(out_dir="/tmp/out", cfg=CFG, **PATHS)
    parsed = build_parser().parse_args(args)
    assert recipe_from_args(parsed).train == CFG


def test_missing_settings_are_one_error_naming_each(custom_job):
    bad = MultiWorkerJob(project="", location="europe-west4", image="", staging_bucket="bucket", replicas=1)
    with pytest.raises(
        ConfigError, match=r"project, image must be set.*replicas must be >= 2.*gs:// URI.*finetune_image"
    ):
        run_fine_tune_job(bad, out_dir="/tmp/out", cfg=CFG, **PATHS)
    custom_job.assert_not_called()


def test_pipeline_passes_finetune_replicas_to_the_fine_tuning_step(tmp_path):
    import yaml
    from kfp import compiler

    from pipelines.training import make_pipeline

    path = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(make_pipeline("vertex"), str(path))
    spec = yaml.safe_load(path.read_text())
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["finetune_replicas"]["defaultValue"] == 1
    assert parameters["recipe"]["defaultValue"] == {} and "jit_compile" not in parameters  # a recipe field
    task = spec["root"]["dag"]["tasks"]["fine-tune"]["inputs"]["parameters"]
    assert task["replicas"]["componentInputParameter"] == "finetune_replicas"
    assert task["replica_image"]["componentInputParameter"] == "finetune_image"
    assert vertex_training.DEFAULT_MACHINE_TYPE == "n1-standard-8"
