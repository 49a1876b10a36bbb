#!/usr/bin/env bash
# mkpki.sh - create the dev/test PKI (EC P-256, openssl CLI) used by the dev
# setup and the integration tests. Idempotent: an existing file is never
# overwritten; a missing certificate is issued from an existing key.
#
# Usage: scripts/mkpki.sh DIR [--caller NAME URI]...
#
# DIR receives NAME.crt and NAME.key (0600) for:
#   ca          trusted CA (the server's client_ca)
#   server      CN=localhost, SAN DNS:localhost,IP:127.0.0.1, serverAuth
#   issuer-a    URI:spiffe://example.org/issuer-a, clientAuth (the allowed caller)
#   admin       URI:spiffe://example.org/ops/admin, clientAuth (the dev policy's
#               admin: jwt-sign ... admin status)
#   intruder    URI:spiffe://example.org/intruder, clientAuth, same CA, not allowed
#   other-ca    an unrelated CA
#   stranger    signed by other-ca and claiming issuer-a's identity
#               (URI:spiffe://example.org/issuer-a), so only the chain check can
#               reject it
#   dns-caller  DNS SAN only: DNS:svc.example.org
#   cn-caller   no SAN, CN=cn-caller
# and, for each --caller NAME URI, NAME with SAN URI:URI signed by ca.
set -euo pipefail

usage() {
    echo "usage: $0 DIR [--caller NAME URI]..." >&2
    exit 2
}

[[ $# -ge 1 ]] || usage
dir="$1"
shift
extra=()
while [[ $# -gt 0 ]]; do
    case "$1" in
    --caller)
        [[ $# -ge 3 ]] || usage
        [[ "$2" =~ ^[A-Za-z0-9._-]+$ ]] || { echo "mkpki: bad caller name: $2" >&2; exit 2; }
        [[ "$3" == *://* ]] || { echo "mkpki: caller URI must look like scheme://...: $3" >&2; exit 2; }
        extra+=("$2" "$3")
        shift 3
        ;;
    *) usage ;;
    esac
done

command -v openssl >/dev/null || { echo "mkpki: openssl not found (run scripts/deps.sh)" >&2; exit 1; }
mkdir -p "$dir"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# A config of our own so the host's openssl.cnf (or OPENSSL_CONF) cannot add
# or clash with extensions.
cat >"$work/req.cnf" <<'CNF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = placeholder
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
CNF

# new_key NAME: DIR/NAME.key (P-256, mode 0600) unless it exists.
new_key() {
    local key="$dir/$1.key"
    [[ -e "$key" ]] && return 0
    (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
        -out "$key.tmp" 2>/dev/null)
    chmod 600 "$key.tmp"
    mv -f "$key.tmp" "$key"
}

# make_ca NAME CN: a self-signed CA, 10 years.
make_ca() {
    local name="$1" cn="$2"
    new_key "$name"
    [[ -e "$dir/$name.crt" ]] && return 0
    openssl req -new -x509 -config "$work/req.cnf" -extensions v3_ca -key "$dir/$name.key" \
        -subj "/CN=$cn" -days 3650 -sha256 -set_serial "0x$(openssl rand -hex 16)" \
        -out "$dir/$name.crt.tmp"
    mv -f "$dir/$name.crt.tmp" "$dir/$name.crt"
}

# make_leaf NAME CA CN EKU [SAN]: an end-entity certificate signed by CA, 825 days.
make_leaf() {
    local name="$1" ca="$2" cn="$3" eku="$4" san="${5:-}"
    new_key "$name"
    [[ -e "$dir/$name.crt" ]] && return 0
    [[ -e "$dir/$ca.crt" && -e "$dir/$ca.key" ]] || { echo "mkpki: missing $ca" >&2; exit 1; }
    {
        echo "basicConstraints = critical,CA:FALSE"
        echo "keyUsage = critical,digitalSignature"
        echo "extendedKeyUsage = $eku"
        echo "subjectKeyIdentifier = hash"
        echo "authorityKeyIdentifier = keyid,issuer"
        if [[ -n "$san" ]]; then echo "subjectAltName = $san"; fi
    } >"$work/$name.ext"
    openssl req -new -config "$work/req.cnf" -key "$dir/$name.key" -subj "/CN=$cn" \
        -out "$work/$name.csr"
    openssl x509 -req -in "$work/$name.csr" -CA "$dir/$ca.crt" -CAkey "$dir/$ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" -days 825 -sha256 \
        -extfile "$work/$name.ext" -out "$dir/$name.crt.tmp" 2>/dev/null
    mv -f "$dir/$name.crt.tmp" "$dir/$name.crt"
}

# A certificate without its key cannot be fixed without overwriting: refuse.
for f in "$dir"/*.crt; do
    [[ -e "$f" ]] || continue
    [[ -e "${f%.crt}.key" ]] || { echo "mkpki: $f exists without its key" >&2; exit 1; }
done

make_ca ca "jwt-signer dev CA"
make_ca other-ca "unrelated dev CA"
make_leaf server ca localhost serverAuth "DNS:localhost,IP:127.0.0.1"
make_leaf issuer-a ca issuer-a clientAuth "URI:spiffe://example.org/issuer-a"
make_leaf admin ca admin clientAuth "URI:spiffe://example.org/ops/admin"
make_leaf intruder ca intruder clientAuth "URI:spiffe://example.org/intruder"
make_leaf stranger other-ca stranger clientAuth "URI:spiffe://example.org/issuer-a"
make_leaf dns-caller ca dns-caller clientAuth "DNS:svc.example.org"
make_leaf cn-caller ca cn-caller clientAuth
i=0
while [[ $i -lt ${#extra[@]} ]]; do
    make_leaf "${extra[$i]}" ca "${extra[$i]}" clientAuth "URI:${extra[$((i + 1))]}"
    i=$((i + 2))
done
