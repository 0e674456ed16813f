#!/usr/bin/env bash
# Rewrites tests/golden/*.json from what mpsi produces now. Run it only when
# a change of output bytes is intended (a format change, a dependency bump
# that changes compression output), and say so in the commit message: every
# image digest mpsi produces changes with it.
set -euo pipefail
cd "$(dirname "$0")/.."
MPSI_UPDATE_GOLDEN=1 cargo test --locked --test golden --test build -- golden
git --no-pager diff --stat -- tests/golden
