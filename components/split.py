"""Component 2: stratified train/validation split and balanced class weights."""

from kfp import dsl

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def split_and_weight(
    dataset: dsl.Input[dsl.Dataset],
    split: dsl.Output[dsl.Dataset],
    class_weights: dsl.Output[dsl.Metrics],
    preset: str = "",
    recipe: dict = {},
):
    """Split the train part of the dataset, stratified by class, and weigh the classes.

    Args:
        dataset: the canonical dataset pointer from ingest.
        split: Output. JSON with train/validation indices, per-class counts and weights.
        class_weights: Output. The weight of each class, n / (k * count_k).
        preset: named recipe (fer_pipeline.presets; "" = none); its val_fraction and seed apply.
        recipe: field overrides of the preset (val_fraction, seed; training fields are ignored here).
    """
    from fer_pipeline.component_io import setup_logging
    from fer_pipeline.recipe import resolve
    from fer_pipeline.steps import split_step

    setup_logging()
    result = split_step(dataset.path, split.path, resolve(preset, recipe).split)
    split.metadata.update({"train": len(result.train_indices), "validation": len(result.val_indices)})
    for name, weight in result.class_weights.items():
        class_weights.log_metric(name, round(weight, 4))
