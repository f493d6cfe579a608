"""Component 6: export the serving model and register it as a new version."""

from kfp import dsl

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def register(
    model: dsl.Input[dsl.Model],
    evaluation: dsl.Input[dsl.Artifact],
    dataset: dsl.Input[dsl.Dataset],
    registered: dsl.Output[dsl.Artifact],
    registry: str,
    display_name: str = "fer-emotion",
    primary_metric: str = "macro_f1",
    commit: str = "unknown",
    project: str = "",
    location: str = "us-central1",
    serving_image: str = "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest",
    staging_uri: str = "",
):
    """Register the model; it becomes `champion` only if it beats the current one.

    Args:
        model: the evaluated model directory.
        evaluation: evaluation directory (metrics.json, vertex_evaluation.json).
        dataset: canonical dataset pointer (its checksum becomes a label).
        registered: Output. The registered version (name, version, aliases, location).
        registry: "vertex" for the Vertex AI Model Registry, else a local registry directory.
        display_name: the model family; each run adds a version.
        primary_metric: metrics.json key a new version must beat to become champion.
        commit: source commit of the pipeline, recorded as a label.
        project: Google Cloud project (Vertex only).
        location: Vertex region.
        serving_image: prebuilt or custom prediction container (Vertex only).
        staging_uri: gs:// prefix for the uploaded model files (Vertex only).
    """
    from fer_pipeline.component_io import model_file, registration_labels, setup_logging
    from fer_pipeline.files import write_json
    from fer_pipeline.steps import register_step

    setup_logging()
    version = register_step(
        model_file(model.path),
        f"{evaluation.path}/metrics.json",
        registry=registry,
        display_name=display_name,
        labels=registration_labels(dataset.metadata, commit),
        primary_metric=primary_metric,
        vertex={"project": project, "location": location, "serving_image": serving_image, "staging_uri": staging_uri},
    )
    write_json(registered.path, version)
    registered.metadata.update({k: v for k, v in version.items() if isinstance(v, (str, int, float, bool))})
