"""test_algorithms.py - every signing algorithm end to end through a real
jwt-signerd: ES256, ES384 (RFC 7518 §3.4), RS256 (§3.3) and PS256 (§3.5) with
RSA-2048 and RSA-3072, and EdDSA with Ed25519 (RFC 8037), all generated in the
SoftHSM token by `jwt-signerd keygen`.

Each token is verified three times against the JWKS the signer publishes, never
with our own code: python3-cryptography (OpenSSL) directly, PyJWT
(python3-jwt) and jwcrypto (python3-jwcrypto). The JWKS entries are checked
for their members (RFC 7517, RFC 7518 §6, RFC 8037 §2), their kid (the RFC 7638
thumbprint) and the absence of any private member.

Run with /usr/bin/python3 (Debian's python3-jwt and python3-jwcrypto).
"""

import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

import jwt as pyjwt  # noqa: E402  (python3-jwt)
from cryptography.exceptions import InvalidSignature  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature  # noqa: E402
from jwcrypto import jwk as jc_jwk  # noqa: E402
from jwcrypto import jwt as jc_jwt  # noqa: E402

ISSUER = "https://jwt-signer.test.example"

# SoftHSM 2.6.1 leaks an ASN1_STRING in every Ed25519 C_SignInit; tests/lsan.supp
# suppresses it by its C_SignInit frame, which LSan only sees with a slow unwind
# (libcrypto has no frame pointers). The daemons inherit this environment.
if os.environ.get("ASAN_OPTIONS") is not None:
    os.environ["ASAN_OPTIONS"] += ":fast_unwind_on_malloc=0"

# name -> (config entry, expected JWK shape). bits only for RSA (config keys[].bits).
KEYS = [
    {"name": "k-es256", "label": "alg-es256", "alg": "ES256"},
    {"name": "k-es384", "label": "alg-es384", "alg": "ES384"},
    {"name": "k-rs256", "label": "alg-rs256", "alg": "RS256"},
    {"name": "k-rs256-3072", "label": "alg-rs256-3072", "alg": "RS256", "bits": 3072},
    {"name": "k-ps256", "label": "alg-ps256", "alg": "PS256", "bits": 2048},
    {"name": "k-ps256-3072", "label": "alg-ps256-3072", "alg": "PS256", "bits": 3072},
    {"name": "k-eddsa", "label": "alg-eddsa", "alg": "EdDSA"},
]
EXPECT = {
    "k-es256": {"kty": "EC", "crv": "P-256", "coord": 32, "sig": 64},
    "k-es384": {"kty": "EC", "crv": "P-384", "coord": 48, "sig": 96},
    "k-rs256": {"kty": "RSA", "bits": 2048, "sig": 256},
    "k-rs256-3072": {"kty": "RSA", "bits": 3072, "sig": 384},
    "k-ps256": {"kty": "RSA", "bits": 2048, "sig": 256},
    "k-ps256-3072": {"kty": "RSA", "bits": 3072, "sig": 384},
    "k-eddsa": {"kty": "OKP", "crv": "Ed25519", "sig": 64},
}
# Members a public JWK must never carry (RFC 7518 §6.2.2, §6.3.2; RFC 8037 §2).
PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


def b64int(text):
    return int.from_bytes(harness.b64url_decode(text), "big")


def public_key(jwk):
    """A python3-cryptography public key from a JWK, built by hand (not by a JWT library)."""
    if jwk["kty"] == "EC":
        curve = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1()}[jwk["crv"]]
        return ec.EllipticCurvePublicNumbers(b64int(jwk["x"]), b64int(jwk["y"]),
                                             curve).public_key()
    if jwk["kty"] == "RSA":
        return rsa.RSAPublicNumbers(b64int(jwk["e"]), b64int(jwk["n"])).public_key()
    if jwk["kty"] == "OKP":
        return ed25519.Ed25519PublicKey.from_public_bytes(harness.b64url_decode(jwk["x"]))
    raise AssertionError("unexpected kty %r" % jwk["kty"])


def verify_openssl(alg, key, signing_input, sig):
    """Raises InvalidSignature unless sig is alg's signature of signing_input under key."""
    if alg in ("ES256", "ES384"):
        n = len(sig) // 2  # JOSE r||s (RFC 7518 §3.4)
        der = encode_dss_signature(int.from_bytes(sig[:n], "big"), int.from_bytes(sig[n:], "big"))
        h = hashes.SHA256() if alg == "ES256" else hashes.SHA384()
        key.verify(der, signing_input, ec.ECDSA(h))
    elif alg == "RS256":
        key.verify(sig, signing_input, padding.PKCS1v15(), hashes.SHA256())
    elif alg == "PS256":
        # RFC 7518 §3.5: MGF1 with SHA-256, salt as long as the hash.
        key.verify(sig, signing_input,
                   padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
                   hashes.SHA256())
    elif alg == "EdDSA":
        key.verify(sig, signing_input)
    else:
        raise AssertionError("unexpected alg %r" % alg)


