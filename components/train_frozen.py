"""Component 3: phase 1, the head trained on a frozen DenseNet169 backbone."""

from kfp import dsl

from components.images import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def train_frozen(
    dataset: dsl.Input[dsl.Dataset],
    split: dsl.Input[dsl.Dataset],
    model: dsl.Output[dsl.Model],
    history: dsl.Output[dsl.Artifact],
    metrics: dsl.Output[dsl.Metrics],
    image_size: int = 48,
    weights: str = "imagenet",
    batch_size: int = 64,
    epochs: int = 20,
    learning_rate: float = 1e-4,
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
    head_pooling: str = "avg",
    compact_widths: list = [32, 64, 128, 256],
    schedule: str = "plateau",
    tensorboard: str = "",
    experiment: str = "",
):
    """Train the classification head with the backbone frozen.

    Args:
        dataset: canonical dataset pointer.
        split: train/validation split with class weights.
        model: Output. Directory with model.keras.
        history: Output. history.json: per-epoch loss/accuracy/learning rate.
        metrics: Output. Best validation loss and accuracy, epochs run, seconds.
        image_size: model input side in pixels (48 = native; larger upsamples in the model).
        weights: backbone weights: "imagenet", a weights file path or gs:// URI, or "none".
        batch_size: global batch size.
        epochs: maximum epochs (early stopping on validation loss).
        learning_rate: Adam learning rate.
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
        head_pooling: "avg" (global average pooling) or "flatten" (keep each position of the last feature map).
        compact_widths: filters of each conv block of the compact backbone (ignored by densenet169).
        schedule: "plateau" (reduce on validation-loss plateau) or "cosine" (cosine decay over the epochs).
        tensorboard: Vertex AI TensorBoard (projects/P/locations/L/tensorboards/ID) to stream the
            TensorBoard logs (written to model/tensorboard) to while training; "" = none.
        experiment: TensorBoard experiment to upload into (the Vertex experiment); "" = fer-pipeline.
    """
    from fer_pipeline.cloud.experiments import vertex_upload
    from fer_pipeline.component_io import phase_outputs, setup_logging, train_config
    from fer_pipeline.runs import pipeline_run_name
    from fer_pipeline.tensorboard import log_dir
    from fer_pipeline.steps import train_frozen_step

    setup_logging()
    cfg = train_config(
        backbone=backbone, rotation=rotation, zoom=zoom, erasing=erasing, label_smoothing=label_smoothing,
        class_weighting=class_weighting, class_weight_power=class_weight_power, head_pooling=head_pooling,
        compact_widths=compact_widths, schedule=schedule, image_size=image_size, weights=weights, batch_size=batch_size, frozen_epochs=epochs, frozen_lr=learning_rate,
        early_stopping_patience=early_stopping_patience, max_train_samples=max_train_samples, seed=seed,
        backup_dir=f"{model.path}-backup",  # beside the output: a retry of this task resumes from it
    )
    prefix = f"{pipeline_run_name(model.path)}-frozen"
    with vertex_upload(tensorboard, log_dir(model.path), experiment=experiment or "fer-pipeline", run_prefix=prefix):
        result = train_frozen_step(dataset.path, split.path, model.path, cfg)
    phase_outputs(result, model.path, history.path, metrics)
