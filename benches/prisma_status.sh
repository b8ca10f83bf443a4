#!/usr/bin/env bash
# Benchmark: N runs of the real `prisma migrate status` (6.19.3, offline wasm engine) against N
# runs of `dualkey status --format prisma` (release build), on the same database with the
# example migrations deployed. Prints both timings and the ratio.
#
# Usage: benches/prisma_status.sh [N]   (default 20)
# Env:   DUALKEY_TEST_PG   base URL of a PostgreSQL server (default postgres://postgres@127.0.0.1:5432)
set -euo pipefail
N="${1:-20}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BASE="${DUALKEY_TEST_PG:-postgres://postgres@127.0.0.1:5432}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET" in /*) ;; *) TARGET="$ROOT/$TARGET" ;; esac
CLI="$TARGET/prisma-cli"

echo "== building dualkey (release)"
(cd "$ROOT" && cargo build --release --quiet --bin dualkey)
DUALKEY="$TARGET/release/dualkey"

if [ ! -e "$CLI/.dualkey-ready" ]; then
  echo "== installing the Prisma CLI into $CLI"
  rm -rf "$CLI.tmp-bench"
  bash "$ROOT/tests/tools/install-prisma-cli.sh" "$CLI.tmp-bench" >/dev/null
  touch "$CLI.tmp-bench/.dualkey-ready"
  mv "$CLI.tmp-bench" "$CLI" 2>/dev/null || rm -rf "$CLI.tmp-bench"
fi

WORK="$(mktemp -d)"
DB="dk_bench_$$"
cleanup() { psql "$BASE/postgres" -Xqc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true; rm -rf "$WORK"; }
trap cleanup EXIT
psql "$BASE/postgres" -Xqc "CREATE DATABASE $DB" >/dev/null
export DATABASE_URL="$BASE/$DB" CHECKPOINT_DISABLE=1 NO_COLOR=1 PRISMA_HIDE_UPDATE_MESSAGE=1

mkdir -p "$WORK/prisma"
cp -r "$ROOT/tests/fixtures/prisma/blog" "$WORK/prisma/migrations"
ln -s "$CLI/node_modules" "$WORK/node_modules"
printf 'generator client {\n  provider   = "prisma-client-js"\n  engineType = "client"\n}\n\ndatasource db {\n  provider = "postgresql"\n  url      = env("DATABASE_URL")\n}\n' > "$WORK/prisma/schema.prisma"
cat > "$WORK/prisma.config.ts" <<'TS'
import { defineConfig } from "prisma/config";
import { PrismaPg } from "@prisma/adapter-pg";
export default defineConfig({
  experimental: { adapter: true },
  engine: "js",
  adapter: async () => new PrismaPg({ connectionString: process.env.DATABASE_URL!, allowExitOnIdle: true }),
  schema: "prisma/schema.prisma",
  migrations: { path: "prisma/migrations" },
});
TS
cat > "$WORK/dualkey.toml" <<TOML
[store]
url = "sqlite://$WORK/state/dualkey.db"
[[operators]]
id = "bench"
roles = ["viewer"]
[environments.bench]
database_url_env = "DATABASE_URL"
migrations_dir = "prisma/migrations"
app_stop = ["true"]
app_start = ["true"]
app_status = ["true"]
TOML
cd "$WORK"
./node_modules/.bin/prisma migrate deploy >/dev/null 2>&1
ours() { "$DUALKEY" --config "$WORK/dualkey.toml" status --env bench --format prisma; }

# Same answer from both before timing anything.
real_out="$(./node_modules/.bin/prisma migrate status 2>/dev/null | sed -n '/migrations\{0,1\} found in prisma\/migrations/,$p')" || true
ours_out="$(ours 2>/dev/null)" || true
if [ "$real_out" != "$ours_out" ]; then
  echo "outputs differ:"; echo "--- prisma"; echo "$real_out"; echo "--- dualkey"; echo "$ours_out"; exit 1
fi

now_ns() { date +%s%N; }
run_n() { local i; for ((i = 0; i < N; i++)); do "$@" >/dev/null 2>&1 || true; done; }

echo "== $N runs each"
t0=$(now_ns); run_n ./node_modules/.bin/prisma migrate status; t1=$(now_ns)
run_n ours; t2=$(now_ns)
prisma_ms=$(( (t1 - t0) / 1000000 ))
ours_ms=$(( (t2 - t1) / 1000000 ))
awk -v n="$N" -v p="$prisma_ms" -v d="$ours_ms" 'BEGIN {
  printf "prisma migrate status          : %8.1f ms/run (%d ms total)\n", p / n, p
  printf "dualkey status --format prisma: %8.1f ms/run (%d ms total)\n", d / n, d
  printf "ratio (prisma/dualkey)         : %8.1fx\n", (d > 0 ? p / d : 0)
}'
