"""Component 3: phase 1, the head trained on a frozen backbone."""

from kfp import dsl

from components.images import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def train_frozen(
    dataset: dsl.Input[dsl.Dataset],
    split: dsl.Input[dsl.Dataset],
    model: dsl.Output[dsl.Model],
    history: dsl.Output[dsl.Artifact],
    metrics: dsl.Output[dsl.Metrics],
    preset: str = "",
    recipe: dict = {},
    tensorboard: str = "",
    experiment: str = "",
):
    """Train the classification head with the backbone frozen.

    Args:
        dataset: canonical dataset pointer.
        split: train/validation split with class weights.
        model: Output. Directory with model.keras; its metadata holds the resolved recipe.
        history: Output. history.json: per-epoch loss/accuracy/learning rate and the resolved recipe.
        metrics: Output. Best validation loss and accuracy, epochs run, seconds.
        preset: named recipe (fer_pipeline.presets; "" = none).
        recipe: TrainConfig field overrides of the preset (README's recipe table).
        tensorboard: Vertex AI TensorBoard (projects/P/locations/L/tensorboards/ID) to stream the
            TensorBoard logs (written to model/tensorboard) to while training; "" = none.
        experiment: TensorBoard experiment to upload into (the Vertex experiment); "" = fer-pipeline.
    """
    from fer_pipeline.cloud.experiments import vertex_upload
    from fer_pipeline.component_io import phase_config, phase_outputs, setup_logging
    from fer_pipeline.runs import pipeline_run_name
    from fer_pipeline.steps import train_frozen_step
    from fer_pipeline.tensorboard import log_dir

    setup_logging()
    cfg = phase_config(preset, recipe, model.path)
    prefix = f"{pipeline_run_name(model.path)}-frozen"
    with vertex_upload(tensorboard, log_dir(model.path), experiment=experiment or "fer-pipeline", run_prefix=prefix):
        result = train_frozen_step(dataset.path, split.path, model.path, cfg)
    phase_outputs(result, model, history.path, metrics)
