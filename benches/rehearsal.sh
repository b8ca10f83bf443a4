#!/usr/bin/env bash
# Benchmark: a dualkey deploy rehearsal (the `rehearsal` example, release build: the backup
# restored into <db>_dualkey_rehearsal with the restore protocol, the largest table counted, the
# migrations applied with the deploy's code path while relfilenodes and locks are measured, the
# scratch database dropped) against the raw tools doing the same work: `createdb`, `pg_restore -d`
# of the same backup and `psql -1 -f` of each migration. A 1.5M-row table, three migrations (one
# rewrites the table, one builds an index, one adds a column). Interleaved (the order alternates
# each run); prints every run, the medians and the ratio dualkey / raw (the target is <= 1.3).
#
# The database `dk_bench_rehearsal` and its backup are generated on first use and kept for the
# next run; pass --drop to drop the database at the end.
#
# Usage: benches/rehearsal.sh [--runs N] [--rows R] [--drop] [--regenerate]
#        (default: 3 runs each, 1500000 rows)
# Env:   DUALKEY_TEST_PG  base URL of the PostgreSQL server (default postgres://postgres@127.0.0.1:5432);
#                         a password in it is passed to the tools through PGPASSWORD only.
#        BENCH_DIR        where the backup and the migrations are kept (default: $TMPDIR/dk_bench_rehearsal)
#        DUALKEY_REHEARSAL_CMD  a prebuilt `rehearsal` example to use instead of building one
set -euo pipefail
shopt -s inherit_errexit

RUNS=3
ROWS=1500000
DROP=0
REGEN=0
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS="$2"; shift 2 ;;
    --rows) ROWS="$2"; shift 2 ;;
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
DB=dk_bench_rehearsal
RAW=dk_bench_rehearsal_raw
SCRATCH=${DB}_dualkey_rehearsal

. "$ROOT/benches/lib.sh"
pg_env_from_base "$BASE"
export PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning"
export DATABASE_URL="${BASE%/}/$DB"

if [ -n "${DUALKEY_REHEARSAL_CMD:-}" ]; then
  DK="$DUALKEY_REHEARSAL_CMD"
else
  echo "== building dualkey (release)"
  (cd "$ROOT" && cargo build --release --quiet --example rehearsal)
  DK="$TARGET/release/examples/rehearsal"
fi

