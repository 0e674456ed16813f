#!/usr/bin/env bash
# Cold build time of the MariaDB build through mpsi, as a ratio to a plain
# `cmake + ninja` of the same tree (same tarball, same patch series, same
# flags from mpsi.lock) on the same machine, in the same run. Neither uses
# ccache. Also prints the disk used and, given a store that already holds
# this build, whether the two builds' binaries are byte-identical.
#
#   bash benches/build.sh                        # tarball from $MPSI_STORE or the lock's URL
#   REFERENCE_STORE=/var/cache/mpsi-ci/store bash benches/build.sh
#   KEEP_PLAIN=/work/plain bash benches/build.sh # keep the plain build tree there
#
# A run takes two full builds (about 30 minutes on 2 cores).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
work=$(mktemp -d "${TMPDIR:-/var/tmp}/mpsi-buildbench.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
for t in cmake ninja patch python3 /usr/bin/time bc; do
  command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 1; }
done

cargo build --release --locked --quiet
mpsi="$here/target/release/mpsi"

# The lock's facts, read with Python's TOML reader (Debian 12: Python 3.11).
lockq() { python3 -c "import tomllib,sys; l=tomllib.load(open('mpsi.lock','rb')); b=l['build']['mariadb']; $1"; }
tarball_name=$(lockq "print(next(i['file'] for i in l['input'] if i['name']==b['source']))")
tarball_sha=$(lockq "print(next(i['sha256'] for i in l['input'] if i['name']==b['source']))")
mapfile -t flags < <(lockq "print('\n'.join(b['cmake_flags']))")
mapfile -t series < <(lockq "print('\n'.join(b['series'] if isinstance(b['series'], list) else [b['series']]))")

# The source tarball, through mpsi's own input store (verified by sha256).
export MPSI_STORE="$work/store"
if [ -n "${REFERENCE_STORE:-}" ]; then
  MPSI_STORE="$REFERENCE_STORE" "$mpsi" fetch >/dev/null
  mkdir -p "$work/inputs"
  ln -s "$REFERENCE_STORE/inputs-v1/sha256/$tarball_sha" "$work/inputs/$tarball_name"
  "$mpsi" fetch --from "$work/inputs" >/dev/null
else
  "$mpsi" fetch >/dev/null
fi
tarball="$MPSI_STORE/inputs-v1/sha256/$tarball_sha"

secs() { python3 -c "import sys; print(f'{float(sys.argv[2])-float(sys.argv[1]):.1f}')" "$1" "$2"; }
now() { date +%s.%N; }

echo "== plain cmake + ninja (no mpsi, no sandbox, no ccache) =="
plain=${KEEP_PLAIN:-$work/plain}
rm -rf "$plain"; mkdir -p "$plain/src" "$plain/build"
t0=$(now)
tar -xzf "$tarball" -C "$plain/src" --strip-components=1
for s in "${series[@]}"; do
  d=$(dirname "$s")
  while read -r p; do
    case $p in ''|'#'*) continue ;; esac
    patch -d "$plain/src" -p1 --quiet < "$d/$p"
  done < "$s"
done
t1=$(now)
/usr/bin/time -f "%e %U %S" -o "$work/plain.cfg" cmake -G Ninja -S "$plain/src" -B "$plain/build" "${flags[@]}" > "$work/plain.log" 2>&1
/usr/bin/time -f "%e %U %S" -o "$work/plain.ninja" ninja -C "$plain/build" >> "$work/plain.log" 2>&1
t2=$(now)
DESTDIR="$plain/install" cmake --install "$plain/build" >> "$work/plain.log" 2>&1
t3=$(now)
plain_cb=$(secs "$t1" "$t2")
plain_all=$(secs "$t0" "$t3")
plain_cpu=$(awk '{c+=$2+$3} END {printf "%.0f", c}' "$work/plain.cfg" "$work/plain.ninja")
echo "unpack+patch $(secs "$t0" "$t1") s, configure+build $plain_cb s (cpu $plain_cpu s), install $(secs "$t2" "$t3") s"
plain_disk=$(du -sm "$plain" | cut -f1)

echo "== mpsi assemble (sandboxed, stripped, stored; no ccache) =="
/usr/bin/time -f "%e %U %S" -o "$work/mpsi.time" \
  "$mpsi" assemble layers/mariadb-pageserver.toml -o "$work/oci" --no-ccache --json > "$work/mpsi.json"
python3 - "$work/mpsi.json" "$work/mpsi.time" "$plain_cb" "$plain_all" "$plain_cpu" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
b = next(b for b in r["builds"] if b["name"] == "mariadb")
wall, user, sys_ = map(float, open(sys.argv[2]).read().split()[-3:])
plain_cb, plain_all, plain_cpu = map(float, sys.argv[3:6])
ph = dict(b["phases"])
cb = ph["configure"] + ph["build"]
print("phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in b["phases"]))
print(f"mpsi build {b['seconds']:.1f} s, whole assemble {wall:.1f} s (cpu {user+sys_:.0f} s)")
print(f"ratio configure+build, mpsi / plain cmake+ninja: {cb/plain_cb:.3f}x ({cb:.0f} s / {plain_cb:.0f} s)")
print(f"ratio whole build (unpack..store), mpsi / plain (unpack..install): {b['seconds']/plain_all:.3f}x")
print(f"ratio cpu time, mpsi assemble / plain configure+build: {(user+sys_)/plain_cpu:.3f}x")
EOF
key=$(python3 -c "import json,sys; print(next(b['key'] for b in json.load(open(sys.argv[1]))['builds'] if b['name']=='mariadb'))" "$work/mpsi.json")
out="$MPSI_STORE/builds-v1/$key"
echo "disk: plain tree ${plain_disk} MB; mpsi store entry $(du -sm "$out" | cut -f1) MB ($(du -sm "$out/out" | cut -f1) MB installed, $(du -sm "$out/debug" | cut -f1) MB debug info); work tree removed after the build"

if [ -n "${REFERENCE_STORE:-}" ] && [ -d "$REFERENCE_STORE/builds-v1/$key" ]; then
  echo "== reproducibility: this build vs the one in $REFERENCE_STORE (other build directory) =="
  ref="$REFERENCE_STORE/builds-v1/$key"
  same=0 differ=0
  while read -r f; do
    if cmp -s "$out/out/$f" "$ref/out/$f"; then same=$((same + 1)); else differ=$((differ + 1)); echo "differs: $f"; fi
  done < <(cd "$out/out" && find . -type f | sort)
  echo "identical files: $same, differing: $differ"
  cmp "$out/out/usr/sbin/mariadbd" "$ref/out/usr/sbin/mariadbd" && echo "mariadbd: byte-identical ($(sha256sum < "$out/out/usr/sbin/mariadbd" | cut -c1-16)...)"
fi
