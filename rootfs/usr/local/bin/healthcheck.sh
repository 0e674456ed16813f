#!/usr/bin/env bash
# Health checks of the mariadb-pageserver image, with the options of the
# official mariadb image's healthcheck.sh that apply to it:
#
#   healthcheck.sh [options] TEST...
#
# Tests, run in the order given; the first failing one makes the exit
# status 1:
#   --connect                    the server accepts connections over the
#                                network (fails while the entrypoint's
#                                temporary, socket-only server runs)
#   --innodb_initialized         InnoDB is available
#   --innodb_buffer_pool_loaded  the buffer pool load at startup completed
#   --galera_online, --galera_ready
#                                Galera node state; this image has no Galera
#                                provider, so with wsrep_on=OFF they pass and
#                                say "not applicable"
#   --replication                replica threads and delay, as set by
#       --replication_io, --replication_sql (the thread must run),
#       --replication_seconds_behind_master=N, --replication_sql_remaining_delay=N,
#       --replication_all (every connection), --replication_name=NAME
#   --mariadbupgrade             no mariadb-upgrade is running
# Options:
#   --su=USER, --su-mysql        run as USER / mysql (util-linux setpriv)
#   --datadir=DIR                default: the server's datadir in the
#                                option files (my_print_defaults), else
#                                /var/lib/mysql
#   --no-defaults, --defaults-file=F, --defaults-extra-file=F,
#   --defaults-group-suffix=S    option files for the client; without any,
#                                DATADIR/.my-healthcheck.cnf (written by the
#                                entrypoint at initialisation) is used
set -eo pipefail

datadir=
declare -a client_defaults=() tests=()
declare -A repl=()
su_user=

fail() {
	echo "healthcheck.sh: $*" >&2
	exit 1
}

parse_args() {
	local a
	for a; do
		case $a in
		--su=*) su_user=${a#--su=} ;;
		--su-mysql) su_user=mysql ;;
		--datadir=*) datadir=${a#--datadir=} ;;
		--no-defaults | --defaults-file=* | --defaults-extra-file=* | --defaults-group-suffix=*)
			client_defaults+=("$a") ;;
		--replication_io | --replication_sql | --replication_all) repl[${a#--replication_}]=1 ;;
		--replication_seconds_behind_master=* | --replication_sql_remaining_delay=*)
			local k=${a%%=*} v=${a#*=}
			[[ $v =~ ^[0-9]+$ ]] || fail "$k needs a number of seconds, got '$v'"
			repl[${k#--replication_}]=$v
			;;
		--replication_name=*) repl[name]=${a#--replication_name=} ;;
		--connect | --innodb_initialized | --innodb_buffer_pool_loaded | --galera_online | \
			--galera_ready | --replication | --mariadbupgrade)
			tests+=("${a#--}") ;;
		*) fail "unknown option $a (see the comment at the top of $0)" ;;
		esac
	done
	[ "${#tests[@]}" -gt 0 ] || fail "no test given; for example: $0 --connect --innodb_initialized"
	if [ -z "$datadir" ]; then
		datadir=$(option_value datadir --mysqld)
		datadir=${datadir:-/var/lib/mysql}
	fi
}

# The last --NAME=value my_print_defaults reads for these groups, or
# nothing (without the option, or the tool).
option_value() {
	local name=$1
	shift
	command -v my_print_defaults >/dev/null || return 0
	my_print_defaults "$@" 2>/dev/null | sed -n "s/^--$name=//p" | tail -n 1
}

# Runs this script again as $su_user, without the --su option.
switch_user() {
	local -a rest=()
	local a
	for a; do
		case $a in --su=* | --su-mysql) ;; *) rest+=("$a") ;; esac
	done
	exec setpriv --reuid="$su_user" --regid="$su_user" --init-groups "${BASH_SOURCE[0]}" "${rest[@]}"
}

# The client with the chosen option files (they must come first).
client() {
	local -a defs=("${client_defaults[@]}")
	if [ "${#defs[@]}" -eq 0 ] && [ -r "$datadir/.my-healthcheck.cnf" ]; then
		defs=(--defaults-extra-file="$datadir/.my-healthcheck.cnf")
	fi
	# The entrypoint puts the socket into the datadir when the configured
	# directory is not writable (a container run with --user UID).
	local -a sock=()
	local configured
	configured=$(option_value socket "${defs[@]}" client client-server mariadb-client)
	if [ ! -S "${configured:-/run/mysqld/mysqld.sock}" ] && [ -S "$datadir/mysqld.sock" ]; then
		sock=(--socket="$datadir/mysqld.sock")
	fi
	mariadb "${defs[@]}" "${sock[@]}" --batch --skip-column-names "$@"
}

