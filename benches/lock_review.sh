#!/usr/bin/env bash
# Benchmark: the deploy card with the lock review, end to end through the real bot. One
# `dualkey shell` session (the same adapter contract as Slack and Discord) against a target whose
# "Task" table holds 1.5M rows (one INSERT ... SELECT generate_series, then ANALYZE) and with 20
# pending migrations, each with statements the review flags on "Task" (ADD COLUMN ... DEFAULT
# gen_random_uuid(), CREATE INDEX, ADD FOREIGN KEY, RENAME COLUMN) or a new table. Measured: the
# time from writing `/db deploy` to the card's buttons line printed (gather: migration status,
# staging guard, the review of 20 scripts, table sizes and long transactions on one connection,
# tool versions; the request written; the card delivered). Each request is cancelled before the
# next round.
#
# Baseline, measured in the same session and alternated with it: `/db status` (the read-only
# card approvers check first: the same migration status read, tool versions, catalog), from
# writing the command to its report printed. Prints both medians, p90 and the ratio.
# Target: the deploy card within 1 s.
#
# Usage: benches/lock_review.sh [N]   (N rounds, default 10)
# Env:   DUALKEY_TEST_PG      base URL of a PostgreSQL server (default postgres://postgres@127.0.0.1:5432)
#        DUALKEY_BENCH_DEBUG  1: use the debug build (a slower binary; quicker to build)
set -euo pipefail
N="${1:-10}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BASE="${DUALKEY_TEST_PG:-postgres://postgres@127.0.0.1:5432}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET" in /*) ;; *) TARGET="$ROOT/$TARGET" ;; esac
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
pg_env_from_base "$BASE"

if [ "${DUALKEY_BENCH_DEBUG:-0}" = 1 ]; then
  echo "== building dualkey (debug)"
  (cd "$ROOT" && cargo build --quiet --bin dualkey)
  DUALKEY="$TARGET/debug/dualkey"
else
  echo "== building dualkey (release)"
  (cd "$ROOT" && cargo build --release --quiet --bin dualkey)
  DUALKEY="$TARGET/release/dualkey"
fi

WORK="$(mktemp -d)"
DB="dk_bench_lockreview_$$"
SHELL_PID=""
cleanup() {
  [ -n "$SHELL_PID" ] && kill "$SHELL_PID" 2>/dev/null || true
  psql_q -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
psql_q -d postgres -c "CREATE DATABASE $DB"
export BENCH_DATABASE_URL="$BASE/$DB"

MIG="$WORK/migrations"
mkdir -p "$MIG/20250101000000_init"
cp "$ROOT/tests/fixtures/taskflow/prisma/migrations/migration_lock.toml" "$MIG/"
cat > "$MIG/20250101000000_init/migration.sql" <<'SQL'
-- CreateTable
CREATE TABLE "User" ("id" SERIAL NOT NULL, "email" TEXT NOT NULL, CONSTRAINT "User_pkey" PRIMARY KEY ("id"));

-- CreateTable
CREATE TABLE "Task" (
    "id" SERIAL NOT NULL,
    "title" TEXT NOT NULL,
    "done" BOOLEAN NOT NULL DEFAULT false,
    "ownerId" INTEGER NOT NULL,
    CONSTRAINT "Task_pkey" PRIMARY KEY ("id")
);
SQL

config() { # $1: deploy_needs_approval
  cat <<TOML
[store]
url = "sqlite://$WORK/state/dualkey.db"
[[operators]]
id = "alice"
roles = ["operator", "approver"]
[[operators]]
id = "bob"
roles = ["approver"]
[environments.bench]
database_url_env = "BENCH_DATABASE_URL"
migrations_dir = "$MIG"
backup_dir = "$WORK/backups"
deploy_needs_approval = $1
TOML
}
config false > "$WORK/setup.toml"
config true > "$WORK/bench.toml"

echo "== applying the first migration through the bot, then 1.5M rows"
printf '/db deploy\n' | "$DUALKEY" shell --as alice --config "$WORK/setup.toml" > "$WORK/setup.log" 2>&1 \
  || { cat "$WORK/setup.log"; exit 1; }
grep -q "succeeded (applied 20250101000000_init)" "$WORK/setup.log" || { cat "$WORK/setup.log"; exit 1; }
t0=$EPOCHREALTIME
psql_q -d "$DB" <<'SQL'
INSERT INTO "User" ("email") SELECT 'u' || g || '@example.com' FROM generate_series(1, 100) g;
INSERT INTO "Task" ("title", "ownerId") SELECT 'task ' || g, 1 + g % 100 FROM generate_series(1, 1500000) g;
ANALYZE "User";
ANALYZE "Task";
SQL
echo "   $(psql_q -d "$DB" -c "SELECT reltuples::bigint || ' rows, ' || pg_size_pretty(pg_total_relation_size(oid)) FROM pg_class WHERE oid = '\"Task\"'::regclass") in $(awk "BEGIN{printf \"%.1f\", $EPOCHREALTIME - $t0}") s"

echo "== writing 20 pending migrations"
for i in $(seq 1 20); do
  name="$(printf '202502%02d000000_step_%02d' "$i" "$i")"
  mkdir -p "$MIG/$name"
  case $((i % 5)) in
    1) sql="-- AlterTable
ALTER TABLE \"Task\" ADD COLUMN \"uid$i\" uuid DEFAULT gen_random_uuid();" ;;
    2) sql="-- CreateIndex
