#!/usr/bin/env bash
# Installs everything the project needs on a fresh machine, idempotently:
# Debian packages (redis-server, Java, Maven, libpython for Triton's stub), the venv and its packages,
# and the Kafka jars from Maven Central. Safe to run again: finished steps are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v java >/dev/null || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need_apt+=(maven)
[ -e /usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0 ] || [ -e /lib/x86_64-linux-gnu/libpython3.11.so.1.0 ] || need_apt+=(libpython3.11)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # the Debian package starts a system redis on 6379; the project runs its own on loopback
  if [[ " ${need_apt[*]} " == *" redis-server "* ]]; then
    (service redis-server stop || systemctl stop redis-server || true) >/dev/null 2>&1
  fi
fi

req_hash=$(cat pyproject.toml tools/pyproject.toml | sha256sum | cut -c1-12)
stamp=.venv/.setup-$req_hash
if [ ! -e "$stamp" ]; then
  echo "setup: creating the virtual environment (.venv) and installing packages (torch is large: first run takes minutes)"
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  # A wheelhouse outside the checkout, filled once per dependency set: later checkouts (and CI) of the same
  # pyproject install from it without downloading torch again (the registry's answers are not HTTP-cacheable).
  wheels=${LISTINGS_CACHE_DIR:-$HOME/.cache/listing-classifier}/wheels
  if [ ! -e "$wheels/.complete-$req_hash" ]; then
    mkdir -p "$wheels"
    .venv/bin/pip download -q -d "$wheels" '.[dev]' ./tools 'setuptools>=68' wheel
    touch "$wheels/.complete-$req_hash"
  fi
  # the runtime (package `stream`) and, beside it, the developer tools (packages `training`, `devtools`)
  .venv/bin/pip install -q --no-index --find-links "$wheels" -e '.[dev]' -e ./tools
  rm -f .venv/.setup-*
  touch "$stamp"
fi

.venv/bin/python -c "from devtools.config import load; from devtools.stack.kafka import ensure_jars; ensure_jars(load())"
echo "setup: ready"
