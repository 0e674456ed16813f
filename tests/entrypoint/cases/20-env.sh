# MARIADB_ / MYSQL_ names, _FILE forms, secrets kept from the server.
# shellcheck shell=bash
# Single quotes below keep SQL backquotes and $ for the scripts under test.
# shellcheck disable=SC2016

printf 'from-a-file\n' >"$T/pw"
ep file-form MARIADB_ROOT_PASSWORD_FILE="$T/pw"
expect "MARIADB_ROOT_PASSWORD_FILE is read (trailing newline dropped)" sql_has "PASSWORD('from-a-file')"

ep mysql-file-form MYSQL_ROOT_PASSWORD_FILE="$T/pw" MYSQL_USER=app MYSQL_PASSWORD_FILE="$T/pw"
expect "MYSQL_*_FILE aliases are read" sql_has "CREATE USER 'app'@'%' IDENTIFIED BY 'from-a-file';"

ep both-forms MARIADB_ROOT_PASSWORD=x MARIADB_ROOT_PASSWORD_FILE="$T/pw"
expect "a variable and its _FILE form together are refused" rc_is 1
expect "the refusal names both" err_has "Both MARIADB_ROOT_PASSWORD and MARIADB_ROOT_PASSWORD_FILE are set"
expect "no server ran after the refusal" no_server_started

ep both-forms-alias MARIADB_ROOT_PASSWORD=x MYSQL_PASSWORD=y MYSQL_PASSWORD_FILE="$T/pw"
expect "the alias and its _FILE form together are refused" err_has "Both MYSQL_PASSWORD and MYSQL_PASSWORD_FILE are set"

ep unreadable-file MARIADB_ROOT_PASSWORD_FILE="$T/missing"
expect "an unreadable _FILE is refused, naming it" err_has "MARIADB_ROOT_PASSWORD_FILE=$T/missing: the file cannot be read"

ep mariadb-wins MARIADB_ROOT_PASSWORD=maria MYSQL_ROOT_PASSWORD=mysql MARIADB_DATABASE=m MYSQL_DATABASE=y
expect "MARIADB_ROOT_PASSWORD wins over MYSQL_ROOT_PASSWORD" sql_has "PASSWORD('maria')"
expect "the MYSQL_ value is not used" bash -c "! grep -rqF \"PASSWORD('mysql')\" '$CASE'/log/"
expect "MARIADB_DATABASE wins over MYSQL_DATABASE" sql_has 'CREATE DATABASE IF NOT EXISTS `m`;'

ep mysql-alias MYSQL_ROOT_PASSWORD=only-mysql MYSQL_ROOT_HOST=localhost
expect "MYSQL_ROOT_PASSWORD alone works" sql_has "PASSWORD('only-mysql')"
expect "MYSQL_ROOT_HOST=localhost creates no other root" bash -c "! grep -rqF \"CREATE USER 'root'\" '$CASE'/log/"

printf 'key-from-file\n' >"$T/key"
ep secrets MARIADB_ROOT_PASSWORD=rootsecret MYSQL_USER=app MYSQL_PASSWORD=usersecret \
	MARIADB_PASSWORD_HASH= PAGE_SERVER_URL=http://localhost:8081 SAFEKEEPER_URL=http://localhost:8082 \
	SAFEKEEPER_API_KEY_FILE="$T/key"
expect "start with secrets succeeds" rc_is 0
for s in rootsecret usersecret key-from-file; do
	expect "'$s' is not in the final server's environment" lacks "$(final).env" "$s"
	expect "'$s' is not in the final server's arguments" lacks "$(final).args" "$s"
	expect "'$s' is not in the temporary server's arguments or environment" lacks "$(temp).args" "$s"
done
expect "no password variable reaches the server" bash -c "! grep -qE 'PASSWORD|^SAFEKEEPER_API_KEY|^MYSQL_PWD' '$(final).env'"
expect "no variable the entrypoint read reaches the server" bash -c "! grep -qE '^(MARIADB|MYSQL)_' '$(final).env'"
expect "the API key reaches the server through an option file on a descriptor" \
	has_line "$(final).extra" "innodb-safekeeper-api-key=key-from-file"
expect "that option file is read by the server section" has_line "$(final).extra" "[mariadbd]"
expect "the option file is passed first" test "$(sed -n 2p "$(final).args")" = --defaults-extra-file=/dev/fd/3
expect "the temporary server gets no API key file" lacks "$(temp).args" "defaults-extra-file"
