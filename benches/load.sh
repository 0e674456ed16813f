#!/usr/bin/env bash
# Load benchmark: `mpsi load` (the docker-archive streamed into the Engine
# API) against `docker load -i` of the same archive exported to a file, for
# a fixture-sized image and one of ~250 MiB of the machine's binaries
# (~100 MB of gzip layers), measured in the same run.
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
# load -i FILE`, which is what `mpsi load` replaces. LAYOUT=DIR (an
# assembled image, such as out/oci from .ci/e2e) benches that image too.
set -euo pipefail
RUNS=${RUNS:-7}
MB=${MB:-250}   # uncompressed MiB of binaries for the large image
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/mpsi-load-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

for tool in docker python3; do
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
# ~MB MiB of the machine's binaries in 2 layers (half each).
. "$here/benches/common.sh"
binaries_tree "$work/big/a" $((MB / 2))
binaries_tree "$work/big/b.all" "$MB"
# b holds what a does not: the second half of the same listing.
mkdir -p "$work/big/b"
(cd "$work/big/b.all" && find . -type f | LC_ALL=C sort | while IFS= read -r f; do
  [ -e "$work/big/a/$f" ] || { mkdir -p "$work/big/b/$(dirname "$f")"; mv "$f" "$work/big/b/$f"; }
done)
rm -rf "$work/big/b.all"
# The engine skips layers it already holds: a file unique to this run.
echo "$salt" > "$work/big/a/salt"; echo "$salt" > "$work/big/b/salt"

tree_spec "mpsi-bench/small" "$salt" "$work/small/app" > "$work/small.toml"
tree_spec "mpsi-bench/big" "$salt" "$work/big/a" "$work/big/b" > "$work/big.toml"

now() { date +%s.%N; }
declare -A times
images="small big"
[ -z "${LAYOUT:-}" ] || { images="small big image"; ln -s "$(realpath "$LAYOUT")" "$work/image-oci"; }
for img in $images; do
  [ "$img" = image ] || "$MPSI" assemble "$work/$img.toml" -o "$work/$img-oci" --json > /dev/null
  "$MPSI" export --format docker-archive -o "$work/$img.tar" -l "$work/$img-oci" > /dev/null
  name="mpsi-bench/$img:$salt"
  # The assembled image keeps its own name; it is what gets removed.
  [ "$img" = image ] && name=$(tar -xOf "$work/$img.tar" manifest.json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["RepoTags"][0])')
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

args=()
for img in $images; do args+=("$img" "${times[$img,mpsi]}" "${times[$img,docker]}" "${times[$img,file]}"); done
python3 - "$MB" "${args[@]}" <<'PY'
import statistics, sys
mb, rest = sys.argv[1], sys.argv[2:]
labels = {"small": "fixture-sized", "big": f"~{mb} MiB", "image": "LAYOUT"}
rows = [(rest[i], [a.split() for a in rest[i + 1:i + 4]]) for i in range(0, len(rest), 4)]
print(f"medians of {len(rows[0][1][0])} runs each; every run (s):")
for img, runs in rows:
    for tool, r in zip(["mpsi", "docker", "file"], runs):
        print(f"  {labels[img] + ' ' + tool:>22}: " + " ".join(f"{float(x):.2f}" for x in r))
for img, runs in rows:
    a, b, c = (statistics.median(map(float, r)) for r in runs)
    print(f"{labels[img]:>14}: mpsi load {a:.3f} s, docker load -i {b:.3f} s, export+docker load -i {c:.3f} s; "
          f"ratio mpsi/docker-load {a / b:.2f}x (target <= 0.8x), mpsi/export+load {a / c:.2f}x")
PY
