# MARIADB_AUTO_UPGRADE on an existing datadir.
# shellcheck shell=bash

old_datadir() {
	mkdir -p "$CASE/data/mysql"
	echo "$1" >"$CASE/data/mysql_upgrade_info"
	printf '[mariadb-client]\nuser=healthcheck\n' >"$CASE/data/.my-healthcheck.cnf"
}

case_dir upgrade
old_datadir 10.6.21-MariaDB
run "$EP" MARIADB_AUTO_UPGRADE=1 -- mariadbd
expect "auto-upgrade start succeeds" rc_is 0
expect "the upgrade server skips grant tables" has_line "$(temp).args" --skip-grant-tables
expect "the upgrade server was stopped" test -f "$(temp).stopped"
expect "the system tables are backed up first" \
	test "$(zstd -dc "$CASE/data/system_mysql_backup_10.6.21.sql.zst" 2>/dev/null)" = "-- dump of the system tables"
expect "the backup dumps the mysql database" has_line "$CASE/log/dump.args" mysql
expect "mariadb-upgrade runs" has_line "$CASE/log/upgrade.args" --upgrade-system-tables

case_dir upgrade-not-asked
old_datadir 10.6.21-MariaDB
run "$EP" -- mariadbd
expect "without MARIADB_AUTO_UPGRADE the upgrade is skipped, saying so" out_has "required, but skipped: MARIADB_AUTO_UPGRADE is not set"
expect "... and the server starts" test "$(final)" = "$CASE/log/mariadbd.0"

case_dir upgrade-no-backup
old_datadir 10.6.21-MariaDB
run "$EP" MARIADB_AUTO_UPGRADE=1 MARIADB_DISABLE_UPGRADE_BACKUP=1 -- mariadbd
expect "MARIADB_DISABLE_UPGRADE_BACKUP skips the backup" test ! -e "$CASE/log/dump.args"

case_dir up-to-date
old_datadir 10.11.9-MariaDB
run "$EP" MARIADB_AUTO_UPGRADE=1 -- mariadbd
expect "the same major.minor needs no upgrade" test ! -e "$CASE/log/upgrade.args"

case_dir missing-healthcheck
old_datadir 10.11.18-MariaDB
rm "$CASE/data/.my-healthcheck.cnf"
run "$EP" MARIADB_AUTO_UPGRADE=1 -- mariadbd
expect "a datadir without .my-healthcheck.cnf gets the healthcheck user" sql_has "CREATE OR REPLACE USER healthcheck@'localhost'"
expect "... and the file" test -f "$CASE/data/.my-healthcheck.cnf"
