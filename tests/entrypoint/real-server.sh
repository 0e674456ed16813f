#!/usr/bin/env bash
# docker-entrypoint.sh and healthcheck.sh against real MariaDB 10.11
# binaries, without an image: the entrypoint runs as an unprivileged user on
# a temporary datadir, on 127.0.0.1 and a free port. The stock server has no
# Page Server options; those are tested against the image.
#
# Usage: MARIADB_ROOT=DIR tests/entrypoint/real-server.sh
#   DIR holds usr/sbin/mariadbd and usr/bin/mariadb..., for example Debian
#   12's packages unpacked (nothing is installed on the machine):
#     apt-get download mariadb-server-core mariadb-client-core mariadb-client
#     for f in *.deb; do dpkg-deb -x "$f" DIR; done
# Exit status: 0 all checks passed, 1 a check failed, 2 no MariaDB given.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
EP="$ROOT/rootfs/usr/local/bin/docker-entrypoint.sh"
HC="$ROOT/rootfs/usr/local/bin/healthcheck.sh"
R=${MARIADB_ROOT:-}
if [ -z "$R" ] || [ ! -x "$R/usr/sbin/mariadbd" ]; then
	echo "real-server.sh: set MARIADB_ROOT to a directory with usr/sbin/mariadbd (see the comment at the top)" >&2
	exit 2
