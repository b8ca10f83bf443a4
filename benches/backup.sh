#!/usr/bin/env bash
# Benchmark: dualkey's backup (pg_dump -Fc streamed through SHA-256 into a .partial file, fsync,
# rename; the `backup_dump` example, release build) against raw `pg_dump -Fc -f FILE`, on the same
# database of at least 1 GB, interleaved (the order alternates each run). Prints every run, the
# medians and the ratio dualkey / raw (the target is <= 1.05).
#
# This times the dump function alone (no verification, no catalog). What a user runs, the
# `dualkey backup` command end to end, is measured by benches/backup_e2e.sh.
#
# The database `dk_bench_backup` is generated on first use (a few minutes) and kept for the next
# run; pass --drop to drop it at the end. Dumps are written to a temporary folder and removed.
#
# Usage: benches/backup.sh [--runs N] [--size-gb G] [--drop] [--regenerate]
#        (default: 3 runs each, 1 GB)
# Env:   DUALKEY_TEST_PG  base URL of the PostgreSQL server (default postgres://postgres@127.0.0.1:5432);
#                         a password in it is passed to the tools through PGPASSWORD only.
#        BENCH_DIR        where the dumps are written (default: a new folder under $TMPDIR)
#        DUALKEY_BACKUP_CMD  a prebuilt backup_dump example to use instead of building one
set -euo pipefail

RUNS=3
SIZE_GB=1
DROP=0
REGEN=0
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS="$2"; shift 2 ;;
    --size-gb) SIZE_GB="$2"; shift 2 ;;
    --drop) DROP=1; shift ;;
    --regenerate) REGEN=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BASE="${DUALKEY_TEST_PG:-postgres://postgres@127.0.0.1:5432}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET" in /*) ;; *) TARGET="$ROOT/$TARGET" ;; esac
DB=dk_bench_backup

. "$ROOT/benches/lib.sh"
pg_env_from_base "$BASE"
export DATABASE_URL="${BASE%/}/$DB"

if [ -n "${DUALKEY_BACKUP_CMD:-}" ]; then
  DK="$DUALKEY_BACKUP_CMD"
else
  echo "== building dualkey (release)"
  (cd "$ROOT" && cargo build --release --quiet --example backup_dump)
  DK="$TARGET/release/examples/backup_dump"
fi

want_bytes=$(awk -v g="$SIZE_GB" 'BEGIN { printf "%d", g * 1024 * 1024 * 1024 }')
ensure_bench_db "$DB" "$want_bytes" "$REGEN"

WORK="${BENCH_DIR:-$(mktemp -d)}"
mkdir -p "$WORK"
cleanup() {
  rm -rf "$WORK/raw.dump" "$WORK/dk" "$WORK/dk.json" "$WORK/raw.size" "$WORK/dk.size"
  [ -n "${BENCH_DIR:-}" ] || rmdir "$WORK" 2>/dev/null || true
  if [ "$DROP" = "1" ]; then
    echo "== dropping $DB"
    psql_q -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true
  fi
}
trap cleanup EXIT

now() { date +%s.%N; }
run_raw() {
  rm -f "$WORK/raw.dump"
  local t0 t1
  t0=$(now)
  pg_dump -Fc -f "$WORK/raw.dump" -d "$DB"
  t1=$(now)
  stat -c %s "$WORK/raw.dump" >"$WORK/raw.size"
  rm -f "$WORK/raw.dump"
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}
run_dk() {
  rm -rf "$WORK/dk"
  local t0 t1
  t0=$(now)
  "$DK" "$WORK/dk" bench manual >"$WORK/dk.json" 2>/dev/null
  t1=$(now)
  sed -E 's/.*"size_bytes":([0-9]+).*/\1/' "$WORK/dk.json" >"$WORK/dk.size"
  rm -rf "$WORK/dk" "$WORK/dk.json"
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}

echo "== warm-up (not counted)"
run_raw >/dev/null

raw_times=()
dk_times=()
for i in $(seq 1 "$RUNS"); do
  if [ $((i % 2)) -eq 1 ]; then
    r=$(run_raw); d=$(run_dk)
  else
    d=$(run_dk); r=$(run_raw)
  fi
  raw_times+=("$r"); dk_times+=("$d")
  printf 'run %d: raw pg_dump %8.3f s   dualkey %8.3f s   ratio %.3f\n' "$i" "$r" "$d" "$(awk -v a="$d" -v b="$r" 'BEGIN { print a / b }')"
done

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
mr=$(median "${raw_times[@]}")
md=$(median "${dk_times[@]}")
echo "== dump size: raw $(( $(cat "$WORK/raw.size") / 1024 / 1024 )) MiB, dualkey $(( $(cat "$WORK/dk.size") / 1024 / 1024 )) MiB"
printf '== median: raw pg_dump %.3f s, dualkey %.3f s\n' "$mr" "$md"
printf '== ratio dualkey / raw: %.3f (target <= 1.05)\n' "$(awk -v a="$md" -v b="$mr" 'BEGIN { print a / b }')"
