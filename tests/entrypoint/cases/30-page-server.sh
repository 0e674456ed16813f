# PAGE_SERVER_URL / SAFEKEEPER_URL / SAFEKEEPER_API_KEY.
# shellcheck shell=bash

ep ps-off MARIADB_ROOT_PASSWORD=x
expect "without PAGE_SERVER_URL the feature stays off (no page server option)" lacks "$(final).args" "page-server"

ep ps-seed MARIADB_ROOT_PASSWORD=x PAGE_SERVER_URL=http://localhost:8081 SAFEKEEPER_URL=http://localhost:8082
expect "the seed's URLs start" rc_is 0
for o in --innodb-page-server-enabled=ON --innodb-page-server-address=localhost \
	--innodb-page-server-port=8081 --innodb-safekeeper-address=localhost --innodb-safekeeper-port=8082; do
	expect "the server gets $o" has_line "$(final).args" "$o"
done
expect "the temporary server runs with the feature off" has_line "$(temp).args" --loose-innodb-page-server-enabled=OFF
expect "the temporary server gets no Page Server address" lacks "$(temp).args" "page-server-address"
expect "the log says where the peers are" out_has "Page Server feature on: Page Server at localhost:8081, Safekeeper at localhost:8082"
expect "no API key file without a key" lacks "$(final).args" "defaults-extra-file"

ep ps-user-args MARIADB_ROOT_PASSWORD=x PAGE_SERVER_URL=http://ps:8081 -- --port=3307 --innodb-page-server-timeout-ms=50
expect "arguments starting with - go to mariadbd, after the Page Server options" \
	test "$(tr '\n' ' ' <"$(final).args")" = "mariadbd --innodb-page-server-enabled=ON --innodb-page-server-address=ps --innodb-page-server-port=8081 --port=3307 --innodb-page-server-timeout-ms=50 "
expect "the temporary server gets the user's arguments too" has_line "$(temp).args" --port=3307

# good URL -> expected "address port"
while IFS='|' read -r url want; do
	ep "good-url" MARIADB_ROOT_PASSWORD=x PAGE_SERVER_URL="$url"
	got="$(sed -n 's/^--innodb-page-server-address=//p' "$(final).args" 2>&1) $(sed -n 's/^--innodb-page-server-port=//p' "$(final).args" 2>&1)" || true
	expect "good URL '$url' -> $want" test "$got" = "$want"
done <<'URLS'
http://localhost:8081|localhost 8081
http://localhost:8081/|localhost 8081
HTTP://Page-Server.internal:1|Page-Server.internal 1
http://10.0.0.7:65535|10.0.0.7 65535
http://[::1]:8081|::1 8081
http://[fe80::1%eth0]:8081/|fe80::1%eth0 8081
http://pageserver|pageserver 80
http://ps_1:08081|ps_1 8081
URLS

# bad URL -> the problem named in the message
while IFS='|' read -r var url why; do
	ep bad-url MARIADB_ROOT_PASSWORD=x PAGE_SERVER_URL=http://ps:8081 "$var=$url"
	expect "bad $var '$url' stops the container" rc_is 1
	expect "bad $var '$url': message names the variable and says '$why'" err_has "$var='$url' is not a valid http://host:port URL: $why"
	expect "bad $var '$url': no server ran" no_server_started
