#!/usr/bin/env bash
# Installs what the build and the test suite need on a fresh Debian machine: a C toolchain and
# OpenSSL headers (libgit2), promtool and the Prometheus server (Debian package `prometheus`),
# Alertmanager and amtool (`prometheus-alertmanager`), kubectl (its built-in kustomize builds
# deploy/kubernetes), git (for `git daemon`), psql, jq. Idempotent: installs only what is missing.
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
git --version