CREATE INDEX \"Task_title_$i\" ON \"Task\"(\"title\");" ;;
    3) sql="-- AddForeignKey
ALTER TABLE \"Task\" ADD CONSTRAINT \"Task_owner_$i\" FOREIGN KEY (\"ownerId\") REFERENCES \"User\"(\"id\") ON DELETE RESTRICT ON UPDATE CASCADE;" ;;
    4) sql="-- AlterTable
ALTER TABLE \"Task\" RENAME COLUMN \"done\" TO \"done_$i\";
ALTER TABLE \"Task\" RENAME COLUMN \"done_$i\" TO \"done\";" ;;
    0) sql="-- CreateTable
CREATE TABLE \"Tag$i\" (\"id\" SERIAL NOT NULL, \"name\" TEXT NOT NULL, CONSTRAINT \"Tag${i}_pkey\" PRIMARY KEY (\"id\"));

-- CreateIndex
CREATE INDEX \"Tag${i}_name_idx\" ON \"Tag$i\"(\"name\");" ;;
  esac
  printf '%s\n' "$sql" > "$MIG/$name/migration.sql"
done

# One shell session; each command's answer is read back line by line.
coproc BOT { exec "$DUALKEY" shell --as alice --config "$WORK/bench.toml" 2>"$WORK/shell.err"; }
SHELL_PID=$BOT_PID

# Reads lines until one matches $1 (a bash regex); sets LINE. Fails after 30 s.
read_until() {
  while IFS= read -r -t 30 LINE <&"${BOT[0]}"; do
    [[ "$LINE" =~ $1 ]] && return 0
  done
  echo "no line matching $1 within 30 s; stderr:" >&2
  cat "$WORK/shell.err" >&2
  exit 1
}
# Drops what the last command printed after its measured line.
drain() { while IFS= read -r -t 0.3 LINE <&"${BOT[0]}"; do :; done; }
ms() { awk "BEGIN{printf \"%.1f\", ($2 - $1) * 1000}"; }

DEPLOY=() STATUS=() CARD=""
for r in $(seq 0 "$N"); do
  t0=$EPOCHREALTIME
  printf '/db deploy\n' >&"${BOT[1]}"
  : > "$WORK/card.txt"
  while IFS= read -r -t 30 LINE <&"${BOT[0]}"; do
    printf '%s\n' "$LINE" >> "$WORK/card.txt"
    [[ "$LINE" =~ ^\[approve:([a-z0-9]+)\] ]] && break
  done
  t1=$EPOCHREALTIME
  id="${BASH_REMATCH[1]:-}"
  [ -n "$id" ] || { echo "no approval card:"; cat "$WORK/card.txt" "$WORK/shell.err"; exit 1; }
  drain
  printf '/db cancel %s\n' "$id" >&"${BOT[1]}"
  read_until "^Cancelled $id"
  drain
  t2=$EPOCHREALTIME
  printf '/db status\n' >&"${BOT[1]}"
  read_until "^dualkey status for bench"
  t3=$EPOCHREALTIME
  drain
  # Round 0 warms the caches (tool versions, the first connections) and is not counted.
  if [ "$r" -gt 0 ]; then
    DEPLOY+=("$(ms "$t0" "$t1")")
    STATUS+=("$(ms "$t2" "$t3")")
  fi
  CARD="$WORK/card.txt"
done

flagged=$(grep -c ' under ' "$CARD" || true)
grep -q 'rewrites "Task" (about 1.5M rows' "$CARD" || { echo "the card lacks the lock review:"; cat "$CARD"; exit 1; }
pct() { printf '%s\n' "$@" | sort -n | awk -v p="$P" '{a[NR]=$1} END{i=int((NR-1)*p+0.5)+1; print a[i]}'; }
P=0.5; dmed=$(pct "${DEPLOY[@]}"); smed=$(pct "${STATUS[@]}")
P=0.9; d90=$(pct "${DEPLOY[@]}"); s90=$(pct "${STATUS[@]}")
echo
echo "== $N rounds, 20 pending migrations, \"Task\" with 1.5M rows; $flagged lock-review lines on the card"
printf '   /db deploy card with the lock review (sizes included): median %s ms, p90 %s ms\n' "$dmed" "$d90"
printf '   baseline /db status report:                             median %s ms, p90 %s ms\n' "$smed" "$s90"
printf '   ratio deploy card / status report (medians): %sx\n' "$(awk "BEGIN{printf \"%.2f\", $dmed / $smed}")"
awk "BEGIN{exit !($d90 <= 1000)}" && echo "   target (card within 1 s): met at p90" || echo "   target (card within 1 s): NOT met at p90"
