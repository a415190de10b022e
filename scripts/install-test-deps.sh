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
# Python packages: bandit and detect-secrets (external scanners the tests run for real) and
# jsonschema (validates bundle reports against the schemas vendored in tests/data/schemas).
py_need=()
command -v bandit >/dev/null 2>&1 || py_need+=("bandit==1.9.4")
command -v detect-secrets >/dev/null 2>&1 || py_need+=("detect-secrets==1.5.0")
python3 -c 'import jsonschema, referencing' >/dev/null 2>&1 || py_need+=("jsonschema>=4.18")
if [ ${#py_need[@]} -gt 0 ]; then
  echo "installing Python test dependencies: ${py_need[*]}"
  if ! python3 -m pip --version >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
  fi
  # Debian's own Python refuses global installs unless told otherwise (PEP 668).
  python3 -m pip install -q "${py_need[@]}" 2>/dev/null \
    || python3 -m pip install -q --break-system-packages "${py_need[@]}"
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
fi
# The Prometheus package starts a server through systemd on real hosts; tests start their own.
promtool --version 2>&1 | head -1
git --version
bandit --version 2>&1 | head -1
detect-secrets --version
