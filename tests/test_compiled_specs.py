"""The compiled files read as the cluster reads them, for each profile
(pipelines/resources.py): every task's image and resources, the GPU request, node
selector and toleration on Kubernetes, Vertex's accelerator and nothing Kubernetes-only
in the Vertex file."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from pipelines.compile import compile_pipelines
from pipelines.resources import PROFILES, GpuPool, Profile, Resources, profile

IMAGE, GPU_IMAGE = "reg/fer-pipeline-cpu:t", "reg/fer-pipeline-gpu:t"
TRAINING = {"exec-train-frozen", "exec-fine-tune"}
LIGHT = {"exec-ingest", "exec-split-and-weight", "exec-evaluate", "exec-register"}
QUANTITY = {"G": 1, "M": 1e-3}


def compiled(tmp_path, **settings):
    vertex, kfp = compile_pipelines(tmp_path, IMAGE, GPU_IMAGE, commit="t", **settings)
    return yaml.safe_load(vertex.read_text()), list(yaml.safe_load_all(kfp.read_text()))


def containers(doc):
    return {name: ex["container"] for name, ex in doc["deploymentSpec"]["executors"].items()}


def platform(kfp_docs):
    return kfp_docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def gigabytes(quantity: str) -> float:
    return float(quantity[:-1]) * QUANTITY[quantity[-1]]


@pytest.mark.parametrize("name", ["kind", "gke"])
@pytest.mark.parametrize("frozen_on_gpu", [False, True])
def test_kubernetes_file_requests_the_gpu_and_the_profiles_resources(tmp_path, name, frozen_on_gpu):
    _, kfp_docs = compiled(tmp_path, kfp_profile=name, frozen_on_gpu=frozen_on_gpu)
    wanted = PROFILES[name]
    gpu_steps = {"exec-fine-tune"} | ({"exec-train-frozen"} if frozen_on_gpu else set())
    for task, container in containers(kfp_docs[0]).items():
        res = container.get("resources", {})
        assert container["image"] == (GPU_IMAGE if task in TRAINING else IMAGE), task
        if task in TRAINING:
            assert (res["resourceCpuRequest"], res["resourceCpuLimit"]) == (wanted.training.cpu_request, wanted.training.cpu_limit)
            assert (res["resourceMemoryRequest"], res["resourceMemoryLimit"]) == (wanted.training.memory_request, wanted.training.memory_limit)
        else:
            assert not res, f"{task} asks for {res}"
        if task in gpu_steps:
            assert res["accelerator"]["resourceType"] == "nvidia.com/gpu"
            assert res["accelerator"]["resourceCount"] == str(wanted.gpu_count)
        else:
            assert "accelerator" not in res, task
        assert not container.get("env"), f"{task} has environment {container.get('env')}"
    specs = platform(kfp_docs)
    assert set(specs) == gpu_steps
    pool = GpuPool()
    for spec in specs.values():
        assert spec["nodeSelector"]["labels"] == {pool.node_label_key: pool.node_label_value}
        assert spec["tolerations"] == [{"key": pool.taint_key, "operator": "Equal", "value": pool.taint_value, "effect": pool.taint_effect}]
        assert not {"pvcMount", "secretAsVolume", "secretAsEnv"} & set(spec)


def test_kind_requests_fit_a_4_core_16_gb_laptop():
    """Both training steps never run at once (fine-tuning waits for phase 1), but KFP's
    own pods need room too: a training pod may ask for at most half the laptop."""
    kind = PROFILES["kind"].training
    assert float(kind.cpu_request) <= 2 and gigabytes(kind.memory_request) <= 8
    assert float(kind.cpu_limit) <= 4 and gigabytes(kind.memory_limit) <= 16
    assert PROFILES["kind"].gpu_count == 1  # infra/kind/up.sh advertises one fake GPU


def test_gke_requests_fit_its_gpu_node():
    """n1-standard-8 (8 vCPU, 30 GB; about 7.9 CPU and 26 GB allocatable) with one T4."""
    gke = PROFILES["gke"].training
    assert float(gke.cpu_limit) <= 7.9 and gigabytes(gke.memory_limit) <= 26
    assert float(gke.cpu_request) <= float(gke.cpu_limit) and gigabytes(gke.memory_request) <= gigabytes(gke.memory_limit)


def test_gpu_count_is_a_compile_setting(tmp_path):
    _, kfp_docs = compiled(tmp_path, kfp_profile="gke", gpu_count=2)
    assert containers(kfp_docs[0])["exec-fine-tune"]["resources"]["accelerator"]["resourceCount"] == "2"
    _, kfp_docs = compiled(tmp_path, kfp_profile="kind", gpu_count=0)
    assert "accelerator" not in containers(kfp_docs[0])["exec-fine-tune"].get("resources", {})
    assert set(platform(kfp_docs)) == {"exec-fine-tune"}  # still on the GPU pool


@pytest.mark.parametrize("frozen_on_gpu", [False, True])
def test_vertex_file_has_the_accelerator_and_nothing_kubernetes_only(tmp_path, frozen_on_gpu):
    vertex, _ = compiled(tmp_path, frozen_on_gpu=frozen_on_gpu)
    assert "platforms" not in vertex
    wanted = PROFILES["vertex"].training
    for task, container in containers(vertex).items():
        res = container.get("resources", {})
        if task in TRAINING:
            assert (res["resourceCpuLimit"], res["resourceMemoryLimit"]) == (wanted.cpu_limit, wanted.memory_limit)
            assert "resourceCpuRequest" not in res and "resourceMemoryRequest" not in res
        on_gpu = task == "exec-fine-tune" or (frozen_on_gpu and task == "exec-train-frozen")
        if on_gpu:
            assert "gpu_type" in res["accelerator"]["resourceType"] and "gpu_count" in res["accelerator"]["resourceCount"]
        else:
            assert "accelerator" not in res, task
    assert "nvidia.com/gpu" not in yaml.safe_dump(vertex)


def test_profiles_refuse_bad_settings():
    with pytest.raises(ValueError, match="unknown profile 'minikube'; choose one of vertex, kind, gke"):
        profile("minikube")
    with pytest.raises(ValueError, match="gpu_count must be 0 or more, got -1"):
        profile("gke", gpu_count=-1)
    with pytest.raises(ValueError, match="target must be vertex or kfp"):
        Profile("x", "k8s", Resources())
    from pipelines.training import make_pipeline

    with pytest.raises(ValueError, match="profile 'gke' is for the kfp target, not vertex"):
        make_pipeline("vertex", PROFILES["gke"])


def test_compile_command_refuses_a_negative_gpu_count_and_an_unknown_profile(tmp_path):
    for bad in (["--gpu-count", "-1"], ["--kfp-profile", "minikube"]):
        result = subprocess.run(
            [sys.executable, "-m", "pipelines.compile", "--image", IMAGE, "--gpu-image", GPU_IMAGE, "--out-dir", str(tmp_path / "out"), *bad],
            capture_output=True, text=True, check=False,
        )
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert bad[0] in result.stderr
        assert not (tmp_path / "out").exists()
