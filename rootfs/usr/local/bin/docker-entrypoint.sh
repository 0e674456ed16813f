#!/usr/bin/env bash
# Entrypoint of the mariadb-pageserver image.
#
# Written for this project; it follows the documented contract of the
# official `mariadb` image's entrypoint (MARIADB_*/MYSQL_* variables, *_FILE
# secrets, /docker-entrypoint-initdb.d, healthcheck user) and adds
# PAGE_SERVER_URL, SAFEKEEPER_URL and SAFEKEEPER_API_KEY. docs/image.md has
# the table of variables.
#
# Runtime packages it needs besides MariaDB itself (mariadbd, mariadb,
# mariadb-install-db, mariadb-tzinfo-to-sql, mariadb-dump, mariadb-upgrade,
# my_print_defaults): bash, coreutils, util-linux (setpriv, to drop from root
# to mysql: gosu is not in Debian's minimal set), findutils, sed, gawk or
# mawk, tzdata (time zone tables), gzip, xz-utils and zstd (compressed
# initdb files, upgrade backups).
set -eo pipefail
shopt -s nullglob

# The init directory; tests point it at a temporary directory.
INITDB_DIR=${MPSI_INITDB_DIR:-/docker-entrypoint-initdb.d}

# Variables cleared before mariadbd starts: the secrets, and every variable
# file_env read (it adds them), which are the entrypoint's and not the
# server's.
CONSUMED_VARS=(
	MARIADB_ROOT_PASSWORD MYSQL_ROOT_PASSWORD
	MARIADB_ROOT_PASSWORD_HASH MYSQL_ROOT_PASSWORD_HASH
	MARIADB_PASSWORD MYSQL_PASSWORD
	MARIADB_PASSWORD_HASH MYSQL_PASSWORD_HASH
	SAFEKEEPER_API_KEY MYSQL_PWD MYSQL_ALLOW_EMPTY_PASSWORD
)

mysql_log() {
	local type=$1
	shift
	printf '%s [%s] [Entrypoint]: %s\n' "$(date --rfc-3339=seconds)" "$type" "$*"
}
mysql_note() { mysql_log Note "$@"; }
mysql_warn() { mysql_log Warn "$@" >&2; }
mysql_error() {
	mysql_log ERROR "$@" >&2
	exit 1
}

# file_env NAME [DEFAULT]: NAME is the MARIADB_ name; its MYSQL_ alias and
# both *_FILE forms are read too. The MARIADB_ name wins over the alias;
# setting a variable and its _FILE form together is an error. Exports both
# names with the value and unsets the _FILE forms.
file_env() {
	local var=$1 def=${2:-}
	local alias="MYSQL_${var#MARIADB_}" val='' n
	for n in "$var" "$alias"; do
		local fileVar="${n}_FILE"
		if [ -n "${!n:-}" ] && [ -n "${!fileVar:-}" ]; then
			mysql_error "Both $n and $fileVar are set (but are exclusive); set only one of them"
		fi
	done
	for n in "$var" "$alias"; do
		local fileVar="${n}_FILE"
		if [ -z "$val" ] && [ -n "${!n:-}" ]; then
			val=${!n}
		elif [ -z "$val" ] && [ -n "${!fileVar:-}" ]; then
			[ -r "${!fileVar}" ] || mysql_error "$fileVar=${!fileVar}: the file cannot be read"
			val=$(<"${!fileVar}")
		fi
		unset "$fileVar"
	done
	val=${val:-$def}
	export "$var=$val" "$alias=$val"
	CONSUMED_VARS+=("$var" "$alias")
}

