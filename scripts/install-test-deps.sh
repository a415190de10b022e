#!/usr/bin/env bash
# Installs what the build and the test suite need on a fresh Debian machine: a C toolchain and
# OpenSSL headers (libgit2), promtool and the Prometheus server (Debian package `prometheus`),
# Alertmanager and amtool (`prometheus-alertmanager`), kubectl (its built-in kustomize builds
# deploy/kubernetes), git (for `git daemon`), psql, jq, openssl (an HTTPS server with an
# untrusted certificate), curl, python3, the PostgreSQL server binaries when no server is usable
# at the test URL (scripts/test.sh then starts a throwaway one), moto_server (PyPI
# `moto[server]`, the S3 server of the upload tests), schemathesis (PyPI, scripts/api-fuzz.sh), and the nightly toolchain with cargo-fuzz
# (scripts/fuzz.sh). Idempotent: installs only what is missing.
set -euo pipefail

need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v amtool >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v git >/dev/null 2>&1 || need+=(git)
command -v jq >/dev/null 2>&1 || need+=(jq)
# psql creates and drops the per-test schemas on the machine's PostgreSQL (127.0.0.1:5432).
command -v psql >/dev/null 2>&1 || need+=(postgresql-client)
# Building the crate: a C compiler and OpenSSL headers for libgit2 (SQLite is compiled in).
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
if ! pkg-config --exists openssl 2>/dev/null; then need+=(libssl-dev); fi
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# scripts/api-fuzz.sh polls /health with curl; pip, cargo and curl verify TLS with the CA bundle.
command -v curl >/dev/null 2>&1 || need+=(curl)
[ -e /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
# Used by the tests: python3 (free ports, the HTTPS git server, schema validation), tar, kill,
# df, mount/umount (the disk-full fault tests mount a small tmpfs).
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-venv python3-pip)
command -v tar >/dev/null 2>&1 || need+=(tar)
command -v kill >/dev/null 2>&1 || need+=(procps)
command -v mount >/dev/null 2>&1 || need+=(mount)
# scripts/test.sh starts a throwaway PostgreSQL server when none is usable at the test URL: it
# needs the server binaries (initdb, pg_ctl) of Debian's `postgresql`.
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null \
    && ! psql "${CERTUS_ASSURANCE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}" \
      -Atqc 'SELECT 1' >/dev/null 2>&1; then
  need+=(postgresql)
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
  # shellcheck disable=SC2046 # one word per package, duplicates removed
  apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null
