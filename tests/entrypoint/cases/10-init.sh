# First start on an empty datadir, and the start after it.
# shellcheck shell=bash
# Single quotes below keep SQL backquotes and $ for the scripts under test.
# shellcheck disable=SC2016

ep first-start MARIADB_ROOT_PASSWORD='s3cr3t pw' MARIADB_DATABASE=shop \
	MARIADB_USER=app MARIADB_PASSWORD=apppw
expect "first start succeeds" rc_is 0
for o in --auth-root-authentication-method=normal --skip-test-db --cross-bootstrap \
	--datadir="$CASE/data" --loose-innodb-page-server-enabled=OFF; do
	expect "mariadb-install-db gets $o" has_line "$CASE/log/install-db.args" "$o"
done
for o in --skip-networking --socket="$CASE/log/mysqld.sock" --loose-wsrep_on=OFF \
	--skip-log-bin --loose-innodb-page-server-enabled=OFF; do
	expect "the temporary server gets $o" has_line "$(temp).args" "$o"
done
expect "the temporary server was stopped with SIGTERM" test -f "$(temp).stopped"
expect "the final server is started" test -n "$(final)"
expect "the final server has only the command's arguments" \
	test "$(cat "$(final).args")" = mariadbd
expect "time zones are loaded" sql_has "-- tzinfo --skip-write-binlog /usr/share/zoneinfo"
expect "the root password is set" sql_has "SET PASSWORD FOR 'root'@'localhost'= PASSWORD('s3cr3t pw');"
expect "root@% is created (MARIADB_ROOT_HOST default)" sql_has "CREATE USER 'root'@'%' IDENTIFIED BY 's3cr3t pw';"
expect "the database is created" sql_has 'CREATE DATABASE IF NOT EXISTS `shop`;'
expect "the user is created" sql_has "CREATE USER 'app'@'%' IDENTIFIED BY 'apppw';"
expect "the user gets the database" sql_has "GRANT ALL ON \`shop\`.* TO 'app'@'%';"
expect "healthcheck users are created" sql_has "GRANT USAGE ON *.* TO healthcheck@'localhost';"
expect ".my-healthcheck.cnf is 0600" test "$(stat -c %a "$CASE/data/.my-healthcheck.cnf" 2>/dev/null)" = 600
expect ".my-healthcheck.cnf names the healthcheck user" has_line "$CASE/data/.my-healthcheck.cnf" user=healthcheck

