#!/usr/bin/env bash
# Benchmark, end to end: the `dualkey backup` command as a user runs it (process start, config,
# state store, migration status, pg_dump -Fc with SHA-256 and pg_restore verifying the stream as it
# is written, fsync, rename, catalog entry, retention; release build, real config, real SQLite
# catalog), against raw `pg_dump -Fc -d DB > FILE`, on the same database, in N interleaved pairs
# (the order alternates each pair). Prints every pair, the medians and the ratio dualkey / raw
# (the target is <= 1.05).
#
# The database `dk_bench_e2e` is generated on first use (a few minutes for the default size) and
# kept for the next run; pass --drop to drop it at the end, --regenerate to build it again.
# Dumps go to a temporary folder and are removed after each run.
#
# Usage: benches/backup_e2e.sh [--pairs N] [--size-mb M] [--drop] [--regenerate]
#        (default: 4 pairs, 500 MB)
# Env:   DUALKEY_TEST_PG  base URL of the PostgreSQL server (default postgres://postgres@127.0.0.1:5432);
#                         a password in it is passed to the tools through PGPASSWORD only.
#        BENCH_DIR        where dumps, config and catalog go (default: a new folder under $TMPDIR)
#        DUALKEY_BIN      a prebuilt dualkey binary to use instead of building one (release)
set -euo pipefail

PAIRS=4
SIZE_MB=500
DROP=0
REGEN=0
while [ $# -gt 0 ]; do
  case "$1" in
    --pairs) PAIRS="$2"; shift 2 ;;
    --size-mb) SIZE_MB="$2"; shift 2 ;;
    --drop) DROP=1; shift ;;
    --regenerate) REGEN=1; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BASE="${DUALKEY_TEST_PG:-postgres://postgres@127.0.0.1:5432}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET" in /*) ;; *) TARGET="$ROOT/$TARGET" ;; esac
DB=dk_bench_e2e

. "$ROOT/benches/lib.sh"
pg_env_from_base "$BASE"
# dualkey reads the target's URL from the variable its config names.
export DK_BENCH_DATABASE_URL="${BASE%/}/$DB"

if [ -n "${DUALKEY_BIN:-}" ]; then
  DK="$DUALKEY_BIN"
else
  echo "== building dualkey (release)"
  (cd "$ROOT" && cargo build --release --quiet --bin dualkey)
  DK="$TARGET/release/dualkey"
fi

want_bytes=$(( SIZE_MB * 1024 * 1024 ))
ensure_bench_db "$DB" "$want_bytes" "$REGEN"

WORK="${BENCH_DIR:-$(mktemp -d)}"
mkdir -p "$WORK/migrations"
cleanup() {
  rm -rf "$WORK/raw.dump" "$WORK/backups" "$WORK/migrations" "$WORK/state" "$WORK/bench.toml" \
    "$WORK/dk.out" "$WORK/dk.err"
  [ -n "${BENCH_DIR:-}" ] || rmdir "$WORK" 2>/dev/null || true
  if [ "$DROP" = "1" ]; then
    echo "== dropping $DB"
    psql_q -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true
  fi
}
trap cleanup EXIT

# A real configuration: SQLite catalog, one environment, an (empty) migrations folder.
cat >"$WORK/bench.toml" <<TOML
default_environment = "bench"
[store]
url = "sqlite://$WORK/state/dualkey.db"
[[operators]]
id = "alice"
roles = ["operator", "approver"]
[[operators]]
id = "bob"
roles = ["operator", "approver"]
[environments.bench]
database_url_env = "DK_BENCH_DATABASE_URL"
migrations_dir = "$WORK/migrations"
backup_dir = "$WORK/backups"
app_stop = ["true"]
app_start = ["true"]
app_status = ["true"]
TOML

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
run_raw() {
  rm -f "$WORK/raw.dump"
  local t0 t1
  t0=$(now)
  pg_dump -Fc -d "$DB" >"$WORK/raw.dump"
  t1=$(now)
  raw_size=$(stat -c %s "$WORK/raw.dump")
  rm -f "$WORK/raw.dump"
  raw_time=$(elapsed "$t0" "$t1")
}
run_dk() {
  local t0 t1
  t0=$(now)
  if ! "$DK" --config "$WORK/bench.toml" backup --env bench --note bench >"$WORK/dk.out" 2>"$WORK/dk.err"; then
    echo "dualkey backup failed:" >&2
    cat "$WORK/dk.out" "$WORK/dk.err" >&2
    exit 1
  fi
  t1=$(now)
  # "backup ID ok: PATH (N bytes, sha256 ...)"
  dk_size=$(sed -nE 's/.*\(([0-9]+) bytes.*/\1/p' "$WORK/dk.out")
  rm -rf "$WORK/backups/bench"
  dk_time=$(elapsed "$t0" "$t1")
}

echo "== warm-up (not counted): one of each"
run_raw
run_dk

raw_times=()
dk_times=()
ratios=()
for i in $(seq 1 "$PAIRS"); do
  if [ $((i % 2)) -eq 1 ]; then
    run_raw; run_dk
  else
    run_dk; run_raw
  fi
  raw_times+=("$raw_time"); dk_times+=("$dk_time")
  ratio=$(awk -v a="$dk_time" -v b="$raw_time" 'BEGIN { printf "%.3f", a / b }')
  ratios+=("$ratio")
  printf 'pair %d: raw pg_dump -Fc %8.3f s   dualkey backup %8.3f s   ratio %s\n' "$i" "$raw_time" "$dk_time" "$ratio"
done

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
mr=$(median "${raw_times[@]}")
md=$(median "${dk_times[@]}")
echo "== dump size: raw $(( raw_size / 1024 / 1024 )) MiB, dualkey $(( dk_size / 1024 / 1024 )) MiB"
printf '== median wall time: raw pg_dump -Fc %.3f s, dualkey backup %.3f s\n' "$mr" "$md"
printf '== median of the pair ratios: %.3f\n' "$(median "${ratios[@]}")"
printf '== ratio end to end, dualkey backup / raw pg_dump (medians): %.3f (target <= 1.05)\n' \
  "$(awk -v a="$md" -v b="$mr" 'BEGIN { print a / b }')"
