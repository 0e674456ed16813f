#!/usr/bin/env bash
# Load benchmark: `mpsi load` (the docker-archive streamed into the Engine
# API) against `docker load -i` of the same archive exported to a file, for
# a fixture-sized image and a ~100 MB one, measured in the same run.
#
#   DOCKER_HOST=unix:///tmp/dk/docker.sock bash benches/load.sh
#   RUNS=9 MB=200 MPSI=target/debug/mpsi bash benches/load.sh
#
# Each run loads into an engine that does not hold the image (it is removed
# before every load, so every load unpacks its layers). Runs alternate
# between the two tools so both see the same machine load. Prints medians
# and the mpsi/docker-load ratio (target: at most 0.8x). The export to a
# file is not counted for docker load (it is what `docker load -i` is given);
# a third column times the whole file route `mpsi export -o FILE && docker
# load -i FILE`, which is what `mpsi load` replaces.
set -euo pipefail
RUNS=${RUNS:-7}
MB=${MB:-100}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/mpsi-load-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

for tool in docker python3 head; do
  command -v "$tool" >/dev/null || { echo "benches/load.sh needs $tool" >&2; exit 1; }
done
docker version >/dev/null 2>&1 || {
  echo "no Docker engine at ${DOCKER_HOST:-unix:///var/run/docker.sock}: start dockerd or set DOCKER_HOST" >&2
  exit 1
}
if [ -z "${MPSI:-}" ]; then
  cargo build --release --quiet --manifest-path "$here/Cargo.toml"
  MPSI="$here/target/release/mpsi"
fi
export MPSI_STORE="$work/store"

# Content unique to this run (the engine skips layers it already holds).
salt="$$-$(date +%s%N)"

# fixture-sized: a few small files and a 3 MB compressible one, 2 layers.
mkdir -p "$work/small/app/bin" "$work/small/app/share"
printf '#!/bin/sh\necho %s\n' "$salt" > "$work/small/app/bin/server"
python3 -c 'import sys; sys.stdout.buffer.write(bytes(i % 253 for i in range(3_000_000)))' \
  > "$work/small/app/share/big.bin"
# ~MB MB of random (incompressible) files in 2 layers.
mkdir -p "$work/big/a" "$work/big/b"
for i in $(seq 1 $((MB / 10))); do
  d=$([ $((i % 2)) = 0 ] && echo a || echo b)
  head -c 10485760 /dev/urandom > "$work/big/$d/file$i.bin"
done

spec() { # name dir layers...
  local name=$1 dir=$2; shift 2
  printf '[image]\nname = "mpsi-bench/%s"\ntag = "%s"\nsource_date_epoch = 1700000000\n' "$name" "$salt"
  for l in "$@"; do
    printf '[[layer]]\nname = "%s"\n[[layer.tree]]\nfrom = "%s/%s"\nto = "/%s"\n' "$l" "$dir" "$l" "$l"
  done
}
spec small "$work/small" app > "$work/small.toml"
spec big "$work/big" a b > "$work/big.toml"

now() { date +%s.%N; }
declare -A times
for img in small big; do
  "$MPSI" assemble "$work/$img.toml" -o "$work/$img-oci" --json > /dev/null
  "$MPSI" export --format docker-archive -o "$work/$img.tar" -l "$work/$img-oci" > /dev/null
  name="mpsi-bench/$img:$salt"
  echo "$img: archive $(stat -c %s "$work/$img.tar") bytes"
  for run in $(seq 1 "$RUNS"); do
    # Alternate which tool goes first, so neither always follows the same
    # removal; sync so no run pays for the previous one's writes.
    order="mpsi docker file"; [ $((run % 2)) = 0 ] && order="docker file mpsi"
    for tool in $order; do
      docker rmi -f "$name" > /dev/null 2>&1 || true
      sync
      t0=$(now)
      case $tool in
        mpsi) "$MPSI" load -l "$work/$img-oci" > /dev/null ;;
        docker) docker load -q -i "$work/$img.tar" > /dev/null ;;
        file)
          "$MPSI" export --format docker-archive -o "$work/again.tar" -l "$work/$img-oci" > /dev/null
          docker load -q -i "$work/again.tar" > /dev/null ;;
      esac
      t1=$(now)
      rm -f "$work/again.tar"
      times[$img,$tool]+="$(python3 -c "print($t1 - $t0)") "
    done
  done
  docker rmi -f "$name" > /dev/null
done

python3 - "$MB" "${times[small,mpsi]}" "${times[small,docker]}" "${times[small,file]}" \
  "${times[big,mpsi]}" "${times[big,docker]}" "${times[big,file]}" <<'PY'
import statistics, sys
m = [statistics.median(map(float, a.split())) for a in sys.argv[2:8]]
print(f"medians of {len(sys.argv[2].split())} runs each; every run (s):")
for label, a in zip(["fixture mpsi", "fixture docker", "fixture file", "big mpsi", "big docker", "big file"], sys.argv[2:8]):
    print(f"  {label:>14}: " + " ".join(f"{float(x):.2f}" for x in a.split()))
for label, (a, b, c) in (("fixture-sized", m[0:3]), (f"~{sys.argv[1]} MB", m[3:6])):
    print(f"{label:>14}: mpsi load {a:.3f} s, docker load -i {b:.3f} s, export+docker load -i {c:.3f} s; "
          f"ratio mpsi/docker-load {a / b:.2f}x (target <= 0.8x), mpsi/export+load {a / c:.2f}x")
PY
