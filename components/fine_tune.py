"""Component 4: phase 2, the backbone unfrozen and fine-tuned on a GPU node."""

from kfp import dsl

from components.images import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def fine_tune(
    dataset: dsl.Input[dsl.Dataset],
    split: dsl.Input[dsl.Dataset],
    frozen_model: dsl.Input[dsl.Model],
    model: dsl.Output[dsl.Model],
    history: dsl.Output[dsl.Artifact],
    metrics: dsl.Output[dsl.Metrics],
    preset: str = "",
    recipe: dict = {},
    tensorboard: str = "",
    experiment: str = "",
    replicas: int = 1,
    replica_image: str = "",
    project: str = "",
    location: str = "",
    staging_uri: str = "",
    gpu_type: str = "NVIDIA_TESLA_T4",
    gpu_count: int = 1,
):
    """Unfreeze the backbone (BatchNorm stays in inference mode) and fine-tune at a low rate.

    Args:
        dataset: canonical dataset pointer.
        split: train/validation split with class weights.
        frozen_model: phase-1 model directory.
        model: Output. Directory with the fine-tuned model.keras.
        history: Output. history.json of this phase.
        metrics: Output. Best validation loss and accuracy, epochs run, seconds.
        preset: named recipe (fer_pipeline.presets; "" = none).
        recipe: TrainConfig field overrides of the preset (README's recipe table); with
            tta the saved model averages over the test-time views.
        tensorboard: Vertex AI TensorBoard (projects/P/locations/L/tensorboards/ID) to stream the
            TensorBoard logs (written to model/tensorboard) to while training; "" = none.
        experiment: TensorBoard experiment to upload into (the Vertex experiment); "" = fer-pipeline.
        replicas: machines to fine-tune on; above 1 this step runs a Vertex AI custom job with
            MultiWorkerMirroredStrategy (batch_size per replica, learning rate x replicas) and waits.
        replica_image: the GPU training image the custom job's replicas run (replicas > 1).
        project: Google Cloud project of the custom job (replicas > 1).
        location: its Vertex region (replicas > 1).
        staging_uri: gs:// prefix for its staging files (replicas > 1).
        gpu_type: accelerator of each replica (replicas > 1).
        gpu_count: accelerators per replica (replicas > 1).
    """
    from fer_pipeline.cloud.experiments import vertex_upload
    from fer_pipeline.component_io import model_file, phase_config, phase_outputs, setup_logging
    from fer_pipeline.runs import pipeline_run_name
    from fer_pipeline.steps import fine_tune_step
    from fer_pipeline.tensorboard import log_dir

    setup_logging()
    cfg = phase_config(preset, recipe, model.path)
    if replicas > 1:
        from fer_pipeline.cloud.vertex_training import MultiWorkerJob, phase_result, run_fine_tune_job

        job = MultiWorkerJob(
            project=project,
            location=location,
            image=replica_image,
            staging_bucket=staging_uri,
            replicas=replicas,
            accelerator_type=gpu_type,
            accelerator_count=gpu_count,
        )
        outcome = run_fine_tune_job(
            job,
            dataset=dataset.path,
            split=split.path,
            model=str(model_file(frozen_model.path)),
            out_dir=model.path,
            cfg=cfg,
        )
        phase_outputs(phase_result(outcome), model, history.path, metrics)
        return
    prefix = f"{pipeline_run_name(model.path)}-finetune"
    with vertex_upload(tensorboard, log_dir(model.path), experiment=experiment or "fer-pipeline", run_prefix=prefix):
        result = fine_tune_step(dataset.path, split.path, model_file(frozen_model.path), model.path, cfg)
    phase_outputs(result, model, history.path, metrics)
