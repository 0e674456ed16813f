# Shared by the push and load benches: inputs that look like a real image.
# Source it; it defines functions only.

# binaries_tree DIR MB: copy the machine's own binaries and libraries into
# DIR until about MB MiB (compressible like a real image's, unlike random
# data; gzip makes them about 40% of their size).
binaries_tree() {
  local tree=$1 limit=$(($2 * 1024 * 1024)) total=0 f rel
  mkdir -p "$tree"
  while IFS= read -r f; do
    rel=${f#/}; mkdir -p "$tree/$(dirname "$rel")"; cp -L "$f" "$tree/$rel"
    total=$((total + $(stat -Lc %s "$f"))); [ "$total" -ge "$limit" ] && break
  done < <(find /usr/lib/x86_64-linux-gnu /usr/bin /usr/lib -maxdepth 1 -type f -size +20k 2>/dev/null | LC_ALL=C sort -u)
}

# tree_spec NAME TAG DIR...: an image spec with one layer per DIR (each laid
# at /<basename>, or at / when there is only one). The trees are bare
# copies, not a runtime, so the ELF closure check is off.
tree_spec() {
  local name=$1 tag=$2; shift 2
  printf '[image]\nname = "%s"\ntag = "%s"\nsource_date_epoch = 1700000000\ncheck_elf = false\n' "$name" "$tag"
  local d to
  for d in "$@"; do
    to=/; [ $# -gt 1 ] && to=/$(basename "$d")
    printf '[[layer]]\nname = "%s"\n[[layer.tree]]\nfrom = "%s"\nto = "%s"\n' "$(basename "$d")" "$d" "$to"
  done
}
