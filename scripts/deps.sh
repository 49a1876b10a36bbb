#!/usr/bin/env bash
# deps.sh - install the Debian 12 packages jwt-signer needs to build, test and
# run. Checks with dpkg-query first and does nothing (quietly) when every
# package is installed; otherwise runs apt-get as root, or prints the exact
# command and fails when not root.
#   deps.sh           everything: build, run, test, lint, package (make test, make deb)
#   deps.sh --build   only what `make build` and `make run` need (docker-compose.yml)
set -euo pipefail

packages=(
    build-essential cmake pkg-config
    libgrpc-dev libprotobuf-c-dev protobuf-c-compiler libprotobuf-dev
    # sd_notify for the unit's Type=notify (signer/svcnotify.c)
    libsystemd-dev
    libssl-dev openssl libjansson-dev libyaml-dev libp11-kit-dev p11-kit libmicrohttpd-dev
    libcmocka-dev softhsm2 libsofthsm2 opensc ca-certificates
)
if [[ "${1:-}" != --build ]]; then
    packages+=(
        python3 python3-authlib python3-cryptography python3-jwt python3-jwcrypto python3-grpcio python3-grpc-tools
        python3-prometheus-client
        # promtool for ctest deploy.alerts. The package also installs (and, on a
        # host booted with systemd, enables and starts) a prometheus service on
        # :9090: acceptable on a dev or CI machine; stop or mask it if unwanted.
        prometheus
        # ctest deploy.systemd: systemd-analyze security scores the unit, then the
        # host's systemd boots in a podman container to run it (tests/deploy/sandbox.sh)
        systemd podman curl
        # ctest deploy.man: mandoc -Tlint on the man pages
        mandoc
        # make deb (dpkg-buildpackage, lintian) and make deb-check (debootstrap)
        dpkg-dev debhelper lintian debootstrap
        clang libclang-rt-14-dev clang-format clang-tidy
    )
fi

if [[ "${1:-}" != --build ]]; then
    # node 18+ and npm run the integration tests' independent JOSE and OIDC
    # verifiers (tests/node: npm's jose and openid-client). A NodeSource nodejs
    # bundles npm and conflicts with Debian's npm package, so Debian's nodejs and
    # npm are added only when there is no npm command at all.
    if ! command -v npm >/dev/null; then
        packages+=(nodejs npm)
    elif node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null)" &&
        [[ "$node_major" =~ ^[0-9]+$ ]] && ((node_major < 18)); then
        echo "deps.sh: node $(node --version) is too old: the tests need node 18 or later" >&2
        exit 1
    fi
fi

if ! command -v dpkg-query >/dev/null; then
    echo "deps.sh: dpkg-query not found: this script supports Debian 12 only" >&2
    exit 1
fi

missing() {
    local p status
    for p in "${packages[@]}"; do
        status="$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)"
        if [[ "$status" != installed ]]; then
            printf '%s\n' "$p"
        fi
    done
}

mapfile -t todo < <(missing)
[[ ${#todo[@]} -eq 0 ]] && exit 0

if [[ "$(id -u)" -ne 0 ]]; then
    echo "deps.sh: missing packages: ${todo[*]}" >&2
    echo "deps.sh: as root, run:" >&2
    echo "  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${todo[*]}" >&2
    exit 1
fi

echo "deps.sh: installing ${todo[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${todo[@]}" >/dev/null

mapfile -t still < <(missing)
if [[ ${#still[@]} -ne 0 ]]; then
    echo "deps.sh: still missing after apt-get install: ${still[*]}" >&2
    exit 1
fi