# The same datadir again: no initialisation, no password needed.
echo "10.11.18-MariaDB" >"$CASE/data/mysql_upgrade_info"
rm -f "$CASE"/log/*
run "$EP" -- mariadbd
expect "second start succeeds without a password" rc_is 0
expect "second start does not initialise" test ! -e "$CASE/log/install-db.args"
expect "second start runs no temporary server" test "$(final)" = "$CASE/log/mariadbd.0"

ep no-password
expect "a fresh datadir without a password is refused" rc_is 1
expect "the refusal says what to set" err_has "Database is uninitialized and password option is not specified"
expect "the refusal names the variables" err_has "MARIADB_ROOT_PASSWORD, MARIADB_ROOT_PASSWORD_HASH, MARIADB_ALLOW_EMPTY_ROOT_PASSWORD and MARIADB_RANDOM_ROOT_PASSWORD"
expect "no server ran" no_server_started

ep allow-empty MARIADB_ALLOW_EMPTY_ROOT_PASSWORD=1
expect "MARIADB_ALLOW_EMPTY_ROOT_PASSWORD starts" rc_is 0
expect "no root password is set" bash -c "! grep -rqF 'SET PASSWORD' '$CASE'/log/*.sql"

ep allow-empty-alias MYSQL_ALLOW_EMPTY_PASSWORD=yes
expect "MYSQL_ALLOW_EMPTY_PASSWORD (the older alias) starts" rc_is 0

ep random MARIADB_RANDOM_ROOT_PASSWORD=1
expect "MARIADB_RANDOM_ROOT_PASSWORD starts" rc_is 0
expect "the generated password is printed once" test "$(grep -c 'GENERATED ROOT PASSWORD: [A-Za-z0-9]\{32\}$' "$CASE/out")" = 1
pw=$(sed -n 's/.*GENERATED ROOT PASSWORD: //p' "$CASE/out")
expect "the generated password is the one set" sql_has "PASSWORD('$pw')"
expect "the generated password is not in the server's environment" lacks "$(final).env" "$pw"

ep root-hash MARIADB_ROOT_PASSWORD_HASH='*E6CC90B878B948C35E92B003C792C46C58C4AF40' MARIADB_ROOT_HOST=10.0.0.%
expect "MARIADB_ROOT_PASSWORD_HASH starts" rc_is 0
expect "root@ROOT_HOST gets the hash" sql_has "CREATE USER 'root'@'10.0.0.%' IDENTIFIED BY PASSWORD '*E6CC90B878B948C35E92B003C792C46C58C4AF40';"
expect "root@localhost gets the hash last" last_sql_has "SET PASSWORD FOR 'root'@'localhost'= '*E6CC90B878B948C35E92B003C792C46C58C4AF40';"

ep hash-and-password MARIADB_ROOT_PASSWORD_HASH='*E6CC' MARIADB_ROOT_PASSWORD=x
expect "a root hash with a password is refused" rc_is 1
expect "the refusal names both" err_has "MARIADB_ROOT_PASSWORD_HASH cannot be combined with MARIADB_ROOT_PASSWORD"

ep user-no-password MARIADB_ROOT_PASSWORD=x MARIADB_USER=app
expect "MARIADB_USER without a password is refused" rc_is 1

ep skip-tz MARIADB_ROOT_PASSWORD=x MARIADB_INITDB_SKIP_TZINFO=1
expect "MARIADB_INITDB_SKIP_TZINFO skips the time zones" bash -c "! grep -rqF 'tzinfo' '$CASE'/log/"

ep grants MARIADB_ROOT_PASSWORD=x MARIADB_HEALTHCHECK_GRANTS='REPLICA MONITOR'
expect "MARIADB_HEALTHCHECK_GRANTS reaches the healthcheck user" sql_has "GRANT REPLICA MONITOR ON *.* TO healthcheck@'127.0.0.1';"

# /docker-entrypoint-initdb.d: order, kinds, the root password, the database.
case_dir initdb
echo "SELECT 'one';" >"$CASE/initdb/01-one.sql"
echo "SELECT 'two';" | gzip >"$CASE/initdb/02-two.sql.gz"
printf 'echo "sourced $MARIADB_DATABASE" >"$FAKE_LOG/03.ran"\ndocker_process_sql --dont-use-mysql-root-password <<<"SELECT '"'three'"';"\n' >"$CASE/initdb/03-sourced.sh"
printf '#!/bin/sh\necho executed >"$FAKE_LOG/04.ran"\n' >"$CASE/initdb/04-exec.sh"
chmod +x "$CASE/initdb/04-exec.sh"
echo "SELECT 'five';" | xz >"$CASE/initdb/05-five.sql.xz"
echo "SELECT 'six';" | zstd -q >"$CASE/initdb/06-six.sql.zst"
echo "not sql" >"$CASE/initdb/07-notes.txt"
run "$EP" MARIADB_ROOT_PASSWORD=rootpw MARIADB_DATABASE=shop -- mariadbd
expect "initdb start succeeds" rc_is 0
expect "initdb .sql, .sql.gz, .sh, .sql.xz, .sql.zst run in order" \
	test "$(all_sql | grep -o "^SELECT '[a-z]*'" | tr '\n' ' ')" = "SELECT 'one' SELECT 'two' SELECT 'three' SELECT 'five' SELECT 'six' "
expect "initdb non-executable .sh is sourced (sees the script's variables)" has_line "$CASE/log/03.ran" "sourced shop"
expect "initdb executable .sh is executed" has_line "$CASE/log/04.ran" executed
expect "initdb ignores other files, saying so" err_has "ignoring $CASE/initdb/07-notes.txt"
n=$(grep -lF "SELECT 'one'" "$CASE"/log/mariadb.*.sql | head -n 1)
expect "initdb SQL runs as root with the root password" test "$(cat "${n%.sql}.pwd")" = rootpw
expect "initdb SQL runs in MARIADB_DATABASE" has_line "${n%.sql}.args" --database=shop
n=$(grep -lF "SELECT 'three'" "$CASE"/log/mariadb.*.sql | head -n 1)
expect "a sourced .sh can call docker_process_sql --dont-use-mysql-root-password" test "$(cat "${n%.sql}.pwd")" = ""
rm -f "$CASE"/log/* && run "$EP" MARIADB_ROOT_PASSWORD=rootpw -- mariadbd
expect "initdb files do not run on the next start" bash -c "! compgen -G '$CASE/log/mariadb.*' >/dev/null"
