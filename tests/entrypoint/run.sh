#!/usr/bin/env bash
# Tests of the image's docker-entrypoint.sh and healthcheck.sh logic that need
# no image: the scripts run with stand-ins for the MariaDB programs (and for
# id/setpriv/chown, to take the root path anywhere) from tests/entrypoint/stubs,
# which record what they were given into a temporary directory. What needs
# the real server is tested against the image (see docs/image.md).
#
# Usage: tests/entrypoint/run.sh   (exit status 1 when a check fails)
set -euo pipefail
shopt -s nullglob

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
EP="$ROOT/rootfs/usr/local/bin/docker-entrypoint.sh"
# shellcheck disable=SC2034 # used by cases/*.sh
HC="$ROOT/rootfs/usr/local/bin/healthcheck.sh"
STUBS="$HERE/stubs"
T=$(mktemp -d "${TMPDIR:-/tmp}/entrypoint-test.XXXXXX")
[ -n "${KEEP:-}" ] || trap 'rm -rf "$T"' EXIT
fails=0 count=0 cases=0 CASE=
# A command prefix for `run` (a case sets it to run as another uid).
AS=()

bad() {
	echo "FAIL - $1"
	fails=$((fails + 1))
	if [ -n "$CASE" ] && [ -f "$CASE/err" ]; then
		sed 's/^/    stderr: /' "$CASE/err" | tail -n 8
	fi
}
# expect DESCRIPTION COMMAND...: one check.
expect() {
	local desc=$1
	shift
	count=$((count + 1))
	if "$@"; then echo "ok   - $desc"; else bad "$desc"; fi
}
rc_is() { [ "$(cat "$CASE/rc")" = "$1" ]; }
err_has() { grep -qF -- "$1" "$CASE/err"; }
out_has() { grep -qF -- "$1" "$CASE/out"; }
has_line() { [ -f "$1" ] && grep -qxF -- "$2" "$1"; }
lacks() { ! grep -rqF -- "$2" "$1"; }
# The record of the final (not temporary) mariadbd start, or "".
final() {
	local f
	for f in "$CASE"/log/mariadbd.*.final; do printf '%s' "${f%.final}"; done
}
temp() { printf '%s' "$CASE/log/mariadbd.0"; }
no_server_started() { ! compgen -G "$CASE/log/mariadbd.*.args" >/dev/null && [ ! -e "$CASE/log/install-db.args" ]; }
# All SQL the client stand-in received, in order.
all_sql() { local n; for n in $(seq 0 200); do [ -f "$CASE/log/mariadb.$n.sql" ] && cat "$CASE/log/mariadb.$n.sql"; done; true; }
sql_has() { all_sql | grep -qF -- "$1"; }
# The last SQL batch the client stand-in received.
last_sql() { local n; for n in $(seq 200 -1 0); do [ -f "$CASE/log/mariadb.$n.sql" ] && cat "$CASE/log/mariadb.$n.sql" && return 0; done; }
last_sql_has() { last_sql | grep -qF -- "$1"; }

# case_dir NAME: a fresh case directory (datadir, initdb dir, log).
case_dir() {
	cases=$((cases + 1))
	CASE="$T/$cases-$1"
	mkdir -p "$CASE/log" "$CASE/initdb"
}
# run SCRIPT [VAR=value...] -- ARGS...: runs SCRIPT in $CASE with a clean
# environment plus the variables; stdout, stderr and status go to $CASE.
run() {
	local script=$1
	shift
	local -a vars=()
	while [ "$1" != -- ]; do vars+=("$1") && shift; done
	shift
	set +e
	env -i PATH="$STUBS:/usr/bin:/bin" HOME="$CASE" FAKE_LOG="$CASE/log" \
		FAKE_DATADIR="$CASE/data" MPSI_INITDB_DIR="$CASE/initdb" "${vars[@]}" \
		"${AS[@]}" timeout 60 bash "$script" "$@" >"$CASE/out" 2>"$CASE/err" </dev/null
	echo $? >"$CASE/rc"
	set -e
}
# ep NAME [VAR=value...] [-- ARGS...]: a fresh case running the entrypoint.
ep() {
	case_dir "$1"
	shift
	local -a a=("$@")
	[[ " ${a[*]} " == *" -- "* ]] || a+=(-- mariadbd)
	run "$EP" "${a[@]}"
}

for t in "$HERE"/cases/*.sh; do
	# shellcheck disable=SC1090
	. "$t"
done

echo "$count checks, $fails failed"
[ "$fails" -eq 0 ]
