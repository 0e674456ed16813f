#!/usr/bin/env bash
# Layer-writing benchmark: mpsi's gzip and zstd layers against the classic
# pipelines on the same tree, measured in the same run with hyperfine.
#
#   bash benches/layer.sh            # ~70 MB tree of binaries (default)
#   MB=200 RUNS=10 bash benches/layer.sh
#
# Prints median times and mpsi/peer ratios, and checks that mpsi's layers
# are byte-reproducible. Needs hyperfine, pigz, zstd, GNU tar (Debian).
set -euo pipefail
MB=${MB:-70}
RUNS=${RUNS:-7}
JOBS=${JOBS:-2}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/mpsi-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

for tool in hyperfine pigz zstd tar python3; do
  command -v "$tool" >/dev/null || { echo "benches/layer.sh needs $tool (apt-get install $tool)" >&2; exit 1; }
done

cargo build --release --quiet --manifest-path "$here/Cargo.toml"
mpsi="$here/target/release/mpsi"

# A tree of real binaries: the machine's shared libraries and programs in
# sorted order until MB megabytes are reached.
tree="$work/tree"
mkdir -p "$tree"
limit=$((MB * 1024 * 1024)); total=0
while IFS= read -r f; do
  size=$(stat -Lc %s "$f")
  rel=${f#/}
  mkdir -p "$tree/$(dirname "$rel")"
  cp -L "$f" "$tree/$rel"
  total=$((total + size))
  [ "$total" -ge "$limit" ] && break
done < <(find /usr/lib/x86_64-linux-gnu /usr/bin -maxdepth 1 -type f -size +20k 2>/dev/null | LC_ALL=C sort)
echo "tree: $(find "$tree" -type f | wc -l) files, $((total / 1024 / 1024)) MiB"

cat > "$work/spec.toml" <<SPEC
[image]
name = "bench"
source_date_epoch = 1700000000
[[layer]]
name = "tree"
[[layer.tree]]
from = "tree"
to = "/"
SPEC

export MPSI_STORE="$work/store"
hyperfine --style basic --runs "$RUNS" --warmup 1 --export-json "$work/times.json" \
  --prepare "rm -rf '$work/out' '$work/store'" \
  -n "mpsi gzip"  "'$mpsi' assemble '$work/spec.toml' -o '$work/out' --no-cache -j $JOBS --compression gzip" \
  -n "tar | pigz -n -p$JOBS" "tar --sort=name -cf - -C '$tree' . | pigz -n -p$JOBS > '$work/peer.tar.gz'" \
  -n "mpsi zstd"  "'$mpsi' assemble '$work/spec.toml' -o '$work/out' --no-cache -j $JOBS --compression zstd" \
  -n "tar | zstd -T$JOBS" "tar --sort=name -cf - -C '$tree' . | zstd -q -T$JOBS > '$work/peer.tar.zst'"

# Byte-reproducibility of both encodings, and sizes against the peers.
digest() { "$mpsi" assemble "$work/spec.toml" -o "$work/repro-$1-$2" --no-cache -j "$2" --compression "$1" --json |
  python3 -c 'import json,sys; r=json.load(sys.stdin)["layers"][0]; print(r["digest"], r["size"])'; }
for c in gzip zstd; do
  a=$(digest $c 1); b=$(digest $c "$JOBS")
  [ "${a% *}" = "${b% *}" ] && echo "$c: reproducible (1 and $JOBS threads give ${a% *})" || { echo "$c: NOT reproducible: $a vs $b"; exit 1; }
  echo "$c: mpsi layer ${a#* } bytes"
done
echo "peers: pigz $(stat -c %s "$work/peer.tar.gz") bytes, zstd $(stat -c %s "$work/peer.tar.zst") bytes"

python3 - "$work/times.json" <<'PY'
import json, sys, statistics
r = {x["command"]: statistics.median(x["times"]) for x in json.load(open(sys.argv[1]))["results"]}
names = list(r)
print("\nmedians (s): " + ", ".join(f"{n}: {t:.3f}" for n, t in r.items()))
print(f"gzip ratio mpsi/pigz: {r[names[0]] / r[names[1]]:.2f}x (target <= 0.5x)")
print(f"zstd ratio mpsi/zstd: {r[names[2]] / r[names[3]]:.2f}x (target <= 1.1x)")
PY
