"""The compiled IR of both targets: images, GPU request, node pool, loadability."""

import pytest
import yaml

from pipelines.compile import compile_pipelines

IMAGE, GPU_IMAGE = (
    "europe-docker.pkg.dev/p/r/fer-pipeline-cpu:abc123",
    "europe-docker.pkg.dev/p/r/fer-pipeline-gpu:abc123",
)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    vertex, kfp = compile_pipelines(out, IMAGE, GPU_IMAGE, commit="abc123")
    return list(yaml.safe_load_all(vertex.read_text())), list(yaml.safe_load_all(kfp.read_text())), vertex


def _executors(doc):
    return doc["deploymentSpec"]["executors"]


def test_vertex_file_is_one_document_that_pipelinejob_loads(compiled):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform

    vertex_docs, _, vertex_path = compiled
    assert len(vertex_docs) == 1
    job = aiplatform.PipelineJob(
        display_name="t",
        template_path=str(vertex_path),
        pipeline_root="gs://b/root",
        parameter_values={"data_source": "gs://b/fer2013.zip", "data_prefix": "gs://b/fer"},
        project="p",
        location="europe-west4",
        credentials=AnonymousCredentials(),
    )
    params = job.to_dict()["runtimeConfig"]["parameterValues"]
    assert params["data_source"] == "gs://b/fer2013.zip"
    assert job.to_dict()["pipelineSpec"]["root"]["inputDefinitions"]["parameters"]["commit"]["defaultValue"] == "abc123"


def test_images_point_at_the_configured_tags(compiled):
    images = {name: ex["container"]["image"] for name, ex in _executors(compiled[0][0]).items()}
    assert images == {
        "exec-ingest": IMAGE,
        "exec-split-and-weight": IMAGE,
        "exec-evaluate": IMAGE,
        "exec-register": IMAGE,
        "exec-train-frozen": GPU_IMAGE,
        "exec-fine-tune": GPU_IMAGE,
    }
    # nothing is pip-installed at run time
    assert not any("pip install" in " ".join(ex["container"]["command"]) for ex in _executors(compiled[0][0]).values())


def test_fine_tuning_asks_for_a_gpu_on_vertex(compiled):
    resources = _executors(compiled[0][0])["exec-fine-tune"]["container"]["resources"]
    assert "gpu_type" in resources["accelerator"]["resourceType"]
    assert "gpu_count" in resources["accelerator"]["resourceCount"]
    for other in ("exec-ingest", "exec-evaluate", "exec-register"):
        assert "accelerator" not in _executors(compiled[0][0])[other]["container"].get("resources", {})


def test_kind_target_carries_node_selector_and_toleration_for_fine_tuning_only(compiled):
    _, kfp_docs, _ = compiled
    assert len(kfp_docs) == 2
    platform = kfp_docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    placed = {name for name, spec in platform.items() if "nodeSelector" in spec or "tolerations" in spec}
    assert placed == {"exec-fine-tune"}
    spec = platform["exec-fine-tune"]
    assert spec["nodeSelector"]["labels"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}
    assert spec["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}
    ]


def test_registration_is_gated_on_accuracy_and_never_cached(compiled):
    doc = compiled[0][0]
    gate = doc["root"]["dag"]["tasks"]["condition-1"]
    condition = gate["triggerPolicy"]["condition"]
    assert "evaluate-Output" in condition and ">=" in condition and "accuracy_threshold" in condition
    register = doc["components"]["comp-condition-1"]["dag"]["tasks"]["register"]
    assert register["cachingOptions"] == {}  # enableCache absent = false in the IR
    assert doc["root"]["dag"]["tasks"]["train-frozen"]["cachingOptions"] == {"enableCache": True}
    assert doc["root"]["dag"]["tasks"]["ingest"]["retryPolicy"]["maxRetryCount"] == 3


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--image", ""], "'' is not an image reference"),
        (["--image", "bad image"], "'bad image' is not an image reference"),
        (["--gpu-image", "reg/x'y:t"], "is not an image reference"),
        (["--gpu-count", "100000"], "--gpu-count (GPU_COUNT=) must be from 0 to 16 GPUs per step, got 100000"),
    ],
)
def test_compile_refuses_what_a_cluster_could_not_pull_or_schedule(tmp_path, capsys, flags, message):
    from pipelines import compile as compile_mod

    argv = ["--image", "reg/cpu:t", "--gpu-image", "reg/gpu:t", "--out-dir", str(tmp_path / "build"), *flags]
    with pytest.raises(SystemExit) as refused:
        compile_mod.main(argv)
    assert refused.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "build").exists()
