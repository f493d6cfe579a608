"""Component 1: read and validate FER-2013 and publish the canonical dataset to GCS."""

from kfp import dsl

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def ingest(source: str, gcs_prefix: str, dataset: dsl.Output[dsl.Dataset], allow_conversion: bool = False):
    """Ingest a FER-2013 source into a content-addressed canonical dataset.

    Args:
        source: Kaggle zip or folder, fer2013.csv, a gs:// URI, or kaggle:msambare/fer2013.
        gcs_prefix: gs://BUCKET/PREFIX; the dataset goes to {gcs_prefix}/datasets/{sha256[:16]}.
        dataset: Output. A pointer (JSON) to the dataset, with the manifest in its metadata.
        allow_conversion: accept RGB / other-size images by converting them (counted).
    """
    import tempfile

    from fer_pipeline.component_io import dataset_metadata, setup_logging
    from fer_pipeline.files import write_json
    from fer_pipeline.ingest import IngestOptions
    from fer_pipeline.steps import ingest_step

    setup_logging()
    with tempfile.TemporaryDirectory() as tmp:
        outcome = ingest_step(source, tmp, gcs_prefix=gcs_prefix, options=IngestOptions(convert=allow_conversion))
    write_json(dataset.path, outcome.to_json())
    dataset.metadata.update(dataset_metadata(outcome))
