# A container started with --user UID (neither root nor mysql) on a datadir
# that uid owns: the image's /run/mysqld (0755, mysql's) is not writable, so
# the socket and pid file go into the datadir. The entrypoint runs as a real
# other uid here (a root-owned directory stands for /run/mysqld), which
# only root can switch to.
# shellcheck shell=bash

if [ "$(/usr/bin/id -u)" != 0 ]; then
	count=$((count + 1))
	bad "the --user UID socket case must run as root (to switch to another uid), as CI does"
else
	case_dir user-uid
	mkdir -p "$CASE/data" "$CASE/run/mysqld"
	chmod 0755 "$T" "$CASE" "$CASE/run" "$CASE/run/mysqld"
	chown -R 4321:4321 "$CASE/data" "$CASE/log" "$CASE/initdb"
	# shellcheck disable=SC2034 # run() reads AS
	AS=(/usr/bin/setpriv --reuid=4321 --regid=4321 --clear-groups)
	run "$EP" FAKE_UID=4321 FAKE_SOCKET="$CASE/run/mysqld/mysqld.sock" MARIADB_ROOT_PASSWORD=pw -- mariadbd
	# shellcheck disable=SC2034
	AS=()
	expect "--user UID: the server starts" rc_is 0
	expect "... saying where the socket goes" out_has "$CASE/run/mysqld is not writable by uid 4321: the socket and pid file go into $CASE/data"
	for o in --socket="$CASE/data/mysqld.sock" --pid-file="$CASE/data/mysqld.pid"; do
		expect "... the temporary server gets $o" has_line "$(temp).args" "$o"
		expect "... the final server gets $o" has_line "$(final).args" "$o"
	done
	expect "... the entrypoint's clients use that socket (MYSQL_UNIX_PORT)" \
		has_line "$(final).env" "MYSQL_UNIX_PORT=$CASE/data/mysqld.sock"
	expect "... .my-healthcheck.cnf names it" has_line "$CASE/data/.my-healthcheck.cnf" "socket=$CASE/data/mysqld.sock"

	# A writable socket directory: nothing moves.
	ep user-uid-writable FAKE_UID=4321 MARIADB_ROOT_PASSWORD=pw
	expect "a writable socket directory keeps the socket" lacks "$(final).args" "--pid-file"
fi

# healthcheck.sh uses a socket it finds in the datadir when the configured
# one is absent.
hc hc-datadir-socket --connect
expect "without a socket in the datadir, the client gets no --socket" lacks "$CASE/log/mariadb.0.args" "--socket"
hc hc-datadir-socket2 --connect
python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$CASE/data/mysqld.sock"
rm -f "$CASE"/log/mariadb.*
run "$HC" -- --datadir="$CASE/data" --connect
expect "with one, healthcheck.sh connects through it" has_line "$CASE/log/mariadb.0.args" "--socket=$CASE/data/mysqld.sock"
