#!/usr/bin/env bash
# Installs what stickylab needs, only when it is missing: Debian packages, a project-local Python venv
# with the test clients, and the official socket.io JavaScript client bundle. A fast no-op when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
    libhiredis-dev redis-server redis-tools   # Redis client (hiredis) and the embedded Redis
    python3-venv                                # the test venv
    nodejs                                      # the official socket.io client in Node (interop tests)
    chromium chromium-driver                    # browser tests
    haproxy nginx wrk                           # benchmark references
    procps psmisc curl ca-certificates unzip    # process tools used by tests
)
SOCKETIO_JS_SHA256=b0e735814f8dcfecd6cdb8a7ce95a297a7e1e5f2727a29e6f5901801d52fa0c5

say() { printf 'deps: %s\n' "$*"; }

missing=()
for package in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
    # A python3 that is not Debian's (pyenv) does not need python3-venv; skip it when venv already works.
    if python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        filtered=()
        for package in "${missing[@]}"; do [ "$package" = python3-venv ] || filtered+=("$package"); done
        missing=("${filtered[@]}")
    fi
fi
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        say "missing Debian packages: ${missing[*]}; run 'make deps' as root or install them with apt-get" >&2
        exit 1
    fi
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts these services on install; stickylab starts its own on free ports.
    for service in redis-server nginx haproxy; do
        if command -v systemctl >/dev/null && systemctl is-active --quiet "$service" 2>/dev/null; then systemctl stop "$service" || true; fi
        service "$service" stop >/dev/null 2>&1 || true
    done
fi

stamp=.venv/.requirements.sha256
want=$(cat requirements-test.txt constraints-test.txt | sha256sum | cut -d' ' -f1)
if ! .venv/bin/python -c 'import pip' >/dev/null 2>&1; then
    # Missing, or broken (an interrupted first run, or the interpreter it points to is gone): anew.
    [ -e .venv ] && say "the Python venv .venv is broken; creating it again"
    rm -f "$stamp"
    python3 -m venv --clear .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing the test clients into the Python venv .venv"
    .venv/bin/pip install -q --disable-pip-version-check -r requirements-test.txt -c constraints-test.txt
    echo "$want" > "$stamp"
fi

bundle=.deps/socket.io.min.js
if [ ! -f "$bundle" ] || [ "$(sha256sum "$bundle" | cut -d' ' -f1)" != "$SOCKETIO_JS_SHA256" ]; then
    say "fetching the official socket.io client 4.8.1 (from the nicegui 3.18.0 wheel on PyPI)"
    mkdir -p .deps/wheel
    .venv/bin/pip download -q --disable-pip-version-check --no-deps -d .deps/wheel nicegui==3.18.0
    wheel=$(ls .deps/wheel/nicegui-3.18.0-*.whl | head -n 1)
    .venv/bin/python - "$wheel" "$bundle" <<'PY'
import sys, zipfile
wheel, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as archive, open(target, "wb") as out:
    out.write(archive.read("nicegui/static/socket.io.min.js"))
PY
    got=$(sha256sum "$bundle" | cut -d' ' -f1)
    if [ "$got" != "$SOCKETIO_JS_SHA256" ]; then
        rm -rf "$bundle" .deps/wheel
        say "socket.io.min.js has sha256 $got, expected $SOCKETIO_JS_SHA256; refusing to use it" >&2
        exit 1
    fi
    rm -rf .deps/wheel
fi
