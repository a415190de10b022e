#!/usr/bin/env bash
# Proves the README's two commands on a fresh Debian machine: debootstraps Debian stable into a
# folder, clones this checkout into it, installs a Rust toolchain and the libgit2 build
# dependencies as the README says, then, inside the root (chroot with /proc, /sys and /dev
# mounted):
#   1. `cargo run --release`: started, /health polled until it answers, then stopped (SIGTERM);
#   2. `scripts/test.sh`: run to completion.
# Prints the outcome and the time of each step, and writes them to $FRESH_ROOT_DIR.result.
# Needs root and network access to the Debian mirror, crates.io and PyPI. Run once per release
# (it takes long: every build in the root is cold), not in every CI run:
#
#   scripts/fresh-root.sh
#
#   FRESH_ROOT_DIR        the root's folder (default /var/tmp/certus-fresh-root; removed first)
#   FRESH_ROOT_SUITE      Debian suite (default stable)
#   FRESH_ROOT_MIRROR     Debian mirror (default: the first one this machine's apt uses)
#   FRESH_ROOT_TOOLCHAIN  how the root gets Rust:
#                           rustup  the README's way (rustup-init from static.rust-lang.org, the
#                                   default profile, plus nightly for the fuzzers); the default
#                                   when static.rust-lang.org answers
#                           copy    this machine's ~/.rustup and ~/.cargo/bin, copied into the
#                                   root; the default when static.rust-lang.org does not answer
#   FRESH_ROOT_KEEP=1     keep the root afterwards (it is removed at the end otherwise)
#
# Only committed work is tested: the root gets a `git clone` of HEAD.
set -euo pipefail
# One compound command: bash parses it whole before running it, so editing this file while a run
# is in progress (it takes long) cannot change what the run executes.
{
cd "$(dirname "$0")/.."
repo="$PWD"

[ "$(id -u)" -eq 0 ] || { echo "scripts/fresh-root.sh needs root (debootstrap, chroot, mount)" >&2; exit 1; }

root="${FRESH_ROOT_DIR:-/var/tmp/certus-fresh-root}"
suite="${FRESH_ROOT_SUITE:-stable}"
mirror="${FRESH_ROOT_MIRROR:-}"
if [ -z "$mirror" ]; then
  # deb822 (URIs:) or one-line (deb URL suite ...) sources; the first Debian archive wins.
  mirror="$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ {print $2}' | grep -v security | head -1)"
  [ -n "$mirror" ] || mirror="$(grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{print $2}' | grep -v security | head -1)"
  [ -n "$mirror" ] || mirror="http://deb.debian.org/debian"
fi
result="$root.result"
log="$root.log"

say() { echo "$*" | tee -a "$result"; }
now() { date +%s; }
elapsed() { local s=$(($(now) - $1)); printf '%dm%02ds' $((s / 60)) $((s % 60)); }

mounted=()
service_pid=""
cleanup() {
  status=$?
  if [ -n "$service_pid" ]; then kill -TERM -- "-$service_pid" 2>/dev/null || true; fi
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[$i]}" 2>/dev/null || true; done
  if [ "${FRESH_ROOT_KEEP:-0}" != 1 ] && [ -d "$root" ]; then rm -rf --one-file-system "$root"; fi
  exit "$status"
}
trap cleanup EXIT

if ! command -v debootstrap >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
fi

rm -rf --one-file-system "$root"
: >"$result"
: >"$log"
say "fresh root: Debian $suite from $mirror into $root; repository $(git rev-parse --short=12 HEAD) ($(date -u +%Y-%m-%dT%H:%MZ))"
say "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg)"

t=$(now)
# minbase: Essential packages and apt only; everything else must come from the README's steps.
debootstrap --variant=minbase "$suite" "$root" "$mirror" >>"$log" 2>&1 \
  || { tail -20 "$log" >&2; echo "debootstrap failed; log in $log" >&2; exit 1; }
say "debootstrap --variant=minbase $suite: $(elapsed "$t") ($(. "$root/etc/os-release" && echo "$PRETTY_NAME"))"

# There is no init in a chroot: package scripts must not try to start services.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod +x "$root/usr/sbin/policy-rc.d"
# This machine's network configuration, which a machine on the same network would have too: the
# resolver, the host table (the root shares this machine's host name, which an installed Debian
# machine maps in /etc/hosts and a minbase root does not), the local CA certificates (an intercepting proxy's, if any; trusted once the root's
# ca-certificates package is installed) and pip's global configuration.
cp /etc/resolv.conf "$root/etc/resolv.conf"
cp /etc/hosts "$root/etc/hosts"
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  say "copied into the root: this machine's local CA certificates ($(cd /usr/local/share/ca-certificates && ls ./*.crt | tr '\n' ' '))"
fi
if [ -f /etc/pip.conf ]; then cp /etc/pip.conf "$root/etc/pip.conf"; fi
for fs in proc sys dev dev/pts; do
  mkdir -p "$root/$fs"
  case "$fs" in
    proc) mount -t proc proc "$root/proc" ;;
    sys) mount -t sysfs sys "$root/sys" ;;
    *) mount --bind "/$fs" "$root/$fs" ;;
  esac
  mounted+=("$root/$fs")
done

# A clean environment in the root: nothing of this machine's (CARGO_TARGET_DIR, RUSTUP_HOME...).
in_root() {
  chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
    PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    /bin/bash -c "$1"
}

git clone --quiet --no-hardlinks "$repo" "$root/root/certus-assurance"

