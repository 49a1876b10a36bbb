#!/usr/bin/env bash
# verify-jwt.sh - verify an ES256 JWT against a JWKS with the openssl CLI, the
# way an independent verifier would: pick the JWK by the token's kid, rebuild
# the P-256 public key from x and y, turn the JOSE r||s signature (RFC 7518
# §3.4) into DER, and run `openssl dgst -sha256 -verify` over header.payload.
# Python's standard library only splits and base64url-decodes; all crypto is
# OpenSSL's. Checks the signature only, not exp/aud (that is the verifier's
# policy).
#
# Usage: scripts/verify-jwt.sh JWKS_FILE TOKEN|-      (exit 0 = signature valid)
set -euo pipefail

[[ $# -eq 2 ]] || { echo "usage: $0 JWKS_FILE TOKEN|-" >&2; exit 2; }
jwks="$1"
token="$2"
[[ "$token" == "-" ]] && token="$(tr -d ' \r\n' </dev/stdin)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

/usr/bin/python3 - "$jwks" "$token" "$work" <<'PY'
import base64, json, sys

jwks_path, token, work = sys.argv[1:4]

def b64d(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))

def der_int(b):
    b = b.lstrip(b"\x00") or b"\x00"
    if b[0] & 0x80:
        b = b"\x00" + b
    return b"\x02" + bytes([len(b)]) + b

parts = token.split(".")
if len(parts) != 3:
    sys.exit("verify-jwt: not a compact JWS")
header = json.loads(b64d(parts[0]))
if header.get("alg") != "ES256":
    sys.exit("verify-jwt: alg %r is not ES256" % header.get("alg"))
keys = [k for k in json.load(open(jwks_path))["keys"] if k.get("kid") == header.get("kid")]
if len(keys) != 1:
    sys.exit("verify-jwt: kid %r not in the JWKS" % header.get("kid"))
jwk = keys[0]
if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
    sys.exit("verify-jwt: JWK is not an EC P-256 key")
x, y = b64d(jwk["x"]), b64d(jwk["y"])
# SubjectPublicKeyInfo for id-ecPublicKey / prime256v1, uncompressed point.
spki = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200") + b"\x04" + x + y
sig = b64d(parts[2])
if len(sig) != 64:
    sys.exit("verify-jwt: ES256 signature must be 64 bytes (r||s), got %d" % len(sig))
body = der_int(sig[:32]) + der_int(sig[32:])
open(work + "/pub.der", "wb").write(spki)
open(work + "/sig.der", "wb").write(b"\x30" + bytes([len(body)]) + body)
open(work + "/input", "wb").write((parts[0] + "." + parts[1]).encode("ascii"))
print(json.dumps(json.loads(b64d(parts[1])), indent=2))
PY

openssl pkey -pubin -inform DER -in "$work/pub.der" -out "$work/pub.pem"
openssl dgst -sha256 -verify "$work/pub.pem" -signature "$work/sig.der" "$work/input"
