#!/usr/bin/env bash
# sandbox.sh - jwt-signerd.service as installed, scored and really run
# under systemd, in one of two ways:
#   sandbox.sh SOURCE_DIR BINARY_DIR   ctest deploy.systemd: `cmake --install`
#       into a DESTDIR; `systemd-analyze security --offline=true` must score
#       the installed unit 2.0 or lower; a program is built against the
#       installed client library with pkg-config; then the host's own systemd
#       boots as PID 1 in a podman container over a throw-away overlay of the
#       host's root, and the installed tree is copied in (with what the .deb's
#       maintainer scripts do: sysusers, tmpfiles).
#   sandbox.sh --deb DEB_DIR SOURCE_DIR  make deb-check: a fresh Debian 12
#       (debootstrap --variant=minbase with systemd-sysv, kept in
#       DEB_DIR/rootfs, used through an overlay) boots the same way, and the
#       packages in DEB_DIR are installed with apt-get from the Debian mirror.
# Then, either way: the README's provisioning steps as written (TLS files, PIN
# file, SoftHSM token, keys) and `systemctl start`. Type=notify: start
# returns only once the daemon said READY; the process runs as jwt-signer with
# no capabilities, no_new_privs, a seccomp filter, read-only /usr and /etc,
# no /home, no devices, a private /tmp; a token is signed through it and
# verified against its JWKS; `systemctl reload` (SIGHUP) keeps it active;
# watchdog keep-alives arrive; `systemctl stop` ends it with status 0.
# Needs root and podman (scripts/deps.sh); --deb also debootstrap and the
# network. Nothing on the host is changed (the container writes to overlays
# removed at exit).
set -euo pipefail

usage="usage: sandbox.sh SOURCE_DIR BINARY_DIR | sandbox.sh --deb DEB_DIR SOURCE_DIR"
mode=install
if [[ "${1:-}" == --deb ]]; then
    mode=deb
    debdir="$(cd "${2:?$usage}" && pwd)"
    src="$(cd "${3:?$usage}" && pwd)"
else
    src="$(cd "${1:?$usage}" && pwd)"
    bin="$(cd "${2:?$usage}" && pwd)"
fi
say() { echo "sandbox: $*"; }
die() { echo "sandbox: FAIL: $*" >&2; exit 1; }

[[ "$(id -u)" -eq 0 ]] || die "needs root (systemd in a container, podman)"
command -v podman >/dev/null || die "podman not found (scripts/deps.sh installs it)"
command -v systemd-analyze >/dev/null || die "systemd-analyze not found"