fi
R=$(cd "$R" && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/entrypoint-real.XXXXXX")
chmod 0755 "$T"
mkdir -p "$T/data" "$T/run" "$T/initdb"
PID=
cleanup() {
	if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -KILL "$PID"; fi
	[ -n "${KEEP:-}" ] || rm -rf "$T"
}
trap cleanup EXIT
fails=0 count=0
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# As root, everything runs as nobody: mariadbd refuses root without --user.
AS=()
if [ "$(id -u)" = 0 ]; then
	chown -R 65534:65534 "$T"
	AS=(setpriv --reuid=65534 --regid=65534 --clear-groups)
fi
PATHS="$R/usr/sbin:$R/usr/bin:/usr/bin:/bin"
SERVER=(mariadbd --no-defaults --datadir="$T/data" --socket="$T/run/mysqld.sock"
	--pid-file="$T/run/mysqld.pid" --port="$PORT" --bind-address=127.0.0.1
	--basedir="$R/usr" --lc-messages-dir="$R/usr/share/mysql"
	--character-sets-dir="$R/usr/share/mysql/charsets" --innodb-buffer-pool-size=32M)

expect() {
	local desc=$1
	shift
	count=$((count + 1))
	if "$@"; then echo "ok   - $desc"; else echo "FAIL - $desc" && fails=$((fails + 1)); fi
}
fails() { ! "$@"; }
as_user() { "${AS[@]}" env -i PATH="$PATHS" HOME="$T" "$@"; }
client() { "$R/usr/bin/mariadb" --no-defaults -h127.0.0.1 -P"$PORT" --batch --skip-column-names "$@"; }
healthy() { as_user bash "$HC" --datadir="$T/data" "$@" >>"$T/hc.log" 2>&1; }

# start LOG VAR=value...: the entrypoint in the background, until healthy.
start() {
	local log=$1
	shift
	"${AS[@]}" env -i PATH="$PATHS" HOME="$T" MPSI_INITDB_DIR="$T/initdb" "$@" \
		bash "$EP" "${SERVER[@]}" >"$T/$log" 2>&1 &
	PID=$!
	local _
	for _ in $(seq 240); do
		healthy --connect --innodb_initialized && return 0
		kill -0 "$PID" 2>/dev/null || break
		sleep 0.5
	done
	echo "FAIL - the server did not become healthy; its log:" && tail -n 30 "$T/$log"
	exit 1
}
# stop: SIGTERM, as docker stop sends; the status the server exited with.
stop() {
	kill -TERM "$PID"
	local rc=0
	wait "$PID" || rc=$?
	PID=
	return "$rc"
}

printf 'CREATE TABLE t (n INT);\nINSERT INTO t VALUES (1);\n' | gzip >"$T/initdb/10-table.sql.gz"
start first.log MARIADB_ROOT_PASSWORD=rootpw MARIADB_DATABASE=shop MARIADB_USER=app MARIADB_PASSWORD=apppw
expect "first start: healthcheck.sh --connect --innodb_initialized passes" true
expect "root logs in with MARIADB_ROOT_PASSWORD" test "$(client -uroot -prootpw -e 'SELECT 1')" = 1
expect "the server is MariaDB 10.11" bash -c "'$R/usr/bin/mariadb' --no-defaults -h127.0.0.1 -P$PORT -uroot -prootpw -N -e 'SELECT @@version' | grep -q '^10\.11\.'"
expect "the initdb .sql.gz ran in MARIADB_DATABASE, as the user sees" test "$(client -uapp -papppw shop -e 'SELECT COUNT(*) FROM t')" = 1
expect "time zones are loaded" test "$(client -uroot -prootpw -e 'SELECT COUNT(*) > 100 FROM mysql.time_zone_name')" = 1
expect "root@127.0.0.1 is gone, root@% exists" test "$(client -uroot -prootpw -e "SELECT GROUP_CONCAT(Host ORDER BY Host) FROM mysql.user WHERE User='root'")" = "%,localhost"
expect "the healthcheck accounts exist" test "$(client -uroot -prootpw -e "SELECT COUNT(*) FROM mysql.user WHERE User='healthcheck'")" = 3
expect "the entrypoint's PID is now mariadbd" test "$(cat "/proc/$PID/comm")" = mariadbd
expect "mariadbd's environment holds no password" bash -c "! tr '\\0' '\\n' </proc/$PID/environ | grep -qE 'rootpw|apppw|PASSWORD'"
expect "--galera_online passes as not applicable" healthy --galera_online
expect "--mariadbupgrade passes" healthy --mariadbupgrade
loaded=1
for _ in $(seq 60); do healthy --innodb_buffer_pool_loaded && loaded=0 && break; sleep 0.5; done
expect "--innodb_buffer_pool_loaded passes once the load completed" test "$loaded" = 0
expect "--replication fails on a server that is not a replica" fails healthy --replication
printf '[client]\nuser=healthcheck\npassword=wrong\nport=%s\nprotocol=tcp\n' "$PORT" >"$T/wrong.cnf"
chmod 0644 "$T/wrong.cnf"
expect "--connect counts an access denied as up" healthy --defaults-file="$T/wrong.cnf" --connect
expect "--innodb_initialized fails without access" fails healthy --defaults-file="$T/wrong.cnf" --innodb_initialized
expect "SIGTERM stops the server with status 0" stop
expect "... after a clean shutdown" grep -q 'Shutdown complete' "$T/first.log"

start second.log
expect "second start: no password needed, no initialisation" bash -c "! grep -q 'Initializing database files' '$T/second.log'"
expect "the initdb file did not run again" test "$(client -uapp -papppw shop -e 'SELECT COUNT(*) FROM t')" = 1
expect "no crash recovery was needed" bash -c "! grep -qi 'crash recovery' '$T/second.log'"
stop

echo 10.6.1-MariaDB >"$T/data/mysql_upgrade_info"
start upgrade.log MARIADB_AUTO_UPGRADE=1
expect "MARIADB_AUTO_UPGRADE backed up the system tables" bash -c "zstd -dc '$T/data/system_mysql_backup_10.6.1.sql.zst' | grep -q 'CREATE TABLE .*global_priv'"
expect "... and upgraded them" grep -q '^10\.11\.' "$T/data/mysql_upgrade_info"
stop

# As another uid, a datadir it cannot write stops the container early.
refused() {
	as_user MARIADB_ROOT_PASSWORD=x bash "$EP" "${SERVER[@]}" "$1" >"$T/refused.log" 2>&1 && return 1
	grep -q "$2 is not writable by uid" "$T/refused.log"
}
expect "a datadir the uid cannot write is refused, naming it" refused --datadir=/etc "The datadir /etc"

# A socket directory it cannot write (the image's /run/mysqld, 0755 and
# mysql's, for a container run with --user UID): the socket and pid file go
# into the datadir, where healthcheck.sh finds the socket.
printf '[client]\nuser=root\npassword=sockpw\n' >"$T/sock.cnf"
sock_start() {
	"${AS[@]}" env -i PATH="$PATHS" HOME="$T" MPSI_INITDB_DIR="$T/no-initdb" MARIADB_ROOT_PASSWORD=sockpw \
		bash "$EP" "${SERVER[@]}" --datadir="$T/data-sock" --socket=/etc/t.sock >"$T/sock.log" 2>&1 &
	PID=$!
	local _
	for _ in $(seq 240); do
		as_user bash "$HC" --datadir="$T/data-sock" --defaults-extra-file="$T/sock.cnf" \
			--connect --innodb_initialized >>"$T/hc.log" 2>&1 && return 0
		kill -0 "$PID" 2>/dev/null || break
		sleep 0.5
	done
	echo "FAIL - the server with its socket in the datadir did not become healthy; its log:" && tail -n 30 "$T/sock.log"
	exit 1
}
sock_start
expect "an unwritable socket directory moves the socket into the datadir" test -S "$T/data-sock/mysqld.sock"
expect "... and the pid file" test "$(cat "$T/data-sock/mysqld.pid")" = "$PID"
expect "... saying so" grep -q "/etc is not writable by uid .*: the socket and pid file go into $T/data-sock" "$T/sock.log"
expect "... and the client reaches the server there" \
	test "$("$R/usr/bin/mariadb" --no-defaults --socket="$T/data-sock/mysqld.sock" -uroot -psockpw -N -e 'SELECT 1')" = 1
expect "... and SIGTERM stops it cleanly" stop

# Started as root: the entrypoint hands a new datadir to mysql and runs the
# server as mysql. The user exists only in this test's mount namespace,
# whose /etc/passwd and /etc/group are copies with it added.
root_start() {
	cp /etc/passwd "$T/passwd" && echo 'mysql:x:59999:59999::/nonexistent:/usr/sbin/nologin' >>"$T/passwd"
	cp /etc/group "$T/group" && echo 'mysql:x:59999:' >>"$T/group"
	SERVER[2]=--datadir="$T/data-root"
	# shellcheck disable=SC2016 # expanded by the inner bash
	unshare --mount --propagation private bash -c \
		'mount --bind "$1" /etc/passwd && mount --bind "$2" /etc/group && shift 2 && exec "$@"' \
		_ "$T/passwd" "$T/group" env -i PATH="$PATHS" HOME=/root MARIADB_ROOT_PASSWORD=rootpw MARIADB_DATABASE=shop \
		MPSI_INITDB_DIR="$T/initdb" bash "$EP" "${SERVER[@]}" >"$T/root.log" 2>&1 &
	PID=$!
	local _
	for _ in $(seq 240); do
		env PATH="$PATHS" bash "$HC" --datadir="$T/data-root" --connect --innodb_initialized 2>/dev/null && return 0
		kill -0 "$PID" 2>/dev/null || break
		sleep 0.5
	done
	echo "FAIL - the server started as root did not become healthy; its log:" && tail -n 30 "$T/root.log"
	exit 1
}
if [ "$(id -u)" = 0 ]; then
	root_start
	expect "started as root, the server runs as mysql" test "$(awk '/^Uid:/ { print $2 }' "/proc/$PID/status")" = 59999
	expect "... and the entrypoint handed the datadir to mysql" test "$(stat -c %u "$T/data-root/mysql")" = 59999
	expect "... and .my-healthcheck.cnf is mysql's" test "$(stat -c %u:%a "$T/data-root/.my-healthcheck.cnf")" = 59999:600
	expect "... and SIGTERM stops it cleanly" stop
else
	echo "SKIP - the root start (needs root for its own mount namespace)"
fi

# The option-file parser reads the API key from the pipe on descriptor 3.
out=$(bash -c '. "$1"; PS_ARGS=(); PS_KEY=tok-123; docker_exec_server "$2/usr/sbin/mariadbd" --print-defaults' _ "$EP" "$R")
expect "mariadbd reads --defaults-extra-file=/dev/fd/3 (the API key)" grep -q -- '--innodb-safekeeper-api-key=tok-123' <<<"$out"

echo "$count checks, $fails failed"
[ "$fails" -eq 0 ]
