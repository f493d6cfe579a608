"""What the training steps ask for on each kind of cluster: the one place to change it.

A *profile* is chosen at compile time (`make compile KFP_PROFILE=kind|gke`); the
pipeline module only applies it (pipelines.training).

    vertex  Vertex AI Pipelines: the machine follows the CPU and memory limits; the GPU
            type and count are the pipeline's gpu_type / gpu_count parameters.
    kind    KFP on a local kind cluster that a 4-core, 16 GB laptop can schedule; the
            GPU-pool worker advertises one fake nvidia.com/gpu (infra/kind/up.sh); no
            cloud account: storage is the in-cluster emulator, the registry a volume.
    gke     KFP on GKE with a GPU node pool (n1-standard-8 + T4 by default): the GPU
            request is what makes the autoscaler grow a pool scaled to zero.

On Kubernetes a limit without a request becomes an equal request, which is why every
profile that targets a cluster sets both.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class GpuPool:
    """The Kubernetes node pool GPU steps are scheduled on (label and taint)."""

    node_label_key: str = "cloud.google.com/gke-accelerator"
    node_label_value: str = "nvidia-tesla-t4"
    taint_key: str = "nvidia.com/gpu"
    taint_value: str = "present"
    taint_effect: str = "NoSchedule"


@dataclass(frozen=True)
class InClusterStorage:
    """Storage for a cluster without a cloud account: the Cloud Storage emulator and the
    registry volume that infra/kind/storage.yaml deploys (`make kind-up`)."""

    emulator_url: str = "http://fake-gcs.kubeflow.svc.cluster.local:4443"
    bucket: str = "fer-kind"
    registry_pvc: str = "fer-registry"
    registry_mount: str = "/registry"

    def parameter_defaults(self) -> dict[str, str]:
        """Compiled-in defaults of the parameters that otherwise need a bucket: a run
        then needs no settings at all (`make kind-upload` puts the data there)."""
        return {
            "data_source": f"gs://{self.bucket}/input/fer2013.zip",
            "data_prefix": f"gs://{self.bucket}/fer",
            "registry": self.registry_mount,
        }


@dataclass(frozen=True)
class Resources:
    """CPU and memory of one step, in Kubernetes quantities ("" = not set)."""

    cpu_request: str = ""
    cpu_limit: str = ""
    memory_request: str = ""
    memory_limit: str = ""


@dataclass(frozen=True)
class Profile:
    name: str
    target: str  # "vertex" (one YAML document) or "kfp" (with the kfp-kubernetes platform spec)
    training: Resources  # both training steps
    gpu_count: int = 0  # nvidia.com/gpu per GPU step on a cluster (Vertex: the gpu_count parameter)
    frozen_on_gpu: bool = False  # phase 1 on the GPU too (DenseNet169 with ImageNet weights: most of the compute)
    pool: GpuPool = field(default_factory=GpuPool)
    storage: InClusterStorage | None = None  # None: a real bucket (Vertex; GKE with Workload Identity)

    def __post_init__(self) -> None:
        if self.target not in ("vertex", "kfp"):
            raise ValueError(f"profile {self.name}: target must be vertex or kfp, got {self.target!r}")
        if self.gpu_count < 0:
            raise ValueError(f"gpu_count must be 0 or more, got {self.gpu_count}")

    def with_settings(self, gpu_count: int | None = None, frozen_on_gpu: bool | None = None) -> Profile:
        """This profile with the compile settings that were given (None = keep)."""
        changes = {k: v for k, v in (("gpu_count", gpu_count), ("frozen_on_gpu", frozen_on_gpu)) if v is not None}
        return replace(self, **changes)


MAX_GPUS = 16  # the most GPUs one machine has (Vertex's a2-megagpu-16g): GPU_COUNT= and gpu_count

PROFILES = {
    "vertex": Profile("vertex", "vertex", Resources(cpu_limit="8", memory_limit="32G")),
    "kind": Profile(
        "kind",
        "kfp",
        Resources(cpu_request="1", cpu_limit="3", memory_request="3G", memory_limit="8G"),
        gpu_count=1,
        storage=InClusterStorage(),
    ),
    "gke": Profile(
        "gke", "kfp", Resources(cpu_request="4", cpu_limit="7", memory_request="16G", memory_limit="24G"), gpu_count=1
    ),
}
KFP_PROFILES = tuple(name for name, p in PROFILES.items() if p.target == "kfp")


def profile(name: str, *, gpu_count: int | None = None, frozen_on_gpu: bool | None = None) -> Profile:
    """The named profile with the given settings; a clear error for an unknown name."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name].with_settings(gpu_count, frozen_on_gpu)