# The README: "install a Rust toolchain, 1.85 or newer, with rustfmt and clippy" (rustup's
# default profile), then `apt-get install build-essential pkg-config libssl-dev`.
t=$(now)
in_root 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential pkg-config libssl-dev ca-certificates curl >/dev/null && update-ca-certificates' >>"$log" 2>&1
say "apt-get install build-essential pkg-config libssl-dev (and curl, ca-certificates for rustup): $(elapsed "$t")"
say "Debian's own toolchain in the root: $(in_root 'apt-cache policy rustc cargo' | awk '/^[a-z]/ {p=$1} /Candidate/ {printf "%s %s; ", p, $2}')(the crate needs rust-version $(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml) and scripts/fuzz.sh a nightly toolchain)"

toolchain="${FRESH_ROOT_TOOLCHAIN:-}"
if [ -z "$toolchain" ]; then
  if curl -fsS -m 20 -o /dev/null https://static.rust-lang.org/rustup/dist/x86_64-unknown-linux-gnu/rustup-init; then
    toolchain=rustup
  else
    toolchain=copy
  fi
fi
t=$(now)
case "$toolchain" in
  rustup)
    in_root 'curl -fsS -o /tmp/rustup-init https://static.rust-lang.org/rustup/dist/$(uname -m)-unknown-linux-gnu/rustup-init && chmod +x /tmp/rustup-init && /tmp/rustup-init -y --profile default --no-modify-path' >>"$log" 2>&1
    say "Rust toolchain: rustup-init -y --profile default (the README's way): $(elapsed "$t")"
    ;;
  copy)
    # This machine's toolchains (stable and nightly, with rustup) are copied into the root;
    # crates, PyPI and Debian packages still come from their registries, and nothing else of
    # ~/.cargo (no registry cache) is copied.
    mkdir -p "$root/root/.cargo"
    cp -a "${RUSTUP_HOME:-$HOME/.rustup}" "$root/root/.rustup"
    cp -a "${CARGO_HOME:-$HOME/.cargo}/bin" "$root/root/.cargo/bin"
    say "Rust toolchain: COPIED from this machine (~/.rustup and ~/.cargo/bin; FRESH_ROOT_TOOLCHAIN=copy or static.rust-lang.org not answering), not installed the README's way: $(elapsed "$t")"
    ;;
  *) echo "FRESH_ROOT_TOOLCHAIN is rustup or copy, not $toolchain" >&2; exit 1 ;;
esac
say "toolchain in the root: $(in_root 'rustc --version; cargo --version' | tr '\n' ' ')"
# What the lock file really needs (the packages' rust-version), to compare with Debian's rustc.
needed="$(in_root 'cd /root/certus-assurance && cargo metadata --locked --format-version 1 --filter-platform "$(rustc -vV | sed -n "s/^host: //p")"' 2>>"$log" \
  | python3 -c 'import json, sys; v = [p["rust_version"] for p in json.load(sys.stdin)["packages"] if p.get("rust_version")]; print(max(v, key=lambda s: [int(x) for x in s.split(".")]))' 2>>"$log" || echo unknown)"
say "highest rust-version among the locked dependencies: $needed"

# 1. `cargo run --release`: the service answers /health on its default address. When another
# process already holds 127.0.0.1:8056 on this machine (the root shares its network), the
# service gets a free port through CERTUS_ASSURANCE_LISTEN_ADDR instead.
addr=127.0.0.1:8056
if (exec 3<>/dev/tcp/127.0.0.1/8056) 2>/dev/null; then
  addr="127.0.0.1:$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  say "127.0.0.1:8056 is taken on this machine: the service listens on $addr (CERTUS_ASSURANCE_LISTEN_ADDR)"
fi
t=$(now)
setsid chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
  PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  CERTUS_ASSURANCE_LISTEN_ADDR="$addr" \
  /bin/bash -c 'cd /root/certus-assurance && exec cargo run --release' >"$root.service.log" 2>&1 &
service_pid=$!
healthy=0
while kill -0 "$service_pid" 2>/dev/null; do
  if curl -fsS -m 5 "http://$addr/health" >/dev/null 2>&1; then healthy=1; break; fi
  sleep 5
done
if [ "$healthy" = 1 ]; then
  say "cargo run --release: PASS, /health answered after $(elapsed "$t") (cold release build included)"
  kill -TERM -- "-$service_pid" 2>/dev/null || true
  wait "$service_pid" 2>/dev/null || true
  service_pid=""
else
  wait "$service_pid" 2>/dev/null || true
  service_pid=""
  tail -30 "$root.service.log" >&2
  say "cargo run --release: FAIL after $(elapsed "$t"): the service exited before /health answered (log $root.service.log)"
fi

# 2. `scripts/test.sh`, to completion. A fresh machine has no PostgreSQL: when this machine's
# answers at the default test URL (the root shares its network), the tests are pointed at a
# port where nothing answers, so that scripts/test.sh provisions its own server as it would there.
pg_env=""
if (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
  pg_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  pg_env="export CERTUS_ASSURANCE_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:$pg_port/test;"
  say "127.0.0.1:5432 answers on this machine: the tests get CERTUS_ASSURANCE_TEST_POSTGRES_URL on port $pg_port, where nothing answers"
fi
t=$(now)
test_status=0
in_root "$pg_env cd /root/certus-assurance && scripts/test.sh" >"$root.test.log" 2>&1 || test_status=$?
if [ "$test_status" = 0 ]; then
  say "scripts/test.sh: PASS after $(elapsed "$t") (cold debug, clippy and fuzz builds included)"
else
  tail -40 "$root.test.log" >&2
  say "scripts/test.sh: FAIL (exit $test_status) after $(elapsed "$t") (log $root.test.log)"
fi
sed -n '/^== skipped tests/,$p; /^== no test skipped/p' "$root.test.log" | tee -a "$result"
if [ "$healthy" = 1 ] && [ "$test_status" = 0 ]; then exit 0; else exit 1; fi
}
