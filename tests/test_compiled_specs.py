"""The compiled files read as the cluster reads them, for each profile
(pipelines/resources.py): every task's image and resources, the GPU request, node
selector and toleration on Kubernetes, Vertex's accelerator and nothing Kubernetes-only
in the Vertex file."""

from __future__ import annotations

import pytest
import yaml

from pipelines.compile import compile_pipelines
from pipelines.resources import PROFILES, GpuPool

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
            assert (res["resourceCpuRequest"], res["resourceCpuLimit"]) == (
                wanted.training.cpu_request,
                wanted.training.cpu_limit,
            )
            assert (res["resourceMemoryRequest"], res["resourceMemoryLimit"]) == (
                wanted.training.memory_request,
                wanted.training.memory_limit,
            )
        else:
            assert not res, f"{task} asks for {res}"
        if task in gpu_steps:
            assert res["accelerator"]["resourceType"] == "nvidia.com/gpu"
            assert res["accelerator"]["resourceCount"] == str(wanted.gpu_count)
        else:
            assert "accelerator" not in res, task
    specs = platform(kfp_docs)
    assert set(specs) == gpu_steps | ({"exec-register"} if wanted.storage else set())
    pool = GpuPool()
    for task in gpu_steps:
        assert specs[task]["nodeSelector"]["labels"] == {pool.node_label_key: pool.node_label_value}
        assert specs[task]["tolerations"] == [
            {"key": pool.taint_key, "operator": "Equal", "value": pool.taint_value, "effect": pool.taint_effect}
        ]
    assert not [s for s in specs.values() if {"secretAsVolume", "secretAsEnv"} & set(s)]


def test_kind_file_needs_no_cloud_account(tmp_path):
    """Every task talks to the in-cluster emulator; registration writes to the registry
    volume; the parameters that need a bucket default to the emulator's."""
    _, kfp_docs = compiled(tmp_path, kfp_profile="kind")
    storage = PROFILES["kind"].storage
    for task, container in containers(kfp_docs[0]).items():
        assert container["env"] == [{"name": "STORAGE_EMULATOR_HOST", "value": storage.emulator_url}], task
    specs = platform(kfp_docs)
    assert specs["exec-register"]["pvcMount"] == [
        {
            "constant": storage.registry_pvc,
            "mountPath": storage.registry_mount,
            "pvcNameParameter": {"runtimeValue": {"constant": storage.registry_pvc}},
        }
    ]
    assert [t for t, s in specs.items() if "pvcMount" in s] == ["exec-register"]
    parameters = kfp_docs[0]["root"]["inputDefinitions"]["parameters"]
    defaults = {name: parameters[name].get("defaultValue") for name in ("data_source", "data_prefix", "registry")}
    assert defaults == {
        "data_source": f"gs://{storage.bucket}/input/fer2013.zip",
        "data_prefix": f"gs://{storage.bucket}/fer",
        "registry": storage.registry_mount,
    }


def test_gke_and_vertex_files_use_real_storage(tmp_path):
    vertex, kfp_docs = compiled(tmp_path, kfp_profile="gke")
    for doc in (vertex, kfp_docs[0]):
        assert not [t for t, c in containers(doc).items() if c.get("env")]
        assert "defaultValue" not in doc["root"]["inputDefinitions"]["parameters"]["data_source"]
    assert not [s for s in platform(kfp_docs).values() if "pvcMount" in s]