# Reads every supported variable (and its alias and _FILE forms).
docker_file_env_all() {
	file_env MARIADB_ROOT_HOST '%'
	local v
	for v in ROOT_PASSWORD ROOT_PASSWORD_HASH ALLOW_EMPTY_ROOT_PASSWORD \
		RANDOM_ROOT_PASSWORD DATABASE USER PASSWORD PASSWORD_HASH \
		INITDB_SKIP_TZINFO AUTO_UPGRADE DISABLE_UPGRADE_BACKUP; do
		file_env "MARIADB_$v"
	done
	file_env MARIADB_HEALTHCHECK_GRANTS USAGE
	# The official image's older alias of ALLOW_EMPTY_ROOT_PASSWORD.
	if [ -z "$MARIADB_ALLOW_EMPTY_ROOT_PASSWORD" ] && [ -n "${MYSQL_ALLOW_EMPTY_PASSWORD:-}" ]; then
		export MARIADB_ALLOW_EMPTY_ROOT_PASSWORD=$MYSQL_ALLOW_EMPTY_PASSWORD
	fi
	if [ -n "${SAFEKEEPER_API_KEY:-}" ] && [ -n "${SAFEKEEPER_API_KEY_FILE:-}" ]; then
		mysql_error "Both SAFEKEEPER_API_KEY and SAFEKEEPER_API_KEY_FILE are set (but are exclusive); set only one of them"
	fi
	if [ -n "${SAFEKEEPER_API_KEY_FILE:-}" ]; then
		[ -r "$SAFEKEEPER_API_KEY_FILE" ] || mysql_error "SAFEKEEPER_API_KEY_FILE=$SAFEKEEPER_API_KEY_FILE: the file cannot be read"
		SAFEKEEPER_API_KEY=$(<"$SAFEKEEPER_API_KEY_FILE")
		export SAFEKEEPER_API_KEY
		unset SAFEKEEPER_API_KEY_FILE
	fi
}

