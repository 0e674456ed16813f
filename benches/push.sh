#!/usr/bin/env bash
# Push benchmark: `mpsi push` against `skopeo copy oci:... docker://...` to
# the same local registry (Debian's docker-registry, distribution 2.8),
# cold (a fresh registry each run, so every blob is uploaded and neither
# tool can mount from an earlier run) and warm (the same push again: every
# blob is already there). Two images: a small one and one of about 100 MB
# of gzip layers (the machine's binaries). Prints medians and mpsi/skopeo
# ratios from the same run, and checks a warm mpsi push uploads 0 bytes.
# A third peer is curl POSTing and PUTting every blob of the layout at once
# and doing nothing else (no hashing, no checks, no manifest): close to the
# registry's own floor, which bounds a push of one large blob.
# LAYOUT=DIR (an assembled image, such as out/oci from .ci/e2e) benches that
# image too, under the tag TAG (default latest).
#
#   bash benches/push.sh
#   RUNS=7 MB=300 bash benches/push.sh
#   MPSI=target/debug/mpsi bash benches/push.sh   # skip the release build
#   LAYOUT=out/oci bash benches/push.sh            # and the real image
set -euo pipefail
RUNS=${RUNS:-5}
MB=${MB:-250}   # uncompressed MiB of binaries for the large image (~100 MB gzip)
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/mpsi-push-bench.XXXXXX")
reg_pid=""
stop_registry() {
  if [ -n "$reg_pid" ]; then kill "$reg_pid" 2>/dev/null || true; wait "$reg_pid" 2>/dev/null || true; fi
  reg_pid=""
}
trap 'stop_registry; rm -rf "$work"' EXIT

for tool in docker-registry skopeo python3 curl; do
  command -v "$tool" >/dev/null || { echo "benches/push.sh needs $tool (apt-get install $tool)" >&2; exit 1; }
done
if [ -z "${MPSI:-}" ]; then
  cargo build --release --quiet --manifest-path "$here/Cargo.toml"
  MPSI="$here/target/release/mpsi"
fi

now() { date +%s.%N; }
median() { python3 -c 'import sys,statistics; print("%.3f" % statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }

# A registry of our own on a free loopback port, with fresh storage.
start_registry() {
  stop_registry
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  rm -rf "$work/reg"; mkdir -p "$work/reg"
  cat > "$work/reg/config.yml" <<CFG
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/reg/data
http:
  addr: 127.0.0.1:$port
  secret: bench
CFG
  docker-registry serve "$work/reg/config.yml" >"$work/reg/log" 2>&1 &
  reg_pid=$!
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && return 0; sleep 0.1; done
  echo "docker-registry did not start" >&2; exit 1
}

# Layouts: a small tree, and MB MiB of binaries.
. "$here/benches/common.sh"
make_layout() { # name
  tree_spec "bench-$1" t "$work/$1-tree" > "$work/$1.toml"
  MPSI_STORE="$work/store" "$MPSI" assemble "$work/$1.toml" -o "$work/$1-oci" --json >/dev/null
}
mkdir -p "$work/small-tree/etc"
for i in $(seq 20); do head -c 4096 /usr/bin/env > "$work/small-tree/etc/file$i"; done
binaries_tree "$work/large-tree" "$MB"
make_layout small
make_layout large

# curl_uploads LAYOUT: every blob of LAYOUT uploaded at once, POST + PUT each.
curl_uploads() {
  local f loc pids=()
  for f in "$1"/blobs/sha256/*; do
    (loc=$(curl -fs -D - -o /dev/null -X POST "http://127.0.0.1:$port/v2/floor/blobs/uploads/" |
      tr -d '\r' | awk 'tolower($1) == "location:" { print $2 }')
     curl -fs -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' -T "$f" \
       "$loc&digest=sha256:$(basename "$f")") &
    pids+=($!)
  done
  wait "${pids[@]}"
}

bench() { # name layout tag
  local layout=$2 tag=$3 size
  size=$(du -sb "$layout/blobs" | cut -f1)
  local mc=() mw=() sc=() sw=() fl=() t0 warm_bytes=""
  for _ in $(seq "$RUNS"); do
    start_registry
    t0=$(now); curl_uploads "$layout"; fl+=("$(python3 -c "print($(now)-$t0)")")
    start_registry
    t0=$(now); MPSI_STORE="$work/push-store-$RANDOM$RANDOM" "$MPSI" push --layout "$layout" "127.0.0.1:$port/bench/$1:t" >/dev/null
    mc+=("$(python3 -c "print($(now)-$t0)")")
    t0=$(now); out=$(MPSI_STORE="$work/push-store" "$MPSI" push --layout "$layout" "127.0.0.1:$port/bench/$1:t" --json)
    mw+=("$(python3 -c "print($(now)-$t0)")")
    warm_bytes=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes_uploaded"])' <<<"$out")
    [ "$warm_bytes" = 0 ] || { echo "a warm mpsi push uploaded $warm_bytes bytes" >&2; exit 1; }
    start_registry
    t0=$(now); skopeo copy -q --dest-tls-verify=false "oci:$layout:$tag" "docker://127.0.0.1:$port/bench/$1:t"
    sc+=("$(python3 -c "print($(now)-$t0)")")
    t0=$(now); skopeo copy -q --dest-tls-verify=false "oci:$layout:$tag" "docker://127.0.0.1:$port/bench/$1:t"
    sw+=("$(python3 -c "print($(now)-$t0)")")
  done
  local a b c d e
  a=$(median "${mc[@]}"); b=$(median "${sc[@]}"); c=$(median "${mw[@]}"); d=$(median "${sw[@]}"); e=$(median "${fl[@]}")
  printf '%-6s %6.1f MB  cold: mpsi %6.3f s  skopeo %6.3f s  ratio %.2f  (curl %6.3f s, mpsi/curl %.2f)   warm: mpsi %6.3f s (0 bytes)  skopeo %6.3f s  ratio %.2f\n' \
    "$1" "$(python3 -c "print($size/1e6)")" "$a" "$b" "$(python3 -c "print($a/$b)")" "$e" "$(python3 -c "print($a/$e)")" \
    "$c" "$d" "$(python3 -c "print($c/$d)")"
}

echo "medians of $RUNS runs, $(nproc) CPUs, $("$MPSI" --version), $(skopeo --version)"
bench small "$work/small-oci" t
bench large "$work/large-oci" t
[ -z "${LAYOUT:-}" ] || bench image "$LAYOUT" "${TAG:-latest}"
