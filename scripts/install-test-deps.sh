#!/usr/bin/env bash
# Installs what the build and the test suite need on a fresh Debian machine: a C toolchain and
# OpenSSL headers (libgit2), promtool (Debian package `prometheus`), git (for `git daemon`), jq.
# Idempotent: installs only what is missing.
set -euo pipefail

need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v git >/dev/null 2>&1 || need+=(git)
command -v jq >/dev/null 2>&1 || need+=(jq)
# psql creates and drops the per-test schemas on the machine's PostgreSQL (127.0.0.1:5432).
command -v psql >/dev/null 2>&1 || need+=(postgresql-client)
# Building the crate: a C compiler and OpenSSL headers for libgit2 (SQLite is compiled in).
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
if ! pkg-config --exists openssl 2>/dev/null; then need+=(libssl-dev); fi

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing test dependencies: ${need[*]}; run this script as root (or install them)" >&2
    exit 1
  fi
  echo "installing test dependencies: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # --no-install-recommends keeps the Prometheus server from pulling in its web assets etc.
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The Prometheus package starts a server through systemd on real hosts; tests start their own.
promtool --version 2>&1 | head -1
git --version
