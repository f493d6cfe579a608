"""The training pipeline: only wiring. Each step is a component from `components/`.

    ingest -> split_and_weight -> train_frozen -> fine_tune (GPU) -> evaluate -> [gate] -> register

`make_pipeline(target, profile)` returns the pipeline for one target: "vertex" asks for
the GPU with Vertex's accelerator settings; "kfp" (KFP on kind/GKE) adds a node selector,
a toleration and an nvidia.com/gpu request for the GPU node pool through kfp-kubernetes,
which the Vertex file must not carry (it makes a second YAML document that
aiplatform.PipelineJob cannot load). The profile (pipelines.resources) says what the
training steps ask for; this module only applies it.
"""

from kfp import dsl

from components.evaluate import evaluate
from components.fine_tune import fine_tune
from components.ingest import ingest
from components.register import register
from components.split import split_and_weight
from components.train_frozen import train_frozen
from pipelines.resources import PROFILES, Profile

PIPELINE_NAME = "fer-emotion-training"
TARGETS = ("vertex", "kfp")
DEFAULT_PROFILE = {"vertex": "vertex", "kfp": "kind"}


def _place_training(task, profile: Profile, on_gpu: bool, gpu_type, gpu_count) -> None:
    """Apply the profile's resources to a training step and, for a GPU step, the GPU:
    Vertex's accelerator settings, or the cluster's GPU pool and nvidia.com/gpu."""
    res = profile.training
    for setter, value in (
        (task.set_cpu_request, res.cpu_request),
        (task.set_cpu_limit, res.cpu_limit),
        (task.set_memory_request, res.memory_request),
        (task.set_memory_limit, res.memory_limit),
    ):
        if value:
            setter(value)
    if not on_gpu:
        return
    if profile.target == "vertex":
        task.set_accelerator_type(gpu_type).set_accelerator_limit(gpu_count)
        return
    from kfp import kubernetes

    pool = profile.pool
    kubernetes.add_node_selector(task, label_key=pool.node_label_key, label_value=pool.node_label_value)
    kubernetes.add_toleration(
        task, key=pool.taint_key, operator="Equal", value=pool.taint_value, effect=pool.taint_effect
    )
    if profile.gpu_count:
        task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(profile.gpu_count)


def _use_storage(tasks, registering, profile: Profile) -> None:
    """On a cluster without a cloud account: every task talks to the in-cluster Cloud
    Storage emulator, and registration writes to the registry volume."""
    if profile.storage is None:
        return
    from kfp import kubernetes

    for task in tasks:
        task.set_env_variable("STORAGE_EMULATOR_HOST", profile.storage.emulator_url)
    kubernetes.mount_pvc(registering, pvc_name=profile.storage.registry_pvc, mount_path=profile.storage.registry_mount)


def make_pipeline(target: str = "vertex", profile: Profile | None = None):
    """Build the pipeline function for ``target`` ("vertex" or "kfp"), with the training
    steps placed by ``profile`` (pipelines.resources; default: vertex, or kind for kfp)."""
    if target not in TARGETS:
        raise ValueError(f"Unknown target {target!r}; expected one of {TARGETS}.")
    profile = profile or PROFILES[DEFAULT_PROFILE[target]]
    if profile.target != target:
        raise ValueError(f"profile {profile.name!r} is for the {profile.target} target, not {target}")

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="FER-2013 facial-emotion classifier: DenseNet169 (or a compact CNN), two-phase training.",
    )
    def fer_training(
        data_source: str,
        data_prefix: str,
        registry: str = "vertex",
        # The training recipe: a preset name (fer_pipeline.presets) and TrainConfig/SplitConfig
        # field overrides, resolved by each step that needs it (fer_pipeline.recipe).
        preset: str = "",
        recipe: dict = {},
        allow_conversion: bool = False,
        accuracy_threshold: float = 0.5,
        model_display_name: str = "fer-emotion",
        primary_metric: str = "macro_f1",
        gpu_type: str = "NVIDIA_TESLA_T4",
        gpu_count: int = 1,
        project: str = "",
        location: str = "us-central1",
        serving_image: str = "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest",
        commit: str = "unknown",
        experiment: str = "",
        tensorboard: str = "",
        finetune_replicas: int = 1,
        finetune_image: str = "",
    ):
        data = ingest(source=data_source, gcs_prefix=data_prefix, allow_conversion=allow_conversion)
        # Never cached: the step itself skips a source it has published before, and says so.
        data.set_display_name("1. ingest to GCS").set_retry(num_retries=3, backoff_duration="30s")
        data.set_caching_options(False)

        split = split_and_weight(dataset=data.outputs["dataset"], preset=preset, recipe=recipe)
        split.set_display_name("2. split and weight").set_retry(num_retries=2)

        frozen = train_frozen(
            dataset=data.outputs["dataset"],
            split=split.outputs["split"],
            preset=preset,
            recipe=recipe,
            tensorboard=tensorboard,
            experiment=experiment,
        )
        frozen.set_display_name("3. train head (frozen backbone)").set_retry(num_retries=2)
        _place_training(frozen, profile, profile.frozen_on_gpu, gpu_type, gpu_count)

        tuned = fine_tune(
            dataset=data.outputs["dataset"],
            split=split.outputs["split"],
            frozen_model=frozen.outputs["model"],
            preset=preset,
            recipe=recipe,
            tensorboard=tensorboard,
            experiment=experiment,
            # finetune_replicas > 1: a Vertex custom job of that many GPU machines (MultiWorkerMirroredStrategy)
            replicas=finetune_replicas,
            replica_image=finetune_image,
            project=project,
            location=location,
            staging_uri=data_prefix,
            gpu_type=gpu_type,
            gpu_count=gpu_count,
        )
        tuned.set_display_name("4. fine-tune (GPU)").set_retry(num_retries=2)
        _place_training(tuned, profile, True, gpu_type, gpu_count)

        scored = evaluate(
            dataset=data.outputs["dataset"],
            model=tuned.outputs["model"],
            frozen_history=frozen.outputs["history"],
            finetune_history=tuned.outputs["history"],
            preset=preset,
            recipe=recipe,
            experiment=experiment,
            project=project,
            location=location,
        )
        scored.set_display_name("5. evaluate").set_retry(num_retries=2)

        with dsl.If(scored.outputs["Output"] >= accuracy_threshold, name="accuracy-gate"):
            registered = register(
                model=tuned.outputs["model"],
                evaluation=scored.outputs["evaluation"],
                dataset=data.outputs["dataset"],
                registry=registry,
                display_name=model_display_name,
                primary_metric=primary_metric,
                commit=commit,
                project=project,
                location=location,
                serving_image=serving_image,
                staging_uri=data_prefix,
            )
            # Registering twice would add two versions: never cached, never retried.
            registered.set_display_name("6. register model").set_caching_options(False)
        _use_storage((data, split, frozen, tuned, scored, registered), registered, profile)

    return fer_training