# parse_peer_url VAR: checks that $VAR is http://host[:port][/] and sets
# PEER_HOST and PEER_PORT (80 when the URL has none, as for any http URL).
# The server takes a host and a port, not a URL, so anything the URL would
# carry beyond them (userinfo, a path, a query) would be silently lost:
# refuse it instead.
parse_peer_url() {
	local var=$1 url=${!1} rest authority path host port
	local bad="$var='$url' is not a valid http://host:port URL"
	[[ $url =~ [[:space:]] ]] && mysql_error "$bad: it contains whitespace"
	if [[ ! $url =~ ^([A-Za-z][A-Za-z0-9+.-]*):// ]]; then
		mysql_error "$bad: it has no scheme; write it as http://host:port"
	fi
	local scheme=${BASH_REMATCH[1],,}
	[ "$scheme" = http ] || mysql_error "$bad: scheme '$scheme' is not supported (only http)"
	rest=${url#*://}
	authority=${rest%%[/?#]*}
	path=${rest:${#authority}}
	[[ $path == *[?#]* ]] && mysql_error "$bad: it has a query or fragment"
	[ -z "$path" ] || [ "$path" = / ] || mysql_error "$bad: it has a path ('$path'); only http://host:port is accepted"
	[[ $authority == *@* ]] && mysql_error "$bad: it contains user information ('...@'); pass credentials as SAFEKEEPER_API_KEY"
	if [[ $authority =~ ^\[([0-9A-Fa-f:.]+(%[A-Za-z0-9._-]+)?)\](:(.*))?$ ]]; then
		host=${BASH_REMATCH[1]} port=${BASH_REMATCH[4]}
		[ -n "${BASH_REMATCH[3]}" ] || port=80
	elif [[ $authority == *:*:* ]]; then
		mysql_error "$bad: an IPv6 address must be in brackets, as in http://[::1]:8081"
	else
		host=${authority%%:*} port=80
		[[ $authority == *:* ]] && port=${authority#*:}
		[ -n "$host" ] || mysql_error "$bad: it has no host"
		[[ $host =~ ^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$ ]] || mysql_error "$bad: '$host' is not a valid host name or IP address"
		[ "${#host}" -le 253 ] || mysql_error "$bad: the host name is longer than 253 characters"
	fi
	[[ $port =~ ^[0-9]{1,5}$ ]] || mysql_error "$bad: the port '$port' is not a number from 1 to 65535"
	port=$((10#$port))
	if [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
		mysql_error "$bad: the port $port is not between 1 and 65535"
	fi
	PEER_HOST=$host PEER_PORT=$port
}

# Turns PAGE_SERVER_URL / SAFEKEEPER_URL / SAFEKEEPER_API_KEY into server
# options: PS_ARGS (command line) and PS_KEY (delivered through a pipe, see
# docker_exec_server). Runs before anything else is done, so a bad value
# stops the container before any server starts.
page_server_config() {
	PS_ARGS=() PS_KEY=
	if [ -z "${PAGE_SERVER_URL:-}" ]; then
		[ -z "${SAFEKEEPER_URL:-}" ] || mysql_error "SAFEKEEPER_URL is set but PAGE_SERVER_URL is not: redo streaming needs the Page Server feature; set PAGE_SERVER_URL too"
		[ -z "${SAFEKEEPER_API_KEY:-}" ] || mysql_error "SAFEKEEPER_API_KEY is set but SAFEKEEPER_URL is not; set SAFEKEEPER_URL too"
		return 0
	fi
	parse_peer_url PAGE_SERVER_URL
	PS_ARGS=(--innodb-page-server-enabled=ON
		"--innodb-page-server-address=$PEER_HOST" "--innodb-page-server-port=$PEER_PORT")
	local where="Page Server at $PEER_HOST:$PEER_PORT"
	if [ -n "${SAFEKEEPER_URL:-}" ]; then
		parse_peer_url SAFEKEEPER_URL
		PS_ARGS+=("--innodb-safekeeper-address=$PEER_HOST" "--innodb-safekeeper-port=$PEER_PORT")
		where+=", Safekeeper at $PEER_HOST:$PEER_PORT"
	else
		[ -z "${SAFEKEEPER_API_KEY:-}" ] || mysql_error "SAFEKEEPER_API_KEY is set but SAFEKEEPER_URL is not; set SAFEKEEPER_URL too"
		where+=", no Safekeeper (SAFEKEEPER_URL is not set)"
	fi
	if [ -n "${SAFEKEEPER_API_KEY:-}" ]; then
		# A bearer token (RFC 6750 b64token) also keeps the option file and
		# the HTTP headers it goes into well-formed. The value is never shown.
		[[ $SAFEKEEPER_API_KEY =~ ^[A-Za-z0-9._~+/-]+=*$ ]] ||
			mysql_error "SAFEKEEPER_API_KEY has characters other than letters, digits and -._~+/ (with trailing =); the value is not shown"
		PS_KEY=$SAFEKEEPER_API_KEY
		where+=", with an API key"
	fi
	mysql_note "Page Server feature on: $where"
}

# Where the server's own first arguments say which option files to read;
# the API key goes into an extra option file, so they must leave room.
page_server_check_args() {
	[ -n "$PS_KEY" ] || return 0
	shift # mariadbd
	local a
	[ "${1:-}" != --no-defaults ] || mysql_error "SAFEKEEPER_API_KEY cannot reach the server with --no-defaults: the key is passed in an option file; drop --no-defaults"
	for a in "$@"; do
		case $a in
		--defaults-extra-file=*) mysql_error "SAFEKEEPER_API_KEY cannot be combined with $a: the key is passed with --defaults-extra-file; include your file with !include from --defaults-file instead" ;;
		--defaults-file=* | --defaults-group-suffix=*) ;;
		*) break ;;
		esac
	done
}

# Reads the server's effective settings once (MARIADB_HELP); fails with the
# server's own message when the configuration is unusable.
mysql_check_config() {
	declare -g MARIADB_HELP
	if ! MARIADB_HELP=$("$@" --verbose --help 2>/dev/null); then
		local out
		out=$("$@" --verbose --help 2>&1 >/dev/null) || true
		mysql_error "$(printf 'mariadbd failed while attempting to check config\n\tcommand was: %s\n\t%s' "$*" "$out")"
	fi
}

# mysql_get_config NAME: the value the server would use.
mysql_get_config() {
	awk -v conf="$1" '$1 == conf && /^[^ \t]/ { sub(/^[^ \t]+[ \t]+/, ""); print; exit }' <<<"$MARIADB_HELP"
}

docker_setup_env() {
	declare -g DATADIR SOCKET PORT DATABASE_ALREADY_EXISTS=
	declare -ga SOCKET_ARGS=()
	DATADIR=$(mysql_get_config datadir)
	SOCKET=$(mysql_get_config socket)
	PORT=$(mysql_get_config port)
	DATADIR=${DATADIR%/}
	[ -n "$DATADIR" ] || mysql_error "could not read the datadir from the server's --verbose --help output"
	[ ! -d "$DATADIR/mysql" ] || DATABASE_ALREADY_EXISTS=true
}

# Not root and the socket directory is not writable (a container started
# with --user UID: /run/mysqld is mysql's, 0755): the socket and pid file go
# into the datadir, which that uid must own anyway. MYSQL_UNIX_PORT points
# the clients of this script and of the init files there; healthcheck.sh
# looks there too.
docker_socket_in_datadir() {
	local sockdir
	sockdir=$(dirname "${SOCKET:-/run/mysqld/mysqld.sock}")
	if [ -w "$sockdir" ] || { [ ! -e "$sockdir" ] && mkdir -p "$sockdir" 2>/dev/null; }; then
		return 0
	fi
	mysql_note "$sockdir is not writable by uid $(id -u): the socket and pid file go into $DATADIR"
	SOCKET=$DATADIR/mysqld.sock
	SOCKET_ARGS=(--socket="$SOCKET" --pid-file="$DATADIR/mysqld.pid")
	export MYSQL_UNIX_PORT=$SOCKET
}

# As root: create and hand over the directories the server writes, then
# run this script again as mysql.
docker_drop_root() {
	local sockdir uid
	uid=$(id -u mysql) || mysql_error "there is no user 'mysql' to run the server as"
	sockdir=$(dirname "${SOCKET:-/run/mysqld/mysqld.sock}")
	mkdir -p "$DATADIR" "$sockdir"
	# Only what is not mysql's yet: a large volume is not walked twice.
	find "$DATADIR" "$sockdir" \! -uid "$uid" -exec chown mysql:mysql '{}' +
	# memory.pressure lets the server react to cgroup memory pressure.
	if [ -w /sys/fs/cgroup/memory.pressure ]; then
		chown mysql /sys/fs/cgroup/memory.pressure || true
	fi
	HOME=$(getent passwd mysql | cut -d: -f6) || true
	export HOME=${HOME:-/var/lib/mysql}
	mysql_note "Switching to dedicated user 'mysql'"
	exec setpriv --reuid=mysql --regid=mysql --init-groups "${BASH_SOURCE[0]}" "$@"
}

docker_verify_minimum_env() {
	if [ -z "$MARIADB_ROOT_PASSWORD" ] && [ -z "$MARIADB_ROOT_PASSWORD_HASH" ] &&
		[ -z "$MARIADB_ALLOW_EMPTY_ROOT_PASSWORD" ] && [ -z "$MARIADB_RANDOM_ROOT_PASSWORD" ]; then
		mysql_error "$(printf '%s\n\t%s\n\t%s' \
			'Database is uninitialized and password option is not specified' \
			'You need to specify one of MARIADB_ROOT_PASSWORD, MARIADB_ROOT_PASSWORD_HASH, MARIADB_ALLOW_EMPTY_ROOT_PASSWORD and MARIADB_RANDOM_ROOT_PASSWORD' \
			'(or their MYSQL_ aliases, or the _FILE forms of the passwords)')"
	fi
	if [ -n "$MARIADB_ROOT_PASSWORD_HASH" ] && [ -n "$MARIADB_ROOT_PASSWORD$MARIADB_RANDOM_ROOT_PASSWORD" ]; then
		mysql_error "MARIADB_ROOT_PASSWORD_HASH cannot be combined with MARIADB_ROOT_PASSWORD or MARIADB_RANDOM_ROOT_PASSWORD; set only one"
	fi
	if [ -n "$MARIADB_PASSWORD_HASH" ] && [ -n "$MARIADB_PASSWORD" ]; then
		mysql_error "MARIADB_PASSWORD_HASH cannot be combined with MARIADB_PASSWORD; set only one"
	fi
	if [ -n "$MARIADB_USER" ] && [ -z "$MARIADB_PASSWORD$MARIADB_PASSWORD_HASH" ]; then
		mysql_error "MARIADB_USER is set but neither MARIADB_PASSWORD nor MARIADB_PASSWORD_HASH is"
	fi
	if [ "$MARIADB_USER" = root ]; then
		mysql_error "MARIADB_USER=root: the root account is set up by MARIADB_ROOT_PASSWORD; choose another user name"
	fi
}

# Prints 32 random letters and digits (coreutils only, no pwgen).
random_password() {
	local raw
	raw=$(head -c 64 /dev/urandom | base64 -w0)
	raw=${raw//[^A-Za-z0-9]/}
	printf '%s' "${raw:0:32}"
}

# SQL string literal body: backslash, newline and quote escaped (the
# official image's name, for initdb scripts that call it).
docker_sql_escape_string_literal() {
	local s=${1//\\/\\\\}
	s=${s//$'\n'/\\n}
	printf '%s' "${s//\'/\\\'}"
}

# docker_process_sql [--no-root-password] [client args]: runs SQL from stdin
# as root over the socket of the temporary server, in MARIADB_DATABASE unless
# the arguments name another. Initdb scripts written for the official image
# call it too, with its --dont-use-mysql-root-password.
docker_process_sql() {
	local pwd=${MARIADB_ROOT_PASSWORD:-}
	case ${1:-} in
	--no-root-password | --dont-use-mysql-root-password) pwd= && shift ;;
	esac
	[ -z "${MARIADB_DATABASE:-}" ] || set -- --database="$MARIADB_DATABASE" "$@"
	MYSQL_PWD=$pwd mariadb --no-defaults --protocol=socket --socket="$SOCKET" -uroot -hlocalhost "$@"
}

docker_init_database_dir() {
	mysql_note "Initializing database files"
	local -a args=()
	local a
	# The user's server options apply to the new datadir too; values with
	# whitespace cannot pass through mariadb-install-db's shell code.
	for a in "${@:2}"; do
		[[ $a =~ [[:space:]] ]] || args+=("$a")
	done
	mariadb-install-db "${args[@]}" --datadir="$DATADIR" --rpm \
		--auth-root-authentication-method=normal --cross-bootstrap \
		--skip-test-db --old-mode=UTF8_IS_UTF8MB3 --default-time-zone=SYSTEM \
		--enforce-storage-engine= --skip-log-bin --expire-logs-days=0 \
		--loose-innodb_buffer_pool_load_at_startup=0 \
		--loose-innodb_buffer_pool_dump_at_shutdown=0 \
		--loose-innodb-page-server-enabled=OFF
	mysql_note "Database files initialized"
}

# Starts the server on the socket only, without the Page Server feature,
# and waits (bounded) until it answers.
docker_temp_server_start() {
	"$@" --skip-networking --default-time-zone=SYSTEM --socket="$SOCKET" "${SOCKET_ARGS[@]}" \
		--loose-wsrep_on=OFF --expire-logs-days=0 --skip-slave-start \
		--skip-log-bin --loose-innodb_buffer_pool_load_at_startup=0 \
		--loose-innodb-page-server-enabled=OFF &
	declare -g MARIADB_PID=$!
	mysql_note "Waiting for server startup"
	# Root has no password yet on a new datadir; an upgrade runs with
	# --skip-grant-tables.
	local _
	for _ in {1..300}; do
		if docker_process_sql --no-root-password --database=mysql <<<'SELECT 1' &>/dev/null; then
			return 0
		fi
		kill -0 "$MARIADB_PID" 2>/dev/null || mysql_error "The temporary server exited during startup; its log is above"
		sleep 0.1
	done
	mysql_error "Unable to start the temporary server within 30 seconds"
}

docker_temp_server_stop() {
	kill "$MARIADB_PID"
	wait "$MARIADB_PID" || mysql_error "The temporary server did not shut down cleanly (exit status $?)"
}

# SQL that creates the healthcheck accounts with password $1.
healthcheck_users_sql() {
	local h pw
	pw=$(docker_sql_escape_string_literal "$1")
	for h in 127.0.0.1 ::1 localhost; do
		printf "CREATE OR REPLACE USER healthcheck@'%s' IDENTIFIED BY '%s';\n" "$h" "$pw"
		printf "GRANT %s ON *.* TO healthcheck@'%s';\n" "$MARIADB_HEALTHCHECK_GRANTS" "$h"
	done
}

# Writes $DATADIR/.my-healthcheck.cnf (0600) for healthcheck.sh.
write_healthcheck_cnf() {
	(
		umask 0077
		printf '[mariadb-client]\nport=%s\nsocket=%s\nuser=healthcheck\npassword=%s\nprotocol=tcp\n' \
			"${PORT:-3306}" "$SOCKET" "$1" >"$DATADIR/.my-healthcheck.cnf"
	)
}

# SQL for root@ROOT_HOST (when it is not localhost), the database and the
# user, from the variables.
accounts_sql() {
	local host auth=''
	host=$(docker_sql_escape_string_literal "$MARIADB_ROOT_HOST")
	if [ -n "$MARIADB_ROOT_PASSWORD_HASH" ]; then
		auth=" IDENTIFIED BY PASSWORD '$(docker_sql_escape_string_literal "$MARIADB_ROOT_PASSWORD_HASH")'"
	elif [ -n "$MARIADB_ROOT_PASSWORD" ]; then
		auth=" IDENTIFIED BY '$(docker_sql_escape_string_literal "$MARIADB_ROOT_PASSWORD")'"
		printf "SET PASSWORD FOR 'root'@'localhost'= PASSWORD('%s');\n" "$(docker_sql_escape_string_literal "$MARIADB_ROOT_PASSWORD")"
	fi
	if [ -n "$MARIADB_ROOT_HOST" ] && [ "$MARIADB_ROOT_HOST" != localhost ]; then
		printf "CREATE USER 'root'@'%s'%s;\n" "$host" "$auth"
		printf "GRANT ALL ON *.* TO 'root'@'%s' WITH GRANT OPTION;\n" "$host"
		printf "GRANT PROXY ON ''@'%%' TO 'root'@'%s' WITH GRANT OPTION;\n" "$host"
	fi
	local db=${MARIADB_DATABASE//\`/\`\`}
	[ -z "$MARIADB_DATABASE" ] || printf "CREATE DATABASE IF NOT EXISTS \`%s\`;\n" "$db"
	if [ -n "$MARIADB_USER" ]; then
		local user uauth
		user=$(docker_sql_escape_string_literal "$MARIADB_USER")
		if [ -n "$MARIADB_PASSWORD_HASH" ]; then
			uauth="IDENTIFIED BY PASSWORD '$(docker_sql_escape_string_literal "$MARIADB_PASSWORD_HASH")'"
		else
			uauth="IDENTIFIED BY '$(docker_sql_escape_string_literal "$MARIADB_PASSWORD")'"
		fi
		printf "CREATE USER '%s'@'%%' %s;\n" "$user" "$uauth"
		[ -z "$MARIADB_DATABASE" ] || printf "GRANT ALL ON \`%s\`.* TO '%s'@'%%';\n" "$db" "$user"
	fi
}

# Time zones, root accounts, healthcheck user, database and user.
docker_setup_db() {
	if [ -z "$MARIADB_INITDB_SKIP_TZINFO" ]; then
		mysql_note "Loading time zone tables"
		# --skip-write-binlog keeps these out of any binary log.
		mariadb-tzinfo-to-sql --skip-write-binlog /usr/share/zoneinfo |
			docker_process_sql --no-root-password --database=mysql
	fi
	if [ -n "$MARIADB_RANDOM_ROOT_PASSWORD" ]; then
		MARIADB_ROOT_PASSWORD=$(random_password)
		export MARIADB_ROOT_PASSWORD MYSQL_ROOT_PASSWORD=$MARIADB_ROOT_PASSWORD
		mysql_note "GENERATED ROOT PASSWORD: $MARIADB_ROOT_PASSWORD"
	fi
	local hcpw
	hcpw=$(random_password)
	mysql_note "Securing system users (equivalent to running mysql_secure_installation)"
	docker_process_sql --no-root-password --database=mysql --binary-mode <<-EOSQL
		SET @orig_sql_log_bin= @@SESSION.SQL_LOG_BIN;
		SET @@SESSION.SQL_LOG_BIN=0;
		SET @@SESSION.SQL_MODE=REPLACE(@@SESSION.SQL_MODE, 'NO_BACKSLASH_ESCAPES', '');
		DROP USER IF EXISTS root@'127.0.0.1', root@'::1';
		EXECUTE IMMEDIATE CONCAT('DROP USER IF EXISTS root@\'', @@hostname,'\'');
		$(accounts_sql)
		$(healthcheck_users_sql "$hcpw")
		SET @@SESSION.SQL_LOG_BIN=@orig_sql_log_bin;
	EOSQL
	write_healthcheck_cnf "$hcpw"
}

# Runs the files given, in order: .sh (executed when executable, else
# sourced), .sql, .sql.gz, .sql.xz, .sql.zst.
docker_process_init_files() {
	local f
	echo
	for f; do
		case $f in
		*.sh)
			if [ -x "$f" ]; then
				mysql_note "$0: running $f"
				"$f"
			else
				mysql_note "$0: sourcing $f"
				# shellcheck disable=SC1090
				. "$f"
			fi
			;;
		*.sql) mysql_note "$0: running $f" && docker_process_sql <"$f" ;;
		*.sql.gz) mysql_note "$0: running $f" && gzip -dc "$f" | docker_process_sql ;;
		*.sql.xz) mysql_note "$0: running $f" && xz -dc "$f" | docker_process_sql ;;
		*.sql.zst) mysql_note "$0: running $f" && zstd -dc "$f" | docker_process_sql ;;
		*) mysql_warn "$0: ignoring $f (not .sh, .sql, .sql.gz, .sql.xz or .sql.zst)" ;;
		esac
	done
	echo
}

# A new datadir: initialise, set up accounts, run the init files.
docker_init_new_datadir() {
	docker_verify_minimum_env
	# Fail now, not half-way, when the init directory is unreadable.
	[ ! -e "$INITDB_DIR" ] || ls "$INITDB_DIR" >/dev/null
	docker_init_database_dir "$@"
	mysql_note "Starting temporary server"
	docker_temp_server_start "$@"
	mysql_note "Temporary server started."
	docker_setup_db
	docker_process_init_files "$INITDB_DIR"/*
	# Only now: the init files ran as root with the plain password (or none).
	if [ -n "$MARIADB_ROOT_PASSWORD_HASH" ]; then
		mysql_note "Setting root@localhost password hash"
		docker_process_sql --no-root-password --binary-mode <<-EOSQL
			SET @@SESSION.SQL_LOG_BIN=0;
			SET PASSWORD FOR 'root'@'localhost'= '$(docker_sql_escape_string_literal "$MARIADB_ROOT_PASSWORD_HASH")';
		EOSQL
	fi
	mysql_note "Stopping temporary server"
	docker_temp_server_stop
	mysql_note "Temporary server stopped"
	echo
	mysql_note "MariaDB init process done. Ready for start up."
	echo
}

# major.minor of a version string such as 10.11.18-MariaDB.
major_minor() {
	[[ $1 =~ ^([0-9]+)\.([0-9]+) ]] && printf '%s.%s' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
}

# Whether the datadir needs mariadb-upgrade (or the healthcheck user).
docker_upgrade_needed() {
	local old new
	if [ ! -f "$DATADIR/.my-healthcheck.cnf" ]; then
		mysql_note "$DATADIR/.my-healthcheck.cnf is missing: the healthcheck user needs creating"
		return 0
	fi
	if [ ! -f "$DATADIR/mysql_upgrade_info" ]; then
		mysql_note "MariaDB upgrade information missing, assuming required"
		return 0
	fi
	old=$(major_minor "$(<"$DATADIR/mysql_upgrade_info")") || true
	new=$(major_minor "$("$1" --version | awk '{for (i = 1; i < NF; i++) if ($i == "Ver") print $(i + 1)}')") || true
	[ -n "$old" ] && [ -n "$new" ] || return 0
	[ "$old" != "$new" ] && [ "$(printf '%s\n%s\n' "$old" "$new" | sort -V | head -n1)" = "$old" ]
}

# Copies the system tables next to the data before an upgrade.
docker_backup_system() {
	local old file
	old=$(<"$DATADIR/mysql_upgrade_info") || old=unknown
	file="$DATADIR/system_mysql_backup_${old%%[^0-9.]*}.sql"
	if command -v zstd >/dev/null; then
		file+=.zst
		mariadb-dump --no-defaults --socket="$SOCKET" -uroot --skip-lock-tables --replace --databases mysql | zstd -q >"$file"
	else
		file+=.gz
		mariadb-dump --no-defaults --socket="$SOCKET" -uroot --skip-lock-tables --replace --databases mysql | gzip >"$file"
	fi
	mysql_note "Backed up the system tables to $file"
}

docker_mariadb_upgrade() {
	if [ -z "$MARIADB_AUTO_UPGRADE" ]; then
		mysql_note "MariaDB upgrade (mariadb-upgrade or creating the healthcheck user) required, but skipped: MARIADB_AUTO_UPGRADE is not set"
		return 0
	fi
	mysql_note "Starting temporary server for the upgrade"
	docker_temp_server_start "$@" --skip-grant-tables
	[ -n "$MARIADB_DISABLE_UPGRADE_BACKUP" ] || docker_backup_system
	mysql_note "Running mariadb-upgrade"
	mariadb-upgrade --no-defaults --socket="$SOCKET" -uroot --upgrade-system-tables
	if [ ! -f "$DATADIR/.my-healthcheck.cnf" ]; then
		local hcpw
		hcpw=$(random_password)
		{ echo 'FLUSH PRIVILEGES;' && healthcheck_users_sql "$hcpw"; } |
			docker_process_sql --no-root-password --database=mysql
		write_healthcheck_cnf "$hcpw"
	fi
	docker_temp_server_stop
	mysql_note "MariaDB upgrade complete"
}

# Starts the server as this process (PID 1 in a container), with the Page
# Server options and, through a pipe on descriptor 3 read as an option
# file, the Safekeeper API key: never on the command line, in a file or in
# the environment.
docker_exec_server() {
	local server=$1
	shift
	local -a lead=()
	while [ $# -gt 0 ]; do
		case $1 in
		--no-defaults | --defaults-file=* | --defaults-extra-file=* | --defaults-group-suffix=*) lead+=("$1") && shift ;;
		*) break ;;
		esac
	done
	local key=$PS_KEY
	unset "${CONSUMED_VARS[@]}" PS_KEY
	if [ -z "$key" ]; then
		exec "$server" "${lead[@]}" "${PS_ARGS[@]}" "$@" "${SOCKET_ARGS[@]}"
	fi
	exec "$server" --defaults-extra-file=/dev/fd/3 "${lead[@]}" "${PS_ARGS[@]}" "$@" "${SOCKET_ARGS[@]}" 3<<-EOF
		[mariadbd]
		innodb-safekeeper-api-key=$key
	EOF
}

# Whether the arguments only ask the server for information.
wants_help() {
	local a
	for a; do
		case $a in
		-'?' | --help | --print-defaults | -V | --version) return 0 ;;
		esac
	done
	return 1
}

_main() {
	if [ "${1:0:1}" = - ]; then
		set -- mariadbd "$@"
	fi
	if { [ "$1" != mariadbd ] && [ "$1" != mysqld ]; } || wants_help "$@"; then
		exec "$@"
	fi
	mysql_note "Entrypoint script for MariaDB Server (mariadb-pageserver) started."
	docker_file_env_all
	page_server_config
	page_server_check_args "$@"
	mysql_check_config "$@"
	docker_setup_env
	if [ "$(id -u)" = 0 ]; then
		docker_drop_root "$@"
	fi
	[ -w "$DATADIR" ] || [ ! -e "$DATADIR" ] || mysql_error "The datadir $DATADIR is not writable by uid $(id -u); chown it to that uid or start the container as root"
	docker_socket_in_datadir
	if [ -z "$DATABASE_ALREADY_EXISTS" ]; then
		docker_init_new_datadir "$@"
	elif docker_upgrade_needed "$1"; then
		docker_mariadb_upgrade "$@"
	fi
	docker_exec_server "$@"
}

# Sourcing the script (as tests and initdb helpers do) defines the
# functions without running anything.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	_main "$@"
fi