sql() { client -e "$1"; }

# @@skip_networking is 1 while the entrypoint's temporary server runs: not
# healthy yet. Without an answer, a plain TCP connection attempt decides:
# an authentication error still proves that the server is up.
check_connect() {
	local s
	s=$(sql 'SELECT @@skip_networking' 2>&1) || true
	case $s in
	0) return 0 ;;
	1) echo "connect: the server runs with skip_networking (initialising)" >&2 && return 1 ;;
	esac
	s=$(client --protocol=tcp -e 'SELECT 1' 2>&1) && return 0
	case $s in
	*"Access denied"*) return 0 ;;
	*) echo "connect: $s" >&2 && return 1 ;;
	esac
}

check_innodb_initialized() {
	[ "$(sql "SELECT 1 FROM information_schema.ENGINES WHERE engine='innodb' AND support IN ('YES', 'DEFAULT', 'ENABLED')")" = 1 ]
}

check_innodb_buffer_pool_loaded() {
	local s
	s=$(sql "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME='Innodb_buffer_pool_load_status'")
	[[ $s == *'load completed'* ]]
}

# wsrep_on is OFF (or unknown) in this image: the Galera checks do not
# apply, and they pass so that a drop-in healthcheck line keeps working.
wsrep_off() {
	local on
	on=$(sql 'SELECT @@GLOBAL.wsrep_on' 2>/dev/null) || on=0
	if [ "$on" != 1 ]; then
		echo "$1: not applicable (wsrep_on=OFF), passing" >&2
		return 0
	fi
	return 1
}

check_galera_online() {
	wsrep_off galera_online && return 0
	[ "$(sql "SELECT 1 FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME='WSREP_LOCAL_STATE' AND VARIABLE_VALUE='4'")" = 1 ]
}

check_galera_ready() {
	wsrep_off galera_ready && return 0
	[ "$(sql "SELECT 1 FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME='WSREP_READY' AND VARIABLE_VALUE='ON'")" = 1 ]
}

# One "Name: value" line of SHOW REPLICA STATUS\G against the thresholds.
replication_field_ok() {
	local n=$1 v=$2
	case $n in
	Slave_IO_Running) [ -z "${repl[io]:-}" ] || [ "$v" = Yes ] ;;
	Slave_SQL_Running) [ -z "${repl[sql]:-}" ] || [ "$v" = Yes ] ;;
	Seconds_Behind_Master)
		[ -z "${repl[seconds_behind_master]:-}" ] ||
			{ [ "$v" != NULL ] && [ "$v" -le "${repl[seconds_behind_master]}" ]; } ;;
	SQL_Remaining_Delay)
		[ -z "${repl[sql_remaining_delay]:-}" ] || [ "$v" = NULL ] ||
			[ "$v" -le "${repl[sql_remaining_delay]}" ] ;;
	*) return 0 ;;
	esac
}

check_replication() {
	local stmt='SHOW REPLICA STATUS' s n v
	[ -z "${repl[all]:-}" ] || stmt='SHOW ALL REPLICAS STATUS'
	[ -z "${repl[name]:-}" ] || stmt="SHOW REPLICA '${repl[name]//\'/\'\'}' STATUS"
	if ! s=$(client -e "$stmt\\G"); then
		echo "replication: $stmt failed; the healthcheck user needs REPLICA MONITOR (MARIADB_HEALTHCHECK_GRANTS)" >&2
		return 1
	fi
	[ -n "$s" ] || { echo "replication: this server is not a replica" >&2 && return 1; }
	while IFS=: read -r n v; do
		n=${n//[[:space:]]/} v=${v#"${v%%[![:space:]]*}"}
		replication_field_ok "$n" "$v" || { echo "replication: $n is $v" >&2 && return 1; }
	done <<<"$s"
}

# mariadb-upgrade holds a lock on mysql_upgrade_info while it runs.
check_mariadbupgrade() {
	local f="$datadir/mysql_upgrade_info"
	[ -r "$f" ] || return 0
	flock --exclusive --nonblock 9 9<"$f"
}

main() {
	parse_args "$@"
	if [ -n "$su_user" ] && [ "$(id -un)" != "$su_user" ]; then
		switch_user "$@"
	fi
	local t
	for t in "${tests[@]}"; do
		"check_$t" || fail "healthcheck $t failed"
	done
}

main "$@"
