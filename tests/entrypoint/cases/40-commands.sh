# Commands, root, bad configuration.
# shellcheck shell=bash
# Single quotes below keep SQL backquotes and $ for the scripts under test.
# shellcheck disable=SC2016

ep other-command MARIADB_ROOT_PASSWORD=x -- sh -c 'echo ran-as-given "$0" "$1"' a b
expect "another command runs as given" out_has "ran-as-given a b"
expect "... without any setup" no_server_started

ep bash-command PAGE_SERVER_URL=http://bad:0 -- bash -c 'echo shell'
expect "docker run IMAGE bash needs no valid server settings" out_has shell

ep help -- --help --verbose
expect "mariadbd --help runs without setup" test ! -e "$CASE/log/install-db.args"

ep mysqld-name MARIADB_ROOT_PASSWORD=x -- mysqld --port=3307
expect "mysqld is set up as mariadbd" test "$(tr '\n' ' ' <"$(final).args")" = "mysqld --port=3307 "

ep as-root FAKE_UID=0 MARIADB_ROOT_PASSWORD=x
expect "started as root it finishes as mysql" rc_is 0
expect "root re-runs the script through setpriv as mysql" \
	test "$(head -n 4 "$CASE/log/setpriv.args" | tr '\n' ' ')" = "--reuid=mysql --regid=mysql --init-groups $EP "
expect "root hands the datadir to mysql" has_line "$CASE/log/chown.args" "$CASE/data"
expect "the final server runs as mysql" test "$(cat "$(final).uid")" = 999

ep bad-config MARIADB_ROOT_PASSWORD=x FAKE_BAD_CONFIG=innodb-bufer-pool-size
expect "a configuration mariadbd rejects stops the container with its message" err_has "unknown variable 'innodb-bufer-pool-size'"

case_dir read-only-datadir
mkdir -p "$CASE/data/mysql" && chmod 0555 "$CASE/data"
if [ -w "$CASE/data" ]; then
	echo "SKIP - an unwritable datadir: every directory is writable to root here (real-server.sh checks it as an unprivileged uid)"
else
	run "$EP" -- mariadbd
	expect "a datadir the uid cannot write is refused" err_has "is not writable by uid"
fi
chmod 0755 "$CASE/data"