fi
if ! command -v kubectl >/dev/null 2>&1; then
  [ "$(id -u)" -eq 0 ] || { echo "missing test dependency: kubectl; run this script as root" >&2; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  # `kubectl` where a Kubernetes apt repository is configured, else Debian's kubernetes-client.
  apt-get install -y -qq --no-install-recommends kubectl >/dev/null 2>&1 || {
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends kubectl >/dev/null 2>&1 \
      || apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null
  }
fi
# The Debian packages start servers through systemd on real hosts; tests start their own, on
# free loopback ports, and stop them.
promtool --version 2>&1 | sed -n 1p
prometheus-alertmanager --version 2>&1 | sed -n 1p
kubectl version --client 2>&1 | sed -n 1p
# The S3 server of the upload tests: moto_server from PyPI, 5.2.5 or later (5.2.1 mis-answers
# multipart completion). Installed for the current python3 when missing or older; where pip may
# not install into the system python (PEP 668), into a virtualenv under the cache directory,
# which the tests look at first.
MOTO_VENV="${CERTUS_TEST_MOTO_VENV:-$HOME/.cache/certus-assurance/moto-venv}"
moto_ok() {
  "$1" - <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
parts = [int(p) for p in version("moto").split(".")[:3] if p.isdigit()]
sys.exit(0 if parts >= [5, 2, 5] else 1)
PY
}
if [ -x "$MOTO_VENV/bin/moto_server" ] && moto_ok "$MOTO_VENV/bin/python3"; then
  :
elif command -v moto_server >/dev/null 2>&1 && command -v python3 >/dev/null 2>&1 && moto_ok python3; then
  :
else
  apt_python() {
    [ "$(id -u)" -eq 0 ] || { echo "moto_server needs python3 with venv; install python3-venv" >&2; exit 1; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends python3 python3-venv python3-pip >/dev/null
  }
  command -v python3 >/dev/null 2>&1 || apt_python
  echo "installing moto[server]>=5.2.5 (S3 server of the upload tests)"
  if ! python3 -m pip install --quiet --disable-pip-version-check 'moto[server]>=5.2.5' 2>/dev/null \
      || ! moto_ok python3; then
    # Debian's python refuses system-wide pip installs (PEP 668): use a virtualenv.
    rm -rf "$MOTO_VENV"
    python3 -m venv "$MOTO_VENV" 2>/dev/null || { rm -rf "$MOTO_VENV"; apt_python; python3 -m venv "$MOTO_VENV"; }
    "$MOTO_VENV/bin/python3" -m pip install --quiet --disable-pip-version-check 'moto[server]>=5.2.5'
  fi
fi

if [ -x "$MOTO_VENV/bin/moto_server" ]; then "$MOTO_VENV/bin/python3" -c 'from importlib.metadata import version; print("moto", version("moto"))'; else python3 -c 'from importlib.metadata import version; print("moto", version("moto"))'; fi
# Python packages: bandit, detect-secrets and ruff (external scanners the tests run for real) and
# jsonschema (validates bundle reports against the schemas vendored in tests/data/schemas).
py_need=()
command -v bandit >/dev/null 2>&1 || py_need+=("bandit==1.9.4")
command -v detect-secrets >/dev/null 2>&1 || py_need+=("detect-secrets==1.5.0")
command -v ruff >/dev/null 2>&1 || py_need+=("ruff==0.17.6")
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
# semgrep (external scanner the tests run for real, offline, with the rules of rules/semgrep/), in
# a virtualenv of its own under the cache directory, which the tests look at first: it pins
# jsonschema and OpenTelemetry versions that conflict with the other Python test dependencies.
SEMGREP_VENV="${CERTUS_TEST_SEMGREP_VENV:-$HOME/.cache/certus-assurance/semgrep-venv}"
if [ ! -x "$SEMGREP_VENV/bin/semgrep" ] || [ "$("$SEMGREP_VENV/bin/semgrep" --version 2>/dev/null)" != "1.185.0" ]; then
  echo "installing semgrep==1.185.0 (external scanner of the test suite)"
  rm -rf "$SEMGREP_VENV"
  python3 -m venv "$SEMGREP_VENV"
  "$SEMGREP_VENV/bin/python3" -m pip install --quiet --disable-pip-version-check 'semgrep==1.185.0'
fi
# schemathesis (scripts/api-fuzz.sh: schema-driven requests against /openapi.json), for the current
# python3, or where pip may not install into it (PEP 668), into a virtualenv under the cache
# directory, which scripts/api-fuzz.sh looks at first.
SCHEMATHESIS_VENV="${CERTUS_TEST_SCHEMATHESIS_VENV:-$HOME/.cache/certus-assurance/schemathesis-venv}"
if [ ! -x "$SCHEMATHESIS_VENV/bin/schemathesis" ] && ! command -v schemathesis >/dev/null 2>&1; then
  echo "installing schemathesis==4.32.5 (API fuzzing against /openapi.json)"
  if ! python3 -m pip install --quiet --disable-pip-version-check 'schemathesis==4.32.5' 2>/dev/null; then
    rm -rf "$SCHEMATHESIS_VENV"
    python3 -m venv "$SCHEMATHESIS_VENV"
    "$SCHEMATHESIS_VENV/bin/python3" -m pip install --quiet --disable-pip-version-check 'schemathesis==4.32.5'
  fi
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
fi
# cargo-fuzz and a nightly toolchain (scripts/fuzz.sh: libFuzzer targets under fuzz/).
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --version 0.13.2
bandit --version 2>&1 | head -1
detect-secrets --version
ruff --version
echo "semgrep $("$SEMGREP_VENV/bin/semgrep" --version)"
git --version
