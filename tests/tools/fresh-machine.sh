#!/usr/bin/env bash
# Tries the README's two commands the way a newcomer meets them: on a fresh Debian 12 with only
# Rust (and the C linker Rust needs), in a debootstrap chroot, from a clean clone of this
# repository. Nothing of PostgreSQL, cargo-nextest, openssl, Node or Python is in the chroot, and
# no cargo registry: `scripts/test` has to install and start what it needs.
#
#   tests/tools/fresh-machine.sh DIR     as root; DIR is made with debootstrap when it is empty
#
# Needs: debootstrap, network to deb.debian.org and crates.io. The host's Rust toolchain is
# copied in (rustup cannot download one on machines without its servers). The chroot shares the
# host's network, so a PostgreSQL on the host's 127.0.0.1:5432 would answer inside it: the run
# sets DUALKEY_TEST_OWN_PG=1, which takes the same path as "no server answers" (initdb, TLS
# certificate, start, stop) on port 5439. Prints the two commands' results; exit 0 when both work.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
DIR="${1:?usage: $0 DIR}"
[ "$(id -u)" = 0 ] || { echo "run as root (debootstrap, chroot, mounts)" >&2; exit 2; }

if [ ! -x "$DIR/bin/bash" ]; then
  debootstrap --variant=minbase bookworm "$DIR" http://deb.debian.org/debian
fi
# Rust as rustup installs it (its installer needs a C linker: gcc, libc6-dev), TLS roots for
# cargo, and git to clone. Nothing else.
chroot "$DIR" /usr/bin/env DEBIAN_FRONTEND=noninteractive bash -c \
  'apt-get update -qq && apt-get install -y -qq --no-install-recommends ca-certificates gcc libc6-dev git >/dev/null'
if [ ! -x "$DIR/root/.cargo/bin/cargo" ]; then
  TC="$(readlink -f /root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu)"
  mkdir -p "$DIR/root/.rustup/toolchains" "$DIR/root/.cargo/bin"
  cp -a "$TC" "$DIR/root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu"
  cp /root/.rustup/settings.toml "$DIR/root/.rustup/" 2>/dev/null || true
  cp "$(readlink -f /root/.cargo/bin/rustup)" "$DIR/root/.cargo/bin/rustup"
  for t in cargo rustc rustdoc cargo-clippy clippy-driver cargo-fmt rustfmt; do
    ln -sf rustup "$DIR/root/.cargo/bin/$t"
  done
fi
# The host's TLS roots: where the network inspects TLS with a CA of its own (this sandbox's does),
# a fresh machine there would need it too.
cp /etc/ssl/certs/ca-certificates.crt "$DIR/etc/ssl/certs/ca-certificates.crt"
rm -rf "$DIR/root/dualkey"
git clone -q "$REPO" "$DIR/root/dualkey"
cp /etc/resolv.conf "$DIR/etc/resolv.conf"

mounted=()
mnt() { mount "$@"; mounted=("${!#}" "${mounted[@]}"); }
cleanup() { for m in "${mounted[@]}"; do umount -l "$m" 2>/dev/null || true; done; }
trap cleanup EXIT
mnt -t proc proc "$DIR/proc"
mnt --bind /dev "$DIR/dev"
mnt -t tmpfs -o size=1g tmpfs "$DIR/dev/shm"
mnt --bind /dev/pts "$DIR/dev/pts"   # the shell tests open a pseudo-terminal

in_chroot() {
  chroot "$DIR" /usr/bin/env -i HOME=/root TERM=dumb DUALKEY_TEST_OWN_PG=1 \
    PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    bash -c "cd /root/dualkey && $1"
}
echo "=== the README's test command: scripts/test ==="
start=$(date +%s)
in_chroot 'scripts/test' && tests=ok || tests="FAILED ($?)"
echo "scripts/test: $tests in $(( $(date +%s) - start )) s"
echo "=== again (idempotent), one test ==="
in_chroot "scripts/test -E 'test(/serve_says_how/)'" && again=ok || again="FAILED ($?)"
echo "=== the README's run command, with one shell line ==="
bot="$(in_chroot "printf '/db help\n' | timeout 900 cargo run -q --release -- serve --shell-as alice --config config/demo.toml" 2>&1)" || true
echo "$bot" | head -20
grep -q "How to talk to it" <<<"$bot" && grep -q "/db status" <<<"$bot" && run=ok || run=FAILED
echo "RESULT: tests $tests; tests again $again; run the bot $run"
[ "$tests" = ok ] && [ "$again" = ok ] && [ "$run" = ok ]
