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
    batch_size: int = 64,
    epochs: int = 10,
    learning_rate: float = 1e-5,
    unfreeze_from: str = "",
    weights: str = "imagenet",
    early_stopping_patience: int = 3,
    max_train_samples: int = 0,
    seed: int = 12,
    backbone: str = "densenet169",
    rotation: float = 0.0,
    zoom: float = 0.0,
    erasing: float = 0.0,
    label_smoothing: float = 0.0,
    class_weighting: bool = True,
    class_weight_power: float = 1.0,
    schedule: str = "plateau",
    tta: bool = False,
    tta_shift: int = 0,
    tensorboard: str = "",
    experiment: str = "",
    jit_compile: bool = False,
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
        batch_size: global batch size.
        epochs: maximum epochs (early stopping on validation loss).
        learning_rate: Adam learning rate, very low so pretrained features survive.
        unfreeze_from: backbone layer to unfreeze from ("" = the whole backbone).
        weights: the backbone's initial weights; with "none" BatchNorm trains too.
        early_stopping_patience: epochs without validation-loss improvement before stopping.
        max_train_samples: cap on training samples for quick runs (0 = all).
        seed: random seed.
        backbone: "densenet169" (transfer learning) or "compact" (a VGG-style CNN trained from scratch).
        rotation: max random rotation, fraction of a full turn (augmentation; 0 = off).
        zoom: max random zoom, fraction of the side (augmentation; 0 = off).
        erasing: probability of random erasing (augmentation; 0 = off).
        label_smoothing: label smoothing of the cross-entropy (0 = off).
        class_weighting: balanced class weights in the loss.
        class_weight_power: exponent on the class weights (1 = balanced, 0.5 = square root, milder).
        tta: save the model with test-time augmentation (mean over the image and its mirror).
        tta_shift: with tta, also each view shifted this many pixels four ways (10 views; 0 = flip only).
        schedule: "plateau" (reduce on validation-loss plateau) or "cosine" (cosine decay over the epochs).
        tensorboard: Vertex AI TensorBoard (projects/P/locations/L/tensorboards/ID) to stream the
            TensorBoard logs (written to model/tensorboard) to while training; "" = none.
        experiment: TensorBoard experiment to upload into (the Vertex experiment); "" = fer-pipeline.
        jit_compile: XLA-compile the train step (docs/benchmarks.md).
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
    from fer_pipeline.component_io import model_file, phase_outputs, setup_logging, train_config
    from fer_pipeline.runs import pipeline_run_name
    from fer_pipeline.tensorboard import log_dir
    from fer_pipeline.steps import fine_tune_step

    setup_logging()
    cfg = train_config(
        backbone=backbone, rotation=rotation, zoom=zoom, erasing=erasing, label_smoothing=label_smoothing,
        class_weighting=class_weighting, class_weight_power=class_weight_power, schedule=schedule, tta=tta, tta_shift=tta_shift,
        batch_size=batch_size, finetune_epochs=epochs, finetune_lr=learning_rate, unfreeze_from=unfreeze_from,
        weights=weights, early_stopping_patience=early_stopping_patience, max_train_samples=max_train_samples, seed=seed,
        backup_dir=f"{model.path}-backup",  # beside the output: a retry of this task resumes from it
        jit_compile=jit_compile,
    )
    if replicas > 1:
        from fer_pipeline.cloud.vertex_training import MultiWorkerJob, run_fine_tune_job, phase_result

        job = MultiWorkerJob(
            project=project, location=location, image=replica_image, staging_bucket=staging_uri, replicas=replicas,
            accelerator_type=gpu_type, accelerator_count=gpu_count,
        )
        outcome = run_fine_tune_job(
            job, dataset=dataset.path, split=split.path, model=str(model_file(frozen_model.path)), out_dir=model.path,
            cfg=cfg,
        )
        phase_outputs(phase_result(outcome), model.path, history.path, metrics)
        return
    prefix = f"{pipeline_run_name(model.path)}-finetune"
    with vertex_upload(tensorboard, log_dir(model.path), experiment=experiment or "fer-pipeline", run_prefix=prefix):
        result = fine_tune_step(dataset.path, split.path, model_file(frozen_model.path), model.path, cfg)
    phase_outputs(result, model.path, history.path, metrics)
