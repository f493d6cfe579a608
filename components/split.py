"""Component 2: stratified train/validation split and balanced class weights."""

from kfp import dsl

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def split_and_weight(
    dataset: dsl.Input[dsl.Dataset],
    split: dsl.Output[dsl.Dataset],
    class_weights: dsl.Output[dsl.Metrics],
    val_fraction: float = 0.2,
    seed: int = 12,
):
    """Split the train part of the dataset, stratified by class, and weigh the classes.

    Args:
        dataset: the canonical dataset pointer from ingest.
        split: Output. JSON with train/validation indices, per-class counts and weights.
        class_weights: Output. The weight of each class, n / (k * count_k).
        val_fraction: share of the train split held out for validation.
        seed: random seed of the split.
    """
    from fer_pipeline.config import SplitConfig
    from fer_pipeline.component_io import setup_logging
    from fer_pipeline.steps import split_step

    setup_logging()
    result = split_step(dataset.path, split.path, SplitConfig(val_fraction=val_fraction, seed=seed))
    split.metadata.update({"train": len(result.train_indices), "validation": len(result.val_indices)})
    for name, weight in result.class_weights.items():
        class_weights.log_metric(name, round(weight, 4))
