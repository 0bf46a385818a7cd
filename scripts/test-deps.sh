#!/usr/bin/env bash
# Install what the tests need and are not part of the Rust toolchain: a Python venv with the
# official OpenAI SDK (tests/sdk), Node.js with the official OpenAI Node SDK (tests/sdk-node,
# pinned by its package-lock.json), and redis-server (the ValKey tests of drawbridge-state start
# their own). Idempotent and quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
requirements=tests/sdk/requirements.txt
stamp="$venv/.requirements"

apt_install() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: missing $*; install them (needs root): apt-get install -y $*" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # A fresh machine may have no package lists yet: update once if the first try fails.
  apt-get install -y -qq "$@" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "$@" >/dev/null; }
}

if ! command -v redis-server >/dev/null 2>&1; then
  apt_install redis-server
fi
if ! command -v python3 >/dev/null 2>&1; then
  apt_install python3 python3-venv python3-pip
fi
if [ ! -x "$venv/bin/python" ]; then
  if ! python3 -m venv "$venv" 2>/dev/null; then
    rm -rf "$venv"
    apt_install python3-venv
    python3 -m venv "$venv"
  fi
fi
if ! cmp -s "$requirements" "$stamp"; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
fi

node_suite=tests/sdk-node
node_lock="$node_suite/package-lock.json"
node_stamp="$node_suite/node_modules/.lock-installed"

if ! command -v node >/dev/null 2>&1; then
  apt_install nodejs npm
elif ! command -v npm >/dev/null 2>&1; then
  apt_install npm
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  echo "warning: Node.js $(node --version) is older than the OpenAI Node SDK supports (20 or later)" >&2
fi
if ! cmp -s "$node_lock" "$node_stamp"; then
  (cd "$node_suite" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$node_lock" "$node_stamp"
fi