WORK="${BENCH_DIR:-${TMPDIR:-/tmp}/dk_bench_rehearsal}"
MIG="$WORK/migrations"
BACKUP="$WORK/backup.dump"
INIT=20250101000000_init
cleanup() {
  psql_q -d postgres -c "DROP DATABASE IF EXISTS $RAW WITH (FORCE)" >/dev/null 2>&1 || true
  if [ "$DROP" = "1" ]; then
    echo "== dropping $DB"
    psql_q -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

write_migrations() {
  rm -rf "$MIG"
  mkdir -p "$MIG/$INIT" "$MIG/20250301000000_add_uid" "$MIG/20250302000000_project_idx" "$MIG/20250303000000_note"
  printf 'provider = "postgresql"\n' >"$MIG/migration_lock.toml"
  cat >"$MIG/$INIT/migration.sql" <<'SQL'
CREATE TABLE "Task" (
    "id" SERIAL NOT NULL,
    "title" TEXT NOT NULL,
    "done" BOOLEAN NOT NULL DEFAULT false,
    "projectId" INTEGER NOT NULL,
    "createdAt" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "body" TEXT,
    CONSTRAINT "Task_pkey" PRIMARY KEY ("id")
);
SQL
  printf -- '-- AlterTable\nALTER TABLE "Task" ADD COLUMN "uid" UUID NOT NULL DEFAULT gen_random_uuid();\n' \
    >"$MIG/20250301000000_add_uid/migration.sql"
  printf -- '-- CreateIndex\nCREATE INDEX "Task_projectId_idx" ON "Task"("projectId");\n' \
    >"$MIG/20250302000000_project_idx/migration.sql"
  printf -- '-- AlterTable\nALTER TABLE "Task" ADD COLUMN "note" TEXT;\n' \
    >"$MIG/20250303000000_note/migration.sql"
}

# The target: the init migration applied by dualkey (so _prisma_migrations is Prisma's), $ROWS
# tasks, and its backup (pg_dump -Fc). The three later migrations are pending.
ensure_target() {
  local exists
  exists=$(psql_q -d postgres -c "SELECT count(*) FROM pg_database WHERE datname = '$DB'")
  if [ "$exists" = "1" ] && [ "$REGEN" = "0" ] && [ -s "$BACKUP" ] \
     && [ "$(psql_q -d "$DB" -c 'SELECT count(*) FROM "Task"')" = "$ROWS" ]; then
    return
  fi
  echo "== generating $DB ($ROWS rows; kept for the next run, --drop removes it)"
  psql_q -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
  psql_q -d postgres -c "CREATE DATABASE $DB"
  mkdir -p "$WORK"
  local init_only="$WORK/init_only"
  rm -rf "$init_only"; mkdir -p "$init_only"
  cp -r "$MIG/$INIT" "$MIG/migration_lock.toml" "$init_only/"
  "$DK" deploy "$init_only" >/dev/null
  rm -rf "$init_only"
  psql_q -d "$DB" <<SQL
INSERT INTO "Task" (title, done, "projectId", "createdAt", body)
  SELECT 'task ' || g, g % 3 = 0, g % 500, now() - g * interval '1 minute',
         md5(g::text) || ' ' || repeat('lorem ipsum ', 1 + g % 6)
  FROM generate_series(1, $ROWS) g;
VACUUM ANALYZE "Task";
SQL
  pg_dump -Fc -f "$BACKUP" -d "$DB"
}

write_migrations
ensure_target
SHA=$(sha256sum "$BACKUP" | cut -d' ' -f1)
echo "== database $DB: $(psql_q -d "$DB" -c 'SELECT pg_size_pretty(pg_database_size(current_database()))'), backup $(( $(stat -c %s "$BACKUP") / 1024 / 1024 )) MiB"

now() { date +%s.%N; }
PENDING=(20250301000000_add_uid 20250302000000_project_idx 20250303000000_note)
run_raw() {
  psql_q -d postgres -c "DROP DATABASE IF EXISTS $RAW WITH (FORCE)"
  local t0 t1
  t0=$(now)
  psql_q -d postgres -c "CREATE DATABASE $RAW"
  pg_restore --no-owner -d "$RAW" "$BACKUP"
  for m in "${PENDING[@]}"; do
    psql_q -1 -d "$RAW" -f "$MIG/$m/migration.sql" >/dev/null
  done
  t1=$(now)
  psql_q -d postgres -c "DROP DATABASE IF EXISTS $RAW WITH (FORCE)"
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}
run_dk() {
  local t0 t1
  t0=$(now)
  "$DK" rehearse "$BACKUP" "$MIG" "$INIT" "$SHA" >"$WORK/dk.json" \
    || { echo "the rehearsal failed" >&2; return 1; }
  t1=$(now)
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
  printf 'run %d: raw pg_restore + psql %8.3f s   dualkey rehearsal %8.3f s   ratio %.3f\n' "$i" "$r" "$d" "$(awk -v a="$d" -v b="$r" 'BEGIN { print a / b }')"
done
[ "$(psql_q -d postgres -c "SELECT count(*) FROM pg_database WHERE datname = '$SCRATCH'")" = "0" ] \
  || { echo "the rehearsal left $SCRATCH behind" >&2; exit 1; }
echo "== last rehearsal: $(cat "$WORK/dk.json")"

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
mr=$(median "${raw_times[@]}")
md=$(median "${dk_times[@]}")
printf '== median: raw pg_restore + psql %.3f s, dualkey rehearsal %.3f s\n' "$mr" "$md"
printf '== ratio dualkey / raw: %.3f (target <= 1.3)\n' "$(awk -v a="$md" -v b="$mr" 'BEGIN { print a / b }')"
