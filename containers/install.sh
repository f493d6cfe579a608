#!/bin/sh
# Build steps shared by both image targets (run by containers/Dockerfile as root).
#
#   install.sh setup              user fer (uid/gid 10001) and the virtualenv /opt/venv
#   install.sh deps cpu|gpu       pinned dependencies from requirements.lock
#   install.sh project cpu|gpu    the fer-pipeline package itself, then an import check
#
# Files are read from /opt/fer-build (copied in by the Dockerfile):
#   pyproject.toml requirements.lock gpu.lock pyproject_reqs.py [README.md src/]
#
# Extras in both images: pipeline (kfp, Vertex client) and kaggle (kaggle: sources in
# ingest). detect (OpenCV) stays out: no component imports it, only `fer-pipeline predict`.
#
# cpu: pyproject's dependencies + those extras, constrained by requirements.lock as is.
# gpu: the same, but requirements.lock pins tensorflow-cpu; the GPU image drops that
#      pin and requirement and installs tensorflow[and-cuda] at the SAME version (read
#      from the lock), so both images run one TensorFlow release. The CUDA/cuDNN
#      libraries come as NVIDIA pip wheels, pinned in containers/gpu.lock.
set -eu

build=/opt/fer-build
venv=/opt/venv
extras="pipeline,kaggle"
# Local artifact paths that KFP's launchers write under (gs://, minio://, s3:// URIs map
# to /gcs, /minio, /s3), pre-created for the non-root user: the launcher cannot create
# them itself (kubeflow/community-distribution#2573). Vertex mounts its FUSE over /gcs.
launcher_paths="/gcs /minio /s3"
step="${1:?usage: install.sh setup|deps|project [cpu|gpu]}"
variant="${2:-cpu}"

case "$variant" in cpu|gpu) ;; *) echo "variant must be cpu or gpu, got $variant" >&2; exit 2 ;; esac

# TLS: where the build host injects a CA bundle (a mounted /etc/ssl/certs or the
# PIP_CERT build argument), pip uses it; otherwise pip's own bundle.
if [ -n "${PIP_CERT:-}" ]; then export PIP_CERT; else unset PIP_CERT; fi

tf_version() {
  sed -n 's/^tensorflow[-_]cpu==\([0-9.]*\).*/\1/p' "$build/requirements.lock"
}

case "$step" in
setup)
  groupadd --gid 10001 fer
  useradd --uid 10001 --gid 10001 --create-home --home-dir /home/fer --shell /usr/sbin/nologin fer
  # shellcheck disable=SC2086
  mkdir -p $launcher_paths && chown 10001:10001 $launcher_paths && chmod 0775 $launcher_paths
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip --version
  ;;
deps)
  cd "$build"
  if [ "$variant" = gpu ]; then
    tf="$(tf_version)"
    [ -n "$tf" ] || { echo "requirements.lock has no tensorflow-cpu pin" >&2; exit 1; }
    python3 pyproject_reqs.py pyproject.toml --filter-lock requirements.lock --drop tensorflow-cpu > constraints.txt
    cat gpu.lock >> constraints.txt   # the NVIDIA wheels and tensorflow itself, pinned
    grep -qx "tensorflow==$tf" gpu.lock || { echo "containers/gpu.lock must pin tensorflow==$tf" >&2; exit 1; }
    python3 pyproject_reqs.py pyproject.toml --extras "$extras" --drop tensorflow-cpu \
      --add "tensorflow[and-cuda]==$tf" > requirements.txt
  else
    cp requirements.lock constraints.txt
    python3 pyproject_reqs.py pyproject.toml --extras "$extras" > requirements.txt
  fi
  echo "== $variant requirements:"; cat requirements.txt
  "$venv/bin/pip" install --no-cache-dir -c constraints.txt -r requirements.txt
  ;;
project)
  cd "$build"
  # --no-deps: the dependencies are already in; for gpu, pyproject's tensorflow-cpu
  # requirement is deliberately left unsatisfied (tensorflow provides the same module).
  "$venv/bin/pip" install --no-cache-dir --no-deps -c constraints.txt "$build"
  if [ "$variant" = cpu ]; then
    "$venv/bin/pip" check
  else
    "$venv/bin/pip" list 2>/dev/null | grep -i '^tensorflow-cpu ' && { echo "tensorflow-cpu must not be in the GPU image" >&2; exit 1; }
  fi
  "$venv/bin/python" -c "import fer_pipeline, kfp, kagglehub, google.cloud.aiplatform; print('fer_pipeline', fer_pipeline.__file__)"
  command -v fer-pipeline
  cd /
  rm -rf "$build"
  ;;
*)
  echo "unknown step $step" >&2; exit 2 ;;
esac
