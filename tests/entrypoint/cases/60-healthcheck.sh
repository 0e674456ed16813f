# healthcheck.sh against the client stand-in.
# shellcheck shell=bash

hc() {
	case_dir "$1"
	shift
	mkdir -p "$CASE/data"
	printf '[mariadb-client]\nuser=healthcheck\n' >"$CASE/data/.my-healthcheck.cnf"
	local -a a=("$@")
	[[ " ${a[*]} " == *" -- "* ]] || a=(-- "${a[@]}")
	run "$HC" "${a[@]/#--datadir=/--datadir=}" --datadir="$CASE/data"
}

hc hc-ok --connect --innodb_initialized --innodb_buffer_pool_loaded
expect "healthy server passes --connect --innodb_initialized --innodb_buffer_pool_loaded" rc_is 0
expect "the client reads .my-healthcheck.cnf" has_line "$CASE/log/mariadb.0.args" "--defaults-extra-file=$CASE/data/.my-healthcheck.cnf"

hc hc-init FAKE_SKIP_NETWORKING=1 -- --connect
expect "--connect fails while the server skips networking (initialising)" rc_is 1
expect "... saying which test failed" err_has "healthcheck connect failed"

hc hc-down FAKE_DOWN=1 -- --connect
expect "--connect fails when the server does not answer" rc_is 1

hc hc-bp FAKE_BP_STATUS='Loading buffer pool(s) from /var/lib/mysql/ib_buffer_pool' -- --innodb_buffer_pool_loaded
expect "--innodb_buffer_pool_loaded fails while loading" rc_is 1

hc hc-galera --galera_online
expect "--galera_online passes with wsrep off" rc_is 0
expect "... and says it does not apply" err_has "galera_online: not applicable (wsrep_on=OFF)"

hc hc-nodefaults --no-defaults --connect
expect "--no-defaults replaces the healthcheck credentials" has_line "$CASE/log/mariadb.0.args" --no-defaults
expect "... (no .my-healthcheck.cnf)" lacks "$CASE/log/mariadb.0.args" "my-healthcheck"

hc hc-deffile --defaults-file=/etc/other.cnf --connect
expect "--defaults-file is passed first" test "$(head -n 1 "$CASE/log/mariadb.0.args")" = --defaults-file=/etc/other.cnf

status=$'*************************** 1. row ***************************\n    Slave_IO_Running: Yes\n   Slave_SQL_Running: No\nSeconds_Behind_Master: 12\n SQL_Remaining_Delay: NULL'
hc hc-repl-io FAKE_REPLICA_STATUS="$status" -- --replication_io --replication_seconds_behind_master=20 --replication
expect "--replication with --replication_io and a lag under the limit passes" rc_is 0
hc hc-repl-sql FAKE_REPLICA_STATUS="$status" -- --replication_sql --replication
expect "--replication_sql fails when the SQL thread stopped" rc_is 1
expect "... naming the field" err_has "replication: Slave_SQL_Running is No"
hc hc-repl-lag FAKE_REPLICA_STATUS="$status" -- --replication_seconds_behind_master=5 --replication
expect "--replication_seconds_behind_master fails over the limit" rc_is 1
hc hc-repl-none -- --replication
expect "--replication fails on a server that is not a replica" rc_is 1
hc hc-repl-name FAKE_REPLICA_STATUS="$status" -- --replication_name=east --replication_all --replication
expect "--replication_name asks for that connection" has_line "$CASE/log/mariadb.0.sql" "SHOW REPLICA 'east' STATUS\\G"

hc hc-upgrade --mariadbupgrade
expect "--mariadbupgrade passes when no upgrade runs" rc_is 0
echo 10.11.18-MariaDB >"$CASE/data/mysql_upgrade_info"
exec 8<"$CASE/data/mysql_upgrade_info" && flock 8
run "$HC" -- --datadir="$CASE/data" --mariadbupgrade
expect "--mariadbupgrade fails while mysql_upgrade_info is locked" rc_is 1
exec 8<&-

hc hc-su FAKE_UID=0 -- --su-mysql --connect
expect "--su-mysql re-runs as mysql" test "$(head -n 4 "$CASE/log/setpriv.args" | tr '\n' ' ')" = "--reuid=mysql --regid=mysql --init-groups $HC "
expect "... without the --su option" lacks "$CASE/log/setpriv.args" "--su-mysql"

hc hc-unknown --bogus
expect "an unknown option is refused" err_has "unknown option --bogus"
hc hc-none
expect "no test given is refused" err_has "no test given"
