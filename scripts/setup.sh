#!/usr/bin/env bash
# Installs everything the project needs on a fresh machine, idempotently:
# Debian packages (redis-server, Java, Maven, libpython for Triton's stub, Go), the venv and its packages,
# the Kafka jars from Maven Central, and the kustomize renderer of the deployment tests.
# Safe to run again: finished steps are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v java >/dev/null || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need_apt+=(maven)
[ -e /usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0 ] || [ -e /lib/x86_64-linux-gnu/libpython3.11.so.1.0 ] || need_apt+=(libpython3.11)
command -v go >/dev/null || need_apt+=(golang-go)
# the review page's browser test (tests/test_review.py): Debian's Chromium and its driver
command -v chromium >/dev/null || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
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

# a venv whose creation failed (e.g. without Debian's python3.X-venv: no ensurepip) has bin/python but no pip;
# every later run would skip creating it and fail at .venv/bin/pip (one this script finished is left alone)
if [ -e .venv ] && [ ! -x .venv/bin/pip ] && ! compgen -G '.venv/.setup-*' >/dev/null; then
  echo "setup: removing a half-built .venv (it has no pip: its creation failed)"
  rm -rf .venv
fi

req_hash=$(cat pyproject.toml tools/pyproject.toml | sha256sum | cut -c1-12)
stamp=.venv/.setup-$req_hash
if [ ! -e "$stamp" ]; then
  if [ -x .venv/bin/python ]; then
    echo "setup: pyproject.toml changed since .venv was installed: updating its packages"
  else
    echo "setup: creating the virtual environment (.venv) and installing packages (torch is large: first run takes minutes)"
    if ! "$PY" -c 'import ensurepip' 2>/dev/null && command -v apt-get >/dev/null; then
      # Debian splits ensurepip, which venv needs, into python3.X-venv
      venv_pkg=python$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv
      echo "setup: $PY has no ensurepip (needed by venv): installing Debian's $venv_pkg"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends "$venv_pkg" >/dev/null
    fi
    if ! "$PY" -m venv .venv; then
      rm -rf .venv
      echo "setup: creating .venv with $PY failed (see above)" >&2
      exit 1
    fi
  fi
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

# kustomize, for the offline deployment tests (tests/test_deploy.py): deploy/tools/kustomize-render, a small Go
# program pinned to the kustomize API by its go.mod/go.sum, built once per version of its sources into the
# cache (modules come from the Go module proxy the first time, then from the module cache).
kr_src=deploy/tools/kustomize-render
kr_cache=${LISTINGS_CACHE_DIR:-$HOME/.cache/listing-classifier}
kr_bin=$kr_cache/bin/kustomize-render-$(cat "$kr_src/go.mod" "$kr_src/go.sum" "$kr_src/main.go" | sha256sum | cut -c1-12)
if [ ! -x "$kr_bin" ]; then
  echo "setup: building kustomize-render (deploy/tools/kustomize-render; a minute or two the first time)"
  gocmd=go
  # Go >= 1.21 fetches the toolchain go.mod asks for by itself (GOTOOLCHAIN=auto); Debian 12's golang-go (1.19)
  # cannot, so fetch that toolchain once from the module proxy as the module golang.org/toolchain
  if [ "$(go version | sed -n 's/.*go1\.\([0-9]*\).*/\1/p')" -lt 21 ]; then
    want=$(sed -n 's/^go \(1\.[0-9.]*\)$/\1/p' "$kr_src/go.mod")
    tc=$kr_cache/go$want
    if [ ! -x "$tc/bin/go" ]; then
      mod="golang.org/toolchain@v0.0.1-go$want.linux-$(go env GOARCH)"
      # on failure the reason is in the JSON on stdout ("Error": ...), not on stderr
      if ! json=$(cd / && GO111MODULE=on GOFLAGS= go mod download -json "$mod" 2>&1); then
        echo "setup: downloading the Go $want toolchain ($mod) from the Go module proxy failed:" >&2
        echo "$json" >&2
        exit 1
      fi
      dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$json")
      mkdir -p "$(dirname "$tc")"
      rm -rf "$tc.tmp"
      cp -r "$dir" "$tc.tmp"
      chmod -R u+w "$tc.tmp"
      chmod +x "$tc.tmp"/bin/* "$tc.tmp"/pkg/tool/*/*
      mv "$tc.tmp" "$tc"
    fi
    gocmd=$tc/bin/go
  fi
  mkdir -p "$(dirname "$kr_bin")"
  if ! log=$(cd "$kr_src" && CGO_ENABLED=0 GOTOOLCHAIN=auto GOFLAGS=-mod=readonly "$gocmd" build -trimpath -o "$kr_bin.tmp" . 2>&1); then
    echo "$log" >&2
    exit 1
  fi
  mv "$kr_bin.tmp" "$kr_bin"
  ln -sfn "$(basename "$kr_bin")" "$(dirname "$kr_bin")/kustomize-render"
fi
echo "setup: ready"
