#!/usr/bin/env bash
# Replicas behind a load balancer on this machine: N serving containers (the image of `make image`) on
# 127.0.0.1:8001.. (podman run --network=host) and HAProxy (deploy/haproxy.cfg, Debian's haproxy) on :8000.
#
#   deploy/run_replicas.sh up [N]     start N replicas (default 2), wait until each is ready, then haproxy
#   deploy/run_replicas.sh down       stop haproxy, remove the replicas
#
# IMAGE (default llm-lifecycle-serve:$VARIANT), SERVE_ARGS (more server options, e.g. "--cache-size 0").
# Per-replica counts: curl 'http://127.0.0.1:8404/stats;csv'.
set -euo pipefail
cd "$(dirname "$0")/.."

VARIANT=${VARIANT:-int8_dynamic}
IMAGE=${IMAGE:-llm-lifecycle-serve:$VARIANT}
RUN_DIR=${RUN_DIR:-/tmp/llm-lifecycle-lb}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/deploy/containers.conf}
PODMAN=(podman --runtime runc)
LABEL=llm-lifecycle=replica

die() { echo "run_replicas: $*" >&2; exit 1; }

wait_ready() {  # url, seconds
  for _ in $(seq "$2"); do
    curl -sf -o /dev/null "$1" && return 0
    sleep 1
  done
  die "$1 not ready after $2 s"
}

down() {
  if [ -f "$RUN_DIR/haproxy.pid" ]; then
    kill "$(cat "$RUN_DIR/haproxy.pid")" 2>/dev/null || true
    rm -f "$RUN_DIR/haproxy.pid"
  fi
  ids=$("${PODMAN[@]}" ps -aq --filter "label=$LABEL")
  # -t 10: uvicorn's graceful shutdown takes up to 5 s; the grep drops podman's complaint that systemd is absent
  [ -z "$ids" ] || "${PODMAN[@]}" rm -f -t 10 $ids 2>&1 >/dev/null | { grep -v systemd || true; } >&2
}

up() {
  local n=${1:-2}
  command -v haproxy >/dev/null || die "haproxy not found: apt-get install haproxy"
  "${PODMAN[@]}" image exists "$IMAGE" || die "image $IMAGE not found: run \`make image\` first"
  down
  mkdir -p "$RUN_DIR"
  cp deploy/haproxy.cfg "$RUN_DIR/haproxy.cfg"
  for i in $(seq 3 "$n"); do  # replicas past the two the file names
    sed -i "/^    server replica$((i - 1)) /a\\    server replica$i 127.0.0.1:$((8000 + i))" "$RUN_DIR/haproxy.cfg"
  done
  for i in $(seq "$n"); do
    # stderr to a file: the container's monitor (conmon) inherits it and would hold a pipe open. Without systemd,
    # podman cannot schedule the image's HEALTHCHECK and says so there; haproxy checks the replicas instead.
    "${PODMAN[@]}" run -d --name "llm-replica-$i" --label "$LABEL" --network=host \
      -e PORT=$((8000 + i)) -e SERVE_ARGS="${SERVE_ARGS:-}" "$IMAGE" >/dev/null 2>"$RUN_DIR/replica-$i.err" \
      || die "replica $i did not start: $(grep -v systemd "$RUN_DIR/replica-$i.err" | tail -1)"
  done
  for i in $(seq "$n"); do wait_ready "http://127.0.0.1:$((8000 + i))/readyz" 180; done
  haproxy -q -D -f "$RUN_DIR/haproxy.cfg" -p "$RUN_DIR/haproxy.pid"
  wait_ready http://127.0.0.1:8000/readyz 30
  echo "run_replicas: $n replicas of $IMAGE on :8001-:$((8000 + n)) behind haproxy on :8000"
}

case "${1:-}" in
  up) up "${2:-2}" ;;
  down) down ;;
  *) die "usage: $0 up [N] | down" ;;
esac