class Algorithms(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.env = harness.Env()
        try:
            env = cls.env
            names = [k["name"] for k in KEYS]
            env.setup(policy=env.default_policy(keys=names, default_key=names[0]),
                      keys=[dict(k) for k in KEYS])
            env.start()
            rc, out, err = env.jwks("issuer-a")
            assert rc == 0, err
            # Verifiers fetch the HTTP JWKS; it must equal the gRPC one.
            status, _, body = env.http_get("/.well-known/jwks.json")
            assert status == 200, status
            cls.jwks_text = body.decode("utf-8")
            cls.jwks = json.loads(cls.jwks_text)
            assert cls.jwks == json.loads(out), "HTTP and gRPC JWKS differ"
            cls.tokens = {}
            for k in KEYS:
                rc, out, err = env.sign("issuer-a", env.sample_claims(), key_name=k["name"])
                assert rc == 0, "sign with %s: rc %d: %s" % (k["name"], rc, err)
                cls.tokens[k["name"]] = out.strip()
        except Exception:
            cls.env.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            rc = cls.env.stop()
            assert rc == 0, "signer exit code %r" % rc
        finally:
            cls.env.cleanup()

    def jwk_for(self, kid):
        found = [j for j in self.jwks["keys"] if j.get("kid") == kid]
        self.assertEqual(len(found), 1, "exactly one JWK with kid %r" % kid)
        return found[0]

    def parts(self, name):
        token = self.tokens[name]
        h, p, s = token.split(".")
        header = json.loads(harness.b64url_decode(h))
        return token, header, json.loads(harness.b64url_decode(p)), (h + "." + p).encode(), \
            harness.b64url_decode(s)

    def test_jwks_entries(self):
        keys = self.jwks["keys"]
        self.assertEqual(len(keys), len(KEYS), keys)
        kids = set()
        for jwk in keys:
            with self.subTest(kid=jwk.get("kid")):
                self.assertEqual(jwk["use"], "sig")
                self.assertIn(jwk["alg"], ("ES256", "ES384", "RS256", "PS256", "EdDSA"))
                self.assertEqual(jwk["kid"], harness.jwk_thumbprint(jwk))  # RFC 7638
                for m in PRIVATE_MEMBERS:
                    self.assertNotIn(m, jwk)
                kids.add(jwk["kid"])
        self.assertEqual(len(kids), len(KEYS), "every key has its own kid")

    def test_each_key(self):
        for k in KEYS:
            name, alg = k["name"], k["alg"]
            want = EXPECT[name]
            with self.subTest(key=name):
                token, header, payload, signing_input, sig = self.parts(name)
                # The header names the algorithm and the key (RFC 7515 §4.1.1, §4.1.4).
                self.assertEqual(header["alg"], alg)
                self.assertEqual(header["typ"], "JWT")
                jwk = self.jwk_for(header["kid"])
                self.assertEqual(jwk["alg"], alg)
                self.assertEqual(jwk["kty"], want["kty"])
                if want["kty"] == "EC":
                    self.assertEqual(jwk["crv"], want["crv"])
                    # RFC 7518 §6.2.1.2: coordinates are padded to the field size.
                    self.assertEqual(len(harness.b64url_decode(jwk["x"])), want["coord"])
                    self.assertEqual(len(harness.b64url_decode(jwk["y"])), want["coord"])
                elif want["kty"] == "RSA":
                    n = harness.b64url_decode(jwk["n"])
                    self.assertNotEqual(n[0], 0, "no leading zero octet (RFC 7518 §6.3.1.1)")
                    self.assertEqual(b64int(jwk["n"]).bit_length(), want["bits"])
                    self.assertEqual(jwk["e"], "AQAB")
                    self.assertNotIn("crv", jwk)
                else:
                    self.assertEqual(jwk["crv"], "Ed25519")
                    self.assertEqual(len(harness.b64url_decode(jwk["x"])), 32)
                self.assertEqual(len(sig), want["sig"])

                # 1. OpenSSL through python3-cryptography, key built from the JWK by hand.
                key = public_key(jwk)
                verify_openssl(alg, key, signing_input, sig)
                bad = bytearray(sig)
                bad[len(bad) // 2] ^= 0x01
                with self.assertRaises(InvalidSignature):
                    verify_openssl(alg, key, signing_input, bytes(bad))
                with self.assertRaises(InvalidSignature):
                    verify_openssl(alg, key, signing_input + b"x", sig)

                # 2. PyJWT, with the key from its own JWK parser.
                claims = pyjwt.decode(token, pyjwt.PyJWK(jwk).key, algorithms=[alg],
                                      audience=harness.SAMPLE_AUD, issuer=ISSUER)
                self.assertEqual(claims["sub"], harness.SAMPLE_SUB)
                self.assertEqual(claims, payload)
                # ... and it refuses the token under another algorithm's name.
                with self.assertRaises(pyjwt.exceptions.InvalidAlgorithmError):
                    pyjwt.decode(token, pyjwt.PyJWK(jwk).key,
                                 algorithms=["HS256" if alg != "HS256" else "ES256"],
                                 audience=harness.SAMPLE_AUD, issuer=ISSUER)

                # 3. jwcrypto, against the whole JWKS (it picks the key by kid).
                keyset = jc_jwk.JWKSet.from_json(self.jwks_text)
                t = jc_jwt.JWT(jwt=token, key=keyset, algs=[alg],
                               check_claims={"iss": ISSUER, "aud": harness.SAMPLE_AUD})
                self.assertEqual(json.loads(t.claims), payload)

    def test_tampered_tokens_rejected_by_libraries(self):
        keyset = jc_jwk.JWKSet.from_json(self.jwks_text)
        for k in KEYS:
            with self.subTest(key=k["name"]):
                token, header, _, _, sig = self.parts(k["name"])
                h, p, _ = token.split(".")
                bad = bytearray(sig)
                bad[-1] ^= 0x01
                forged = h + "." + p + "." + harness.b64url_encode(bytes(bad))
                jwk = self.jwk_for(header["kid"])
                with self.assertRaises(pyjwt.exceptions.InvalidSignatureError):
                    pyjwt.decode(forged, pyjwt.PyJWK(jwk).key, algorithms=[k["alg"]],
                                 audience=harness.SAMPLE_AUD, issuer=ISSUER)
                with self.assertRaises(Exception):
                    jc_jwt.JWT(jwt=forged, key=keyset, algs=[k["alg"]])


if __name__ == "__main__":
    unittest.main()