done <<'URLS'
PAGE_SERVER_URL|https://ps:8081|scheme 'https' is not supported
PAGE_SERVER_URL|grpc://ps:8081|scheme 'grpc' is not supported
PAGE_SERVER_URL|ps:8081|it has no scheme
PAGE_SERVER_URL|http://:8081|it has no host
PAGE_SERVER_URL|http://|it has no host
PAGE_SERVER_URL|http://ps:0|the port 0 is not between 1 and 65535
PAGE_SERVER_URL|http://ps:65536|the port 65536 is not between 1 and 65535
PAGE_SERVER_URL|http://ps:99999999|the port '99999999' is not a number
PAGE_SERVER_URL|http://ps:80a|the port '80a' is not a number
PAGE_SERVER_URL|http://ps:-1|the port '-1' is not a number
PAGE_SERVER_URL|http://ps:|the port '' is not a number
PAGE_SERVER_URL|http://ps:8081/api/v1|it has a path ('/api/v1')
PAGE_SERVER_URL|http://ps:8081?x=1|it has a query or fragment
PAGE_SERVER_URL|http://ps:8081#top|it has a query or fragment
PAGE_SERVER_URL|http://user:pw@ps:8081|it contains user information
PAGE_SERVER_URL|http://::1:8081|an IPv6 address must be in brackets
PAGE_SERVER_URL|http://ps!:8081|'ps!' is not a valid host name
PAGE_SERVER_URL|http://ps :8081|it contains whitespace
SAFEKEEPER_URL|https://sk:8082|scheme 'https' is not supported
SAFEKEEPER_URL|http://sk:8082/wal|it has a path ('/wal')
SAFEKEEPER_URL|http://sk:70000|the port 70000 is not between 1 and 65535
URLS

ep bad-url-existing-datadir PAGE_SERVER_URL=http://ps:0
expect "a bad URL is refused before the password check" err_has "PAGE_SERVER_URL='http://ps:0'"

ep sk-alone MARIADB_ROOT_PASSWORD=x SAFEKEEPER_URL=http://sk:8082
expect "SAFEKEEPER_URL without PAGE_SERVER_URL is refused" err_has "SAFEKEEPER_URL is set but PAGE_SERVER_URL is not"
expect "... before any server runs" no_server_started

ep key-alone MARIADB_ROOT_PASSWORD=x PAGE_SERVER_URL=http://ps:8081 SAFEKEEPER_API_KEY=k
expect "SAFEKEEPER_API_KEY without SAFEKEEPER_URL is refused" err_has "SAFEKEEPER_API_KEY is set but SAFEKEEPER_URL is not"

ep key-both MARIADB_ROOT_PASSWORD=x PAGE_SERVER_URL=http://ps:8081 SAFEKEEPER_URL=http://sk:8082 SAFEKEEPER_API_KEY=k SAFEKEEPER_API_KEY_FILE="$T/key"
expect "SAFEKEEPER_API_KEY and its _FILE together are refused" err_has "Both SAFEKEEPER_API_KEY and SAFEKEEPER_API_KEY_FILE are set"

ep key-bad MARIADB_ROOT_PASSWORD=x PAGE_SERVER_URL=http://ps:8081 SAFEKEEPER_URL=http://sk:8082 SAFEKEEPER_API_KEY=$'tok\nen"#x'
expect "an API key that is not a bearer token is refused" err_has "SAFEKEEPER_API_KEY has characters other than"
expect "... without showing it" lacks "$CASE/err" 'en"#x'

ep key-no-defaults MARIADB_ROOT_PASSWORD=x PAGE_SERVER_URL=http://ps:8081 SAFEKEEPER_URL=http://sk:8082 SAFEKEEPER_API_KEY=abc -- mariadbd --no-defaults
expect "an API key with --no-defaults is refused" err_has "SAFEKEEPER_API_KEY cannot reach the server with --no-defaults"

ep key-defaults-file MARIADB_ROOT_PASSWORD=x PAGE_SERVER_URL=http://ps:8081 SAFEKEEPER_URL=http://sk:8082 SAFEKEEPER_API_KEY=abc -- mariadbd --defaults-file=/etc/mysql/my.cnf --port=3307
expect "an API key with the user's --defaults-file starts" rc_is 0
expect "the option files come first, then the Page Server options" \
	test "$(head -n 4 "$(final).args" | tr '\n' ' ')" = "mariadbd --defaults-extra-file=/dev/fd/3 --defaults-file=/etc/mysql/my.cnf --innodb-page-server-enabled=ON "
