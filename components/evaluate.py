"""Component 5: test-split metrics, plots and the HTML report."""

from kfp import dsl

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def evaluate(
    dataset: dsl.Input[dsl.Dataset],
    model: dsl.Input[dsl.Model],
    frozen_history: dsl.Input[dsl.Artifact],
    finetune_history: dsl.Input[dsl.Artifact],
    metrics: dsl.Output[dsl.Metrics],
    classification: dsl.Output[dsl.ClassificationMetrics],
    report: dsl.Output[dsl.HTML],
    evaluation: dsl.Output[dsl.Artifact],
    preset: str = "",
    recipe: dict = {},
    experiment: str = "",
    project: str = "",
    location: str = "",
) -> float:
    """Evaluate the fine-tuned model on the test split.

    Args:
        dataset: canonical dataset pointer.
        model: fine-tuned model directory.
        frozen_history: phase-1 history.json.
        finetune_history: phase-2 history.json.
        metrics: Output. Accuracy, macro-F1, ROC-AUC, PublicTest/PrivateTest accuracy.
        classification: Output. Confusion matrix and ROC curve for the Vertex console.
        report: Output. Self-contained HTML report with the plots.
        evaluation: Output. Directory: metrics.json, vertex_evaluation.json, plots/, and
            run.json, the run's record (parameters, metrics, phases; fer_pipeline.runs).
        preset: the run's named recipe, recorded with the run.
        recipe: the run's field overrides; the record holds the whole resolved recipe.
        experiment: Vertex AI experiment to log the run's parameters and metrics to; "" = none.
        project: Google Cloud project of the experiment.
        location: Vertex region of the experiment.

    Returns:
        Test accuracy, for the registration gate. (One plain output: kfp.local cannot
        resolve NamedTuple outputs inside a dsl.If condition.)
    """
    from fer_pipeline import runs
    from fer_pipeline.cloud.experiments import log_run_or_warn
    from fer_pipeline.component_io import evaluation_outputs, model_file, setup_logging
    from fer_pipeline.recipe import resolve
    from fer_pipeline.steps import evaluate_step

    setup_logging()
    history_paths = [frozen_history.path, finetune_history.path]
    histories = runs.load_histories(history_paths)
    params = resolve(preset, recipe).params()
    params["dataset_sha256"] = str(dataset.metadata.get("source_sha256", ""))[:16]
    result = evaluate_step(
        dataset.path, model_file(model.path), evaluation.path, history_paths=history_paths, run_info=params
    )
    evaluation_outputs(result, evaluation.path, report.path, metrics, classification)
    record = runs.run_record(
        run_id=runs.pipeline_run_name(evaluation.path),
        kind="pipeline",
        params=params,
        metrics=result,
        histories=histories,
    )
    runs.write_record(evaluation.path, record)
    log_run_or_warn(record, experiment=experiment, project=project, location=location)
    return float(result["accuracy"])
