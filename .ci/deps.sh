# Sourced by .ci/main and .ci/test: installs Debian 12 packages that are
# missing (as root, or through sudo), and checks for the Rust toolchain.
need_debian_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${missing[*]}" >&2
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# apt's package lists, which `mpsi lock --runtime` (and its test) read.
need_apt_lists() {
  apt-cache show --no-all-versions bash 2>/dev/null | grep -q '^Filename: ' && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
}

# pyspdxtools, the SPDX project's own validator the SBOM test checks with,
# in a venv of its own (Debian 12's pip refuses system-wide installs);
# tests/sbom.rs finds it through MPSI_TEST_PYSPDXTOOLS.
SPDX_TOOLS_VERSION=0.8.5
need_pyspdxtools() {
  need_debian_packages python3 python3-venv
  local venv="${XDG_CACHE_HOME:-$HOME/.cache}/mpsi-ci/spdx-tools-$SPDX_TOOLS_VERSION"
  if [ ! -x "$venv/bin/pyspdxtools" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "spdx-tools==$SPDX_TOOLS_VERSION"
  fi
  export MPSI_TEST_PYSPDXTOOLS="$venv/bin/pyspdxtools"
}

need_rust() {
  if ! command -v cargo >/dev/null; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null || {
    echo "cargo not found: install the Rust toolchain (rustup, Rust 1.85 or newer) first" >&2
    exit 1
  }
}

# What `mpsi assemble` of layers/mariadb-pageserver.toml needs to build
# MariaDB: the tools and -dev packages of [build.mariadb] in mpsi.lock (mpsi
# checks them again up front and prints the apt-get line if one is missing),
# plus util-linux for the network-less sandbox and ccache.
MPSI_BUILD_PACKAGES=(ca-certificates util-linux ccache cmake ninja-build bison
  gcc g++ libc6-dev libstdc++-12-dev patch binutils pkg-config
  libssl-dev zlib1g-dev libpcre2-dev libfmt-dev libncurses-dev liburing-dev
  libedit-dev libaio-dev)
