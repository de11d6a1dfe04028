#!/usr/bin/env bash
# Installs what the tests and the sandbox need and a fresh machine may lack:
# moto (pinned) in .tools/venv, and kubectl if it is not on PATH.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
MOTO_VERSION=5.2.5

if [ ! -x "$root/.tools/venv/bin/moto_server" ]; then
  echo "installing moto[server]==$MOTO_VERSION into .tools/venv"
  python3 -m venv "$root/.tools/venv"
  "$root/.tools/venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi

if ! command -v kubectl >/dev/null 2>&1; then
  echo "installing kubectl (Debian package kubernetes-client)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq kubernetes-client
fi
