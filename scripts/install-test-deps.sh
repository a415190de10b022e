#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine: promtool (Debian package
# `prometheus`), git (for `git daemon`), jq. Idempotent: installs only what is missing.
set -euo pipefail

need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v git >/dev/null 2>&1 || need+=(git)
command -v jq >/dev/null 2>&1 || need+=(jq)
# `git daemon` lives in git-daemon-run's dependency on Debian's git package itself; check it.
if command -v git >/dev/null 2>&1 && ! git daemon --help >/dev/null 2>&1; then
  need+=(git)
fi

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
