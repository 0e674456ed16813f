#!/usr/bin/env bash
# Builds mariadb-pageserver:latest (the seed's script), without Docker's
# builder: mpsi fetches the pinned inputs, builds MariaDB natively with the
# Page Server patches (cached in mpsi's store after the first time),
# assembles the OCI image into out/oci and streams it into the local Docker
# engine. Where no engine answers, it leaves out/<name>-<tag>.tar, a
# docker-archive to `docker load -i` elsewhere.
#
#   ./build-mariadb-image.sh
#   IMAGE_NAME=my-mariadb IMAGE_TAG=v1.0 ./build-mariadb-image.sh
#   MPSI_DRY_RUN=1 ./build-mariadb-image.sh   # fetch, then say what assemble would do
set -euo pipefail
cd "$(dirname "$0")"
name="${IMAGE_NAME:-mariadb-pageserver}"
tag="${IMAGE_TAG:-latest}"
mpsi="${CARGO_TARGET_DIR:-target}/release/mpsi"
[ -x "$mpsi" ] || cargo build --release --locked
"$mpsi" fetch
if [ "${MPSI_DRY_RUN:-}" = 1 ]; then
  exec "$mpsi" assemble layers/mariadb-pageserver.toml -o out/oci --tag "$tag" --name "$name" --dry-run
fi
"$mpsi" assemble layers/mariadb-pageserver.toml -o out/oci --tag "$tag" --name "$name"
if "$mpsi" load -l out/oci --tag "$tag"; then
  exit 0
fi
archive="out/${name//\//_}-${tag}.tar"
"$mpsi" export -l out/oci --tag "$tag" --format docker-archive -o "$archive"
echo "no Docker engine answered: the image is in $archive (docker load -i $archive)" >&2
