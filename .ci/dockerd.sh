# Sourced by .ci scripts: a private Docker engine for the tests, on its own
# socket and data root, with no bridge and no iptables changes (containers
# use --network host, so every connection stays on 127.0.0.1).
# start_dockerd sets MPSI_TEST_DOCKER_HOST; stop_dockerd stops only the
# engine this script started, by its PID.
start_dockerd() {
  DOCKERD_DIR=$(mktemp -d /tmp/mpsi-ci-docker.XXXXXX)
  dockerd --bridge=none --iptables=false --ip6tables=false \
    --data-root "$DOCKERD_DIR/root" --exec-root "$DOCKERD_DIR/exec" \
    --pidfile "$DOCKERD_DIR/dockerd.pid" -H "unix://$DOCKERD_DIR/docker.sock" \
    >"$DOCKERD_DIR/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  export MPSI_TEST_DOCKER_HOST="unix://$DOCKERD_DIR/docker.sock"
  for _ in $(seq 1 60); do
    DOCKER_HOST=$MPSI_TEST_DOCKER_HOST docker version >/dev/null 2>&1 && return 0
    kill -0 "$DOCKERD_PID" 2>/dev/null || break
    sleep 0.5
  done
  echo "dockerd did not start; its log:" >&2
  tail -20 "$DOCKERD_DIR/dockerd.log" >&2
  return 1
}

stop_dockerd() {
  [ -n "${DOCKERD_PID:-}" ] || return 0
  kill -TERM "$DOCKERD_PID" 2>/dev/null || true
  for _ in $(seq 1 40); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
  kill -KILL "$DOCKERD_PID" 2>/dev/null || true
  # Container state lives under the data root; remove what is not busy.
  rm -rf "$DOCKERD_DIR" 2>/dev/null || true
  DOCKERD_PID=
}
