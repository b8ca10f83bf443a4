# Shared by the backup benchmarks (sourced, not run): libpq variables from a base URL, a quiet
# psql, and the generated database the benchmarks dump.

# Splits the base URL ($1, postgres://user[:password]@host[:port]) into PGHOST, PGPORT, PGUSER and
# PGPASSWORD, so that no password ever reaches a command line.
pg_env_from_base() {
  local rest="${1#*://}" userinfo="" hostport
  case "$rest" in *@*) userinfo="${rest%@*}"; rest="${rest##*@}" ;; esac
  hostport="${rest%%/*}"
  export PGHOST="${hostport%%:*}"
  case "$hostport" in *:*) export PGPORT="${hostport##*:}" ;; *) export PGPORT=5432 ;; esac
  export PGUSER="${userinfo%%:*}"
  [ -n "$PGUSER" ] || export PGUSER=postgres
  case "$userinfo" in *:*) export PGPASSWORD="${userinfo#*:}" ;; esac
}

psql_q() { psql -X -q -t -A -v ON_ERROR_STOP=1 "$@"; }

# Makes sure database $1 holds at least $2 bytes (one table `wide`, about 480 bytes a row: random
# hex that compresses ~2x, repeated text, numbers, a timestamp); with $3 = 1 it is built again.
# Kept between runs. Prints its size.
ensure_bench_db() {
  local db="$1" want_bytes="$2" regen="${3:-0}" exists have rows
  exists=$(psql_q -d postgres -c "SELECT count(*) FROM pg_database WHERE datname = '$db'")
  if [ "$exists" = "1" ] && [ "$regen" = "1" ]; then
    psql_q -d postgres -c "DROP DATABASE $db WITH (FORCE)"
    exists=0
  fi
  if [ "$exists" = "1" ]; then
    have=$(psql_q -d "$db" -c "SELECT pg_database_size(current_database())")
  else
    have=0
  fi
  if [ "$have" -lt "$want_bytes" ]; then
    echo "== generating $db (>= $(( want_bytes / 1024 / 1024 )) MiB; kept for the next run, --drop removes it)"
    [ "$exists" = "1" ] || psql_q -d postgres -c "CREATE DATABASE $db"
    rows=$(( want_bytes / 480 + 1 ))
    psql_q -d "$db" <<SQL
DROP TABLE IF EXISTS wide;
CREATE TABLE wide (id bigint PRIMARY KEY, a text, b text, c int, d timestamptz, e text);
INSERT INTO wide
  SELECT g,
         md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text),
         repeat('lorem ipsum dolor sit amet ', 5 + (g % 5)),
         (random() * 1e9)::int,
         now() - g * interval '1 second',
         md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text)
  FROM generate_series(1, $rows) g;
VACUUM ANALYZE wide;
SQL
    have=$(psql_q -d "$db" -c "SELECT pg_database_size(current_database())")
  fi
  echo "== database $db: $(( have / 1024 / 1024 )) MiB"
}
