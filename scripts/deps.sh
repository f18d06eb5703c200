#!/usr/bin/env bash
# Installs what stickylab needs, only when it is missing: Debian packages, a project-local Python venv
# and the official socket.io JavaScript client bundle. A fast no-op when all is there.
#
#   scripts/deps.sh [run|all]        install what the profile needs (default: all)
#   scripts/deps.sh --list [run|all] print the profile's Debian packages, one per line; installs nothing
#
# run: what building and `make run` need: hiredis for the build, redis-server for the embedded Redis,
#      the socket.io client bundle chat-node serves (fetched with pip from a venv without the test clients).
# all: everything: the run profile, plus the test clients in .venv (requirements-test.txt), Node, the
#      browser, the benchmark references and the tools the tests use.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_PACKAGES=(
    libhiredis-dev                              # the Swift build links hiredis (the CHiredis target)
    redis-server redis-tools                    # the embedded Redis that `cluster up` starts
    python3-venv                                # the venv whose pip fetches the socket.io client bundle
    ca-certificates                             # HTTPS for the build's package fetches
)
TEST_PACKAGES=(
    nodejs                                      # the official socket.io client in Node (interop tests)
    chromium chromium-driver                    # browser tests
    haproxy nginx wrk                           # benchmark references
    procps psmisc curl unzip                    # process tools used by tests
)
PROFILES="run (what building and make run need), all (everything, the default)"
SOCKETIO_JS_SHA256=b0e735814f8dcfecd6cdb8a7ce95a297a7e1e5f2727a29e6f5901801d52fa0c5

say() { printf 'deps: %s\n' "$*"; }
usage() { printf 'usage: scripts/deps.sh [--list] [PROFILE]\nprofiles: %s\n--list prints the profile'"'"'s Debian packages, one per line, and installs nothing\n' "$PROFILES"; }

list=false
case "${1-}" in
    --list) list=true; shift ;;
    -h | --help) usage; exit 0 ;;
esac
if [ "$#" -gt 1 ]; then
    say "too many arguments: $*" >&2
    usage >&2
    exit 2
fi
profile=${1-all}
case "$profile" in
    run) APT_PACKAGES=("${RUN_PACKAGES[@]}") ;;
    all) APT_PACKAGES=("${RUN_PACKAGES[@]}" "${TEST_PACKAGES[@]}") ;;
    *)
        say "unknown profile '$profile'; the profiles are: $PROFILES" >&2
        exit 2
        ;;
esac
if $list; then
    printf '%s\n' "${APT_PACKAGES[@]}"
    exit 0
fi

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
        target=deps
        if [ "$profile" = run ]; then target=deps-run; fi
        say "missing Debian packages: ${missing[*]}; run 'make $target' as root or install them with apt-get" >&2
        exit 1
    fi
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts these services on install; stickylab starts its own on free ports.
    for service in redis-server nginx haproxy; do
        case " ${missing[*]} " in *" $service "*) ;; *) continue ;; esac
        if command -v systemctl >/dev/null && systemctl is-active --quiet "$service" 2>/dev/null; then systemctl stop "$service" || true; fi
        service "$service" stop >/dev/null 2>&1 || true
    done
fi

# The venv's stamp holds the hash of the test requirements it has installed; only the all profile
# installs them (and writes it), so `make test` after `make run` still installs them.
stamp=.venv/.requirements.sha256
ensure_venv() {
    if ! .venv/bin/python -c 'import pip' >/dev/null 2>&1; then
        # Missing, or broken (an interrupted first run, or the interpreter it points to is gone): anew.
        if [ -e .venv ]; then say "the Python venv .venv is broken; creating it again"; fi
        rm -f "$stamp"
        python3 -m venv --clear .venv
    fi
}
if [ "$profile" = all ]; then
    ensure_venv
    want=$(cat requirements-test.txt constraints-test.txt | sha256sum | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        say "installing the test clients into the Python venv .venv"
        .venv/bin/pip install -q --disable-pip-version-check -r requirements-test.txt -c constraints-test.txt
        echo "$want" > "$stamp"
    fi
fi

bundle=.deps/socket.io.min.js
if [ ! -f "$bundle" ] || [ "$(sha256sum "$bundle" | cut -d' ' -f1)" != "$SOCKETIO_JS_SHA256" ]; then
    ensure_venv
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
