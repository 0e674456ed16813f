#!/usr/bin/env bash
# Overhead of the Page Server patches, measured with sysbench on loopback.
#
#   STOCK=/path/to/stock/build PATCHED=/path/to/patched/build bash benches/pageserver.sh
#
# STOCK and PATCHED are cmake build directories (sql/mariadbd) or install
# roots (usr/sbin/mariadbd) of MariaDB 10.11.18 without and with patches/.
# Runs, each on a fresh datadir with the same options:
#   1. stock                          oltp_read_write throughput
#   2. patched, feature off           the same (target: within 2% of stock)
#      and oltp_read_only for both, a control: its code paths (buffer
#      pool hits, no writes) pass no patched line, so its ratio shows how
#      far this machine's noise alone moves a pair
#   3. patched, feature on            cold point selects served by the
#                                     reference Page Server (p50/p99), and
#                                     oltp_write_only with redo streaming on
#                                     vs off (target: within 10%)
# The reference peers (tests/peers) run on 127.0.0.1. Medians of ROUNDS runs.
set -euo pipefail
: "${STOCK:?set STOCK to a stock MariaDB build}" "${PATCHED:?set PATCHED to a patched MariaDB build}"
SECONDS_PER_RUN=${SECONDS_PER_RUN:-20}
ROUNDS=${ROUNDS:-5}
THREADS=${THREADS:-2}
PS_PORT=${PS_PORT:-18081}
SK_PORT=${SK_PORT:-18082}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/mpsi-psbench.XXXXXX")
pids=()
cleanup() {
  local rc=$?
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$rc" -ne 0 ]; then # say which server failed, and why
    for f in "$work"/*/error.log "$work"/*.log; do
      [ -f "$f" ] && { echo "== $f (last lines)" >&2; tail -25 "$f" >&2; }
    done
  fi
  rm -rf "$work"
}
trap cleanup EXIT
command -v sysbench >/dev/null || { echo "needs sysbench (apt-get install sysbench)" >&2; exit 1; }

bin() { # bin DIR NAME -> path of a program in a build dir or install root
  case $2 in
    mariadbd) [ -x "$1/sql/mariadbd" ] && echo "$1/sql/mariadbd" || echo "$1/usr/sbin/mariadbd" ;;
    mariadb) [ -x "$1/client/mariadb" ] && echo "$1/client/mariadb" || echo "$1/usr/bin/mariadb" ;;
    share) for d in "$1/sql/share" "$1/usr/share/mariadb" "$1/usr/share/mysql"; do [ -f "$d/english/errmsg.sys" ] && { echo "$d"; return; }; done ;;
  esac
}

cargo build --release --quiet --example reference_peers --manifest-path "$here/Cargo.toml"
# Fresh peers for every server, so that every run starts from the same
# empty peers (the compute would refuse an earlier datadir's pages anyway:
# exact-LSN rule and database identity, docs/page-server-protocol.md §4.6-4.7).
peers_pid=
fresh_peers() {
  [ -n "$peers_pid" ] && { kill "$peers_pid"; wait "$peers_pid" 2>/dev/null || true; }
  "$here/target/release/examples/reference_peers" "$PS_PORT" "$SK_PORT" 7200 2>>"$work/peers.log" &
  peers_pid=$!; pids+=("$peers_pid")
  for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$PS_PORT") 2>/dev/null && return; sleep 0.1; done
  echo "the reference peers did not start" >&2; return 1
}

server_pid=
start() { # start BUILD NAME [options...]
  local build=$1 name=$2; shift 2
  local d="$work/$name"; rm -rf "$d"; mkdir -p "$d"
  fresh_peers
  "$(bin "$build" mariadbd)" --no-defaults --user="$(id -un)" --datadir="$d" --socket="$d/sock" \
    --lc-messages-dir="$(bin "$build" share)" --skip-networking --skip-grant-tables \
    --innodb-buffer-pool-size=64M --innodb-log-file-size=256M --innodb-flush-log-at-trx-commit=1 \
    --innodb-buffer-pool-load-at-startup=OFF --innodb-buffer-pool-dump-at-shutdown=OFF "$@" \
    >"$d/error.log" 2>&1 &
  server_pid=$!; pids+=("$server_pid")
  for _ in $(seq 1 120); do "$(bin "$build" mariadb)" --no-defaults -uroot -S "$d/sock" -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.5; done
  "$(bin "$build" mariadb)" --no-defaults -uroot -S "$d/sock" -e 'CREATE DATABASE IF NOT EXISTS sbtest'
  SOCK="$d/sock"; CLIENT="$(bin "$build" mariadb)"
}
stop() { kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; }
sb() { # sb TEST [extra...] -> prints sysbench output
  sysbench "$1" --db-driver=mysql --mysql-socket="$SOCK" --mysql-user=root --mysql-db=sbtest \
    --tables=4 --table-size=50000 --threads="$THREADS" --time="$SECONDS_PER_RUN" --percentile=99 "${@:2}"
}
tps() { grep -Eo 'transactions: +[0-9]+ +\(([0-9.]+)' | grep -Eo '[0-9.]+$'; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

feature_on=(--innodb-page-server-enabled=ON --innodb-page-server-address=127.0.0.1 --innodb-page-server-port="$PS_PORT"
            --innodb-safekeeper-address=127.0.0.1 --innodb-safekeeper-port="$SK_PORT")

declare -A result
run() { # run CFG TEST [server options...]: one measured run, printed as it ends
  local cfg=$1 test=$2 build=$PATCHED t; shift 2
  case $cfg in stock*) build=$STOCK ;; esac
  start "$build" "$cfg" "$@"
  sb "$test" prepare >/dev/null
  t=$(sb "$test" run | tps)
  stop
  result[$cfg]+="$t "
  echo "round $round $test $cfg: $t tps" >&2
}
for round in $(seq 1 "$ROUNDS"); do
  # The order flips every round (A B, B A, ...), so that a drift of the
  # machine during the run weighs on both sides alike.
  pairs=("stock oltp_read_write" "off oltp_read_write")
  control=("stock_ro oltp_read_only" "off_ro oltp_read_only")
  writes=("write_off oltp_write_only" "write_on oltp_write_only ${feature_on[*]}")
  if [ $((round % 2)) -eq 0 ]; then
    pairs=("${pairs[1]}" "${pairs[0]}"); control=("${control[1]}" "${control[0]}")
    writes=("${writes[1]}" "${writes[0]}")
  fi
  for r in "${pairs[@]}" "${control[@]}" "${writes[@]}"; do
    # shellcheck disable=SC2086 # the words are a config, a test and options
    run $r
  done
done

# Cold reads: a buffer pool far smaller than the data, pages pushed to the
# Page Server first, then random point selects (each misses on its leaf).
start "$PATCHED" cold "${feature_on[@]}" --innodb-buffer-pool-size=8M --innodb-read-ahead-threshold=0
sb oltp_point_select prepare >/dev/null
"$CLIENT" --no-defaults -uroot -S "$SOCK" -e 'SET GLOBAL innodb_max_dirty_pages_pct_lwm=0; SET GLOBAL innodb_max_dirty_pages_pct=0'
sleep 10
cold_on50=$(sb oltp_point_select run --threads=1 --percentile=50)
cold_on99=$(sb oltp_point_select run --threads=1 --percentile=99)
ps_status=$("$CLIENT" --no-defaults -uroot -S "$SOCK" -N -B -e "SHOW STATUS LIKE 'Page_server%'")
stop
start "$PATCHED" cold_off --innodb-buffer-pool-size=8M --innodb-read-ahead-threshold=0
sb oltp_point_select prepare >/dev/null
cold_off50=$(sb oltp_point_select run --threads=1 --percentile=50)
cold_off99=$(sb oltp_point_select run --threads=1 --percentile=99)
stop

m() { echo "${result[$1]}" | tr ' ' '\n' | grep . | median; }
lat() { echo "$1" | grep -E "^ +$2" | grep -Eo '[0-9.]+$'; }
echo
echo "oltp_read_write tps (median of $ROUNDS): stock $(m stock), patched feature off $(m off)"
python3 -c "print(f'  patched-off / stock = {$(m off)/$(m stock):.3f} (target >= 0.98)')"
echo "control, oltp_read_only tps (median of $ROUNDS): stock $(m stock_ro), patched feature off $(m off_ro)"
python3 -c "print(f'  patched-off / stock = {$(m off_ro)/$(m stock_ro):.3f} (no patched line on its path: the noise of a pair)')"
echo "oltp_write_only tps (median of $ROUNDS): streaming off $(m write_off), streaming on $(m write_on)"
python3 -c "print(f'  on / off = {$(m write_on)/$(m write_off):.3f} (target >= 0.90)')"
echo "cold point select latency (ms, one thread, each select misses the 8 MB pool):"
echo "  pages from the Page Server: p50 $(lat "$cold_on50" '50th percentile') p99 $(lat "$cold_on99" '99th percentile')"
echo "  pages from local files:     p50 $(lat "$cold_off50" '50th percentile') p99 $(lat "$cold_off99" '99th percentile')"
echo "$ps_status" | grep -E 'latency|pages_served|requests|fallbacks'