tmp="$(mktemp -d /tmp/js-sandbox.XXXXXX)"
name="js-sandbox-$$"
cleanup() {
    podman rm -f -t 0 "$name" >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT

# --- 1. install, score, link ---------------------------------------------------------
if [[ $mode == install ]]; then
    stage="$tmp/root"
    DESTDIR="$stage" cmake --install "$bin" --prefix /usr >"$tmp/install.log"
    unit="$stage/lib/systemd/system/jwt-signerd.service"
    [[ -f "$unit" ]] || die "cmake --install did not install $unit"
    # A program linked against the installed client library by pkg-config
    # alone (--define-prefix: the .pc file is read from the DESTDIR).
    cat >"$tmp/client.c" <<'C'
#include <jwtsigner_client.h>
#include <stdio.h>
int main(void) { return puts(jwtsigner_status_name(7)) < 0; }
C
    pc_dir="$(dirname "$(find "$stage" -name jwtsigner-client.pc | head -n 1)")"
    # shellcheck disable=SC2046 # pkg-config output is a word list
    cc -o "$tmp/client" "$tmp/client.c" $(PKG_CONFIG_PATH="$pc_dir" \
        pkg-config --define-prefix --cflags --libs jwtsigner-client) ||
        die "cannot build a program against the installed client library"
    [[ "$("$tmp/client")" == PERMISSION_DENIED ]] || die "the installed client library misbehaves"
    say "installed client library + pkg-config: a program builds and runs against it"
else
    stage="$tmp/debs"
    mkdir -p "$stage"
    cp "$debdir"/jwt-signer_*.deb "$debdir"/libjwtsigner-client-dev_*.deb "$stage/"
    unit="$tmp/unit/jwt-signerd.service"
    mkdir -p "$tmp/unit"
    dpkg-deb --fsys-tarfile "$stage"/jwt-signer_*.deb | tar -xO ./lib/systemd/system/jwt-signerd.service >"$unit"
    rootfs="$debdir/rootfs"
    if [[ ! -x "$rootfs/lib/systemd/systemd" ]]; then
        command -v debootstrap >/dev/null || die "debootstrap not found (apt-get install debootstrap)"
        say "debootstrap a fresh Debian 12 into $rootfs (once; a few minutes)"
        rm -rf "$rootfs.tmp"
        debootstrap --variant=minbase --include=systemd-sysv bookworm "$rootfs.tmp" \
            http://deb.debian.org/debian >"$tmp/debootstrap.log" 2>&1 ||
            { tail -n 20 "$tmp/debootstrap.log" >&2; die "debootstrap failed"; }
        mv "$rootfs.tmp" "$rootfs"
    fi
fi
score="$(systemd-analyze security --offline=true --no-pager "$unit" 2>&1 | tail -n 1)"
say "$score"
# --threshold: exit status non-zero when the exposure is above 2.0 (20 tenths).
systemd-analyze security --offline=true --threshold=20 "$unit" >/dev/null 2>&1 ||
    die "systemd-analyze security scores the unit above 2.0: $score"

# --- 2. boot systemd, install, provision ---------------------------------------------
# /tmp and /run are fresh tmpfs (podman would otherwise copy the host's /tmp,
# sockets included, into them); the host's / is the read-only lower layer.
# basic.target, not the default: the host's own enabled services (which share
# its network here) stay down.
# /dev/js-probe: a device node the sandbox must hide (PrivateDevices); podman's
# /dev has only pseudo-devices otherwise.
podman run -d --name "$name" --systemd=always --network host --cap-add SYS_ADMIN,SYS_PTRACE \
    --device /dev/null:/dev/js-probe \
    --tmpfs /tmp:rw,notmpcopyup --tmpfs /run:rw,notmpcopyup \
    -v "$stage:/mnt/stage:ro" -v "$src/scripts:/mnt/scripts:ro" \
    --rootfs "$([[ $mode == install ]] && echo / || echo "$rootfs"):O" \
    /lib/systemd/systemd --unit=basic.target >/dev/null
cx() { podman exec "$name" "$@"; }
for _ in $(seq 1 100); do
    state="$(cx systemctl is-system-running 2>/dev/null || true)"
    [[ "$state" == running || "$state" == degraded ]] && break
    sleep 0.2
done
[[ "$state" == running || "$state" == degraded ]] || die "systemd in the container did not boot ($state)"
say "systemd booted in the container ($state)"

# The gRPC port: free on the host (the container shares its network), so a
# dev signer on 8443 does not collide.
port="$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
http_port="$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"

if [[ $mode == install ]]; then
    cx bash -euo pipefail -c "
    # --keep-directory-symlink: /lib is a symlink to usr/lib on a merged /usr.
    tar -C /mnt/stage -cf - . | tar -C / -xf - --keep-directory-symlink
    # What the .deb's maintainer scripts do (dh_installsysusers, dh_installtmpfiles).
    systemd-sysusers jwt-signer.conf
    systemd-tmpfiles --create jwt-signer.conf
    systemctl daemon-reload"
else
    # README "Installing the package": apt-get resolves the dependencies
    # (Recommends included: SoftHSM). openssl for the PIN and the test PKI.
    cx bash -euo pipefail -c "
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq /mnt/stage/*.deb openssl >/tmp/apt.log 2>&1 ||
        { tail -n 30 /tmp/apt.log; exit 1; }
    id jwt-signer >/dev/null
    test -d /var/lib/jwt-signer/tokens && test -d /var/log/jwt-signer
    ! systemctl is-enabled jwt-signerd >/dev/null 2>&1" ||
        die "apt-get install of the packages failed, or left no user/directories, or enabled the unit"
    say "apt-get installed $(cd "$stage" && echo *.deb) on a fresh Debian 12"
fi
cx bash -euo pipefail -c "
# README 'Running as a systemd service', provisioning:
install -d -m 0750 -g jwt-signer /etc/jwt-signer/tls
/mnt/scripts/mkpki.sh /tmp/pki --caller login spiffe://example.org/login >/dev/null
install -m 0644 /tmp/pki/ca.crt /tmp/pki/server.crt /etc/jwt-signer/tls/
install -m 0640 -g jwt-signer /tmp/pki/server.key /etc/jwt-signer/tls/
(umask 027 && openssl rand -hex 16 >/etc/jwt-signer/hsm-pin) && chgrp jwt-signer /etc/jwt-signer/hsm-pin
runuser -u jwt-signer -- env SOFTHSM2_CONF=/etc/jwt-signer/softhsm2.conf softhsm2-util --init-token \
    --free --label jwt-signer --pin \"\$(cat /etc/jwt-signer/hsm-pin)\" --so-pin \"\$(openssl rand -hex 16)\" >/dev/null
sed -i 's/^listen: .*/listen: \"127.0.0.1:$port\"/; s/^  listen: \"127.0.0.1:8080\"/  listen: \"127.0.0.1:$http_port\"/' /etc/jwt-signer/signer.yaml
# The operator's edits: the real caller and admin instead of the placeholders,
# and (to test the socket under the unit) the ExternalJWTSigner with root's
# kube-apiserver as its caller.
sed -i 's|spiffe://example.invalid/replace-me|spiffe://example.org/login|; s|^admins: \[\]|admins: [spiffe://example.org/ops/admin]|' /etc/jwt-signer/policy.yaml
cat >>/etc/jwt-signer/policy.yaml <<'YAML'
  - id: unix:uid=0
    audiences: [\"https://kubernetes.default.svc\"]
    max_ttl: 24h
    subject: '^system:serviceaccount:[a-z0-9-]+:[a-z0-9-]+\$'
    claims:
      kubernetes.io: {type: object, max_bytes: 4096}
YAML
printf 'externaljwt:\n  socket: /run/jwt-signer/externaljwt.sock\n  mode: \"0660\"\n' >>/etc/jwt-signer/signer.yaml
jwt-signerd check-policy /etc/jwt-signer/policy.yaml >/dev/null
for k in --key=es256-1 --audit-key; do
    runuser -u jwt-signer -- env SOFTHSM2_CONF=/etc/jwt-signer/softhsm2.conf \
        jwt-signerd keygen --config /etc/jwt-signer/signer.yaml \${k/=/ } >/dev/null
done
systemd-analyze verify --man=no jwt-signerd.service
"
say "installed and provisioned (user jwt-signer, token, keys es256-1 and audit)"

# --- 3. start, inspect, sign, reload, watchdog, stop ---------------------------------
cx timeout 120 systemctl start jwt-signerd || { cx journalctl -u jwt-signerd --no-pager | tail -n 30; die "systemctl start failed"; }
show() { cx systemctl show -p "$1" --value jwt-signerd; }
# Whether the unit's journal has a log line with this event. Not
# `journalctl | grep -q`: grep stops at the first match, journalctl then dies
# of SIGPIPE, and pipefail turns a match into a failure.
logged() {
    local log
    log="$(cx journalctl -u jwt-signerd --no-pager)"
    grep -q "\"event\":\"$1\"" <<<"$log"
}
[[ "$(show ActiveState)/$(show SubState)" == active/running ]] || die "not active/running after start"
status_text="$(show StatusText)"
[[ "$status_text" == serving\ on\ 127.0.0.1:$port* ]] || die "no READY status line from sd_notify: '$status_text'"
say "active; sd_notify status: $status_text"
pid="$(show MainPID)"
st="$(cx cat /proc/"$pid"/status)"
grep -Eq "^Uid:[[:space:]]+$(cx id -u jwt-signer)[[:space:]]" <<<"$st" || die "not running as jwt-signer"
grep -Eq '^NoNewPrivs:[[:space:]]+1$' <<<"$st" || die "no_new_privs not set"
grep -Eq '^Seccomp:[[:space:]]+2$' <<<"$st" || die "no seccomp filter"
grep -Eq '^CapBnd:[[:space:]]+0+$' <<<"$st" || die "capability bounding set not empty"
grep -Eq '^CapEff:[[:space:]]+0+$' <<<"$st" || die "effective capabilities not empty"
# Read-only /usr and /etc as the daemon sees them (its mount namespace: the
# container gets CAP_SYS_ADMIN and CAP_SYS_PTRACE for nsenter alone); its
# state directory writable.
probe() { cx nsenter -t "$pid" -m sh -c "$1" 2>&1 || echo "probe failed"; }
[[ "$(probe 'touch /usr/js-probe 2>/dev/null && echo writable || echo ro')" == ro ]] || die "/usr writable in the sandbox"
[[ "$(probe 'touch /etc/jwt-signer/js-probe 2>/dev/null && echo writable || echo ro')" == ro ]] ||
    die "/etc writable in the sandbox"
[[ "$(probe 'touch /var/lib/jwt-signer/js-probe && rm /var/lib/jwt-signer/js-probe && echo rw')" == rw ]] ||
    die "state directory not writable in the sandbox"
[[ "$(probe 'find /home /root -mindepth 1 2>/dev/null | wc -l')" == 0 ]] || die "/home or /root visible in the sandbox"
[[ "$(cx test -c /dev/js-probe && echo there)" == there ]] || die "the probe device is missing outside the sandbox"
[[ "$(probe 'test -e /dev/js-probe && echo dev || echo none')" == none ]] ||
    die "devices visible in the sandbox (PrivateDevices)"
[[ "$(probe 'ls /tmp | wc -l')" == 0 ]] || die "the host's /tmp visible in the sandbox (PrivateTmp)"
say "sandboxed: uid jwt-signer, no capabilities, no_new_privs, seccomp, read-only /usr and /etc, no /home, no devices"

conn=(--target "127.0.0.1:$port" --ca /tmp/pki/ca.crt --cert /tmp/pki/login.crt --key /tmp/pki/login.key)
token="$(cx jwt-sign "${conn[@]}" sign '{"sub":"3f0c6f1e-8c1a-4b7e-9d2a-5e6f7a8b9c0d","aud":"https://api.example.org"}')"
[[ "$token" =~ ^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$ ]] || die "sign did not return a JWT: $token"
jwks="$(curl -fsS "http://127.0.0.1:$http_port/.well-known/jwks.json")"
/usr/bin/python3 - "$token" "$jwks" <<'PY' || die "the token does not verify against the JWKS"
import json, sys
import jwt
token, jwks = sys.argv[1], json.loads(sys.argv[2])
kid = jwt.get_unverified_header(token)["kid"]
key = next(k for k in jwks["keys"] if k["kid"] == kid)
claims = jwt.decode(token, jwt.PyJWK(key).key, algorithms=["ES256"], audience="https://api.example.org")
assert claims["iss"] == "https://jwt-signer.example.org", claims
PY
say "signed a token through the sandboxed daemon; it verifies against /.well-known/jwks.json"

# The ExternalJWTSigner socket in RuntimeDirectory=, reached by root (unix:uid=0).
meta="$(cx jwt-sign --unix /run/jwt-signer/externaljwt.sock k8s-metadata)" ||
    die "k8s-metadata through /run/jwt-signer/externaljwt.sock failed"
grep -q 86400 <<<"$meta" || die "k8s-metadata: no max token expiration of 24h: $meta"
say "ExternalJWTSigner socket under the unit: $(tr '\n' ' ' <<<"$meta")"

[[ "$(show WatchdogUSec)" == 2min ]] || die "WatchdogSec is not 2min: $(show WatchdogUSec)"
cx systemctl reload jwt-signerd
# systemctl reload returns once /bin/kill did; the daemon then says RELOADING
# and READY: wait for active again.
for _ in $(seq 1 50); do
    [[ "$(show ActiveState)" == active ]] && logged policy_reloaded && break
    sleep 0.2
done
[[ "$(show ActiveState)" == active ]] || die "not active after reload"
logged policy_reloaded ||
    die "no policy_reloaded event in the journal after systemctl reload"
# WATCHDOG=1 every 5 s: the timestamp must move within 6 s.
wd1="$(show WatchdogTimestampMonotonic)"
for _ in $(seq 1 30); do
    [[ "$(show WatchdogTimestampMonotonic)" != "$wd1" ]] && break
    sleep 0.2
done
[[ "$(show WatchdogTimestampMonotonic)" != "$wd1" ]] || die "no watchdog keep-alive within 6 s"
say "systemctl reload: the policy reloaded, still active; watchdog keep-alives arrive"

if [[ $mode == deb ]]; then
    # An upgrade (the same package again) restarts an enabled, running signer.
    cx systemctl enable jwt-signerd 2>/dev/null
    old_pid="$(show MainPID)"
    cx bash -c 'DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --reinstall /mnt/stage/jwt-signer_*.deb >/tmp/apt2.log 2>&1' ||
        die "apt-get install --reinstall failed"
    [[ "$(show ActiveState)" == active && "$(show MainPID)" != "$old_pid" ]] ||
        die "after an upgrade the signer is not running again (ActiveState $(show ActiveState))"
    say "upgrade: the package's scripts restarted the enabled signer"
fi

cx systemctl stop jwt-signerd
[[ "$(show Result)" == success && "$(show ExecMainStatus)" == 0 ]] ||
    die "stop: Result=$(show Result) ExecMainStatus=$(show ExecMainStatus)"
logged stopped || die "no stopped event in the journal"
[[ "$(cx stat -c %U:%a /var/log/jwt-signer/audit)" == jwt-signer:700 ]] ||
    die "audit directory: $(cx stat -c %U:%a /var/log/jwt-signer/audit)"
say "systemctl stop: exit 0; audit log owned by jwt-signer, mode 0700"
say "PASS"
