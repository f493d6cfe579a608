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


def _compile_main(out_dir, image="reg/cpu:new"):
    from pipelines import compile as compile_mod

    return compile_mod.main(["--image", image, "--gpu-image", "reg/gpu:new", "--out-dir", str(out_dir)])


def test_a_compile_that_cannot_write_one_file_leaves_both_as_they_were(tmp_path, capsys):
    out = tmp_path / "build"
    vertex, _ = compile_pipelines(out, IMAGE, GPU_IMAGE, commit="abc123")
    before = vertex.read_text()
    (out / "pipeline-kfp.yaml").unlink()
    (out / "pipeline-kfp.yaml").mkdir()  # the KFP file cannot be written
    with pytest.raises(SystemExit) as refused:
        _compile_main(out)
    err = capsys.readouterr().err
    assert refused.value.code == 2 and "pipeline-kfp.yaml is a folder" in err and "Traceback" not in err
    assert vertex.read_text() == before  # not the new images beside an old KFP file
    assert sorted(p.name for p in out.iterdir()) == ["pipeline-kfp.yaml", "pipeline.yaml"]  # no temporary left


def test_a_kfp_compile_that_fails_leaves_the_vertex_file_as_it_was(tmp_path, monkeypatch):
    from pipelines import compile as compile_mod

    out = tmp_path / "build"
    vertex, kfp = compile_pipelines(out, IMAGE, GPU_IMAGE, commit="abc123")
    before = vertex.read_text(), kfp.read_text()
    real_render = compile_mod.render_target

    def kfp_fails(target, **kwargs):
        if target == "kfp":
            raise RuntimeError("the KFP compiler failed")
        return real_render(target, **kwargs)

    monkeypatch.setattr(compile_mod, "render_target", kfp_fails)
    with pytest.raises(RuntimeError):
        compile_pipelines(out, "reg/cpu:new", "reg/gpu:new", commit="new")
    assert (vertex.read_text(), kfp.read_text()) == before
    assert sorted(p.name for p in out.iterdir()) == ["pipeline-kfp.yaml", "pipeline.yaml"]


def test_an_out_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("keep")
    with pytest.raises(SystemExit) as refused:
        _compile_main(afile)
    err = capsys.readouterr().err
    assert refused.value.code == 2 and f"{afile} is a file, not a folder" in err and len(err.strip().splitlines()) == 1
    assert afile.read_text() == "keep"
