# Sourced by the container scripts. Sets, as arrays:
#   ENGINE      docker when a docker daemon answers, else podman (ENGINE=docker|podman forces one)
#   BUILD_OPTS  extra options for `build`
#   RUN_OPTS    extra options for `run`
# Podman on hosts without systemd or cgroup delegation (CI runners, sandboxes) needs
# runc with cgroupfs and bounded ulimits; PODMAN_OPTS replaces the global options.
# HOST_CA=1 (default for podman where the file exists; 0 turns it off) mounts the
# host's CA bundle read-only into build steps and points pip at it, for hosts that
# reach the package index through a TLS-inspecting proxy. Nothing of it stays in
# the image. NETWORK_HOST=1 (default for podman) builds with --network host.
_want="${ENGINE:-}"
if [ -z "$_want" ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then _want=docker
  elif command -v podman >/dev/null 2>&1; then _want=podman
  else echo "no container engine: install docker (with a running daemon) or podman and runc" >&2; exit 1
  fi
fi
_ca=/etc/ssl/certs/ca-certificates.crt
case "$_want" in
  docker)
    ENGINE=(docker)
    BUILD_OPTS=()
    RUN_OPTS=()
    ;;
  podman)
    # shellcheck disable=SC2206
    ENGINE=(podman ${PODMAN_OPTS:---runtime runc --cgroup-manager cgroupfs})
    RUN_OPTS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
    BUILD_OPTS=("${RUN_OPTS[@]}")
    [ "${NETWORK_HOST:-1}" = 1 ] && BUILD_OPTS+=(--network host)
    if [ "${HOST_CA:-1}" = 1 ] && [ -f "$_ca" ]; then
      BUILD_OPTS+=(--volume /etc/ssl/certs:/etc/ssl/certs:ro --build-arg "PIP_CERT=$_ca")
    fi
    ;;
  *) echo "ENGINE must be docker or podman, got $_want" >&2; exit 1 ;;
esac
unset _want _ca
