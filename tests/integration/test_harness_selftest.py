"""test_harness_selftest.py - tests of harness.py itself, without jwt-signerd.

Checks the JOSE helpers against tokens signed here with python3-cryptography
(and RFC 7638's own example), the PKI that scripts/mkpki.sh makes, SoftHSM
token set-up, the config writer, and the process machinery (start, log
capture, stop, timeouts) against a small stand-in daemon written by this test.
The real daemon is exercised by the other test_*.py files.
"""

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

from cryptography import x509  # noqa: E402
from cryptography.exceptions import InvalidSignature  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID  # noqa: E402

B = harness.b64url_encode


def make_key():
    key = ec.generate_private_key(ec.SECP256R1())
    nums = key.public_key().public_numbers()
    jwk = {"kty": "EC", "crv": "P-256", "x": B(nums.x.to_bytes(32, "big")),
           "y": B(nums.y.to_bytes(32, "big")), "use": "sig", "alg": "ES256"}
    jwk["kid"] = harness.jwk_thumbprint(jwk)
    return key, jwk


def sign_es256(key, header, payload, der=False):
    h = B(json.dumps(header, separators=(",", ":")).encode())
    p = B(json.dumps(payload, separators=(",", ":")).encode())
    sig = key.sign((h + "." + p).encode(), ec.ECDSA(hashes.SHA256()))
    if not der:
        r, s = decode_dss_signature(sig)
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return h + "." + p + "." + B(sig)


class JoseTest(unittest.TestCase):
    def setUp(self):
        self.key, self.jwk = make_key()
        self.other, self.other_jwk = make_key()
        self.jwks = json.dumps({"keys": [self.other_jwk, self.jwk]})
        self.header = {"alg": "ES256", "typ": "JWT", "kid": self.jwk["kid"]}
        self.payload = {"iss": "https://x.example", "sub": "s", "exp": 2000000000}

    def test_valid_token(self):
        tok = sign_es256(self.key, self.header, self.payload)
        self.assertEqual(harness.verify_es256(tok, self.jwks), (self.header, self.payload))
        self.assertEqual(harness.verify_es256(tok.encode(), json.loads(self.jwks))[1],
                         self.payload)

    def test_tampered_payload(self):
        tok = sign_es256(self.key, self.header, self.payload)
        h, _, s = tok.split(".")
        forged = h + "." + B(json.dumps(dict(self.payload, sub="admin")).encode()) + "." + s
        with self.assertRaises(InvalidSignature):
            harness.verify_es256(forged, self.jwks)

    def test_signed_by_other_key_with_our_kid(self):
        tok = sign_es256(self.other, self.header, self.payload)
        with self.assertRaises(InvalidSignature):
            harness.verify_es256(tok, self.jwks)

    def test_unknown_kid(self):
        tok = sign_es256(self.key, dict(self.header, kid="nope"), self.payload)
        with self.assertRaisesRegex(ValueError, "0 keys"):
            harness.verify_es256(tok, self.jwks)

    def test_der_signature_rejected(self):
        tok = sign_es256(self.key, self.header, self.payload, der=True)
        with self.assertRaisesRegex(ValueError, "64 bytes"):
            harness.verify_es256(tok, self.jwks)

    def test_alg_none_and_other_algs_rejected(self):
        for alg in ("none", "ES384", "HS256", None):
            h = dict(self.header, alg=alg)
            tok = sign_es256(self.key, h, self.payload)
            with self.assertRaisesRegex(ValueError, "not ES256"):
                harness.verify_es256(tok, self.jwks)

    def test_malformed(self):
        tok = sign_es256(self.key, self.header, self.payload)
        for bad in (tok + ".", tok.replace(".", "", 1), tok + "=", "a.b", "..",
                    "e30." + tok.split(".", 1)[1]):
            with self.assertRaises(Exception, msg=bad):
                harness.verify_es256(bad, self.jwks)

    def test_duplicate_member_rejected(self):
        raw = b'{"alg":"ES256","kid":"%s","alg":"none"}' % self.jwk["kid"].encode()
        h = B(raw)
        p = B(b"{}")
        sig = self.key.sign((h + "." + p).encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(sig)
        tok = h + "." + p + "." + B(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
        with self.assertRaisesRegex(ValueError, "duplicate"):
            harness.verify_es256(tok, self.jwks)

    def test_jwk_for_other_alg_rejected(self):
        tok = sign_es256(self.key, self.header, self.payload)
        jwks = {"keys": [dict(self.jwk, alg="ES384")]}
        with self.assertRaisesRegex(ValueError, "not for ES256"):
            harness.verify_es256(tok, jwks)

    def test_b64url_strict(self):
        self.assertEqual(harness.b64url_decode("AQAB"), b"\x01\x00\x01")
        self.assertEqual(harness.b64url_decode(""), b"")
        for bad in ("AQAB=", "A+/B", "A", "AR", "a b"):  # "AR": non-canonical trailing bits
            with self.assertRaises(ValueError, msg=bad):
                harness.b64url_decode(bad)

    def test_thumbprint_rfc7638_example(self):
        # RFC 7638 section 3.1.
        jwk = {
            "kty": "RSA", "e": "AQAB", "alg": "RS256", "kid": "2011-04-29",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6"
                 "tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-"
                 "65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qN"
                 "Lyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awap"
                 "JzKnqDKgw",
        }
        self.assertEqual(harness.jwk_thumbprint(jwk), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")


class YamlTest(unittest.TestCase):
    def test_default_config(self):
        env = harness.Env()
        self.addCleanup(env.cleanup)
        env.module = "/m/libsofthsm2.so"
        text = harness.to_yaml(env.config_dict(workers=4, default_key=None, pin_env="PIN_VAR"))
        self.assertEqual(text, textwrap.dedent("""\
            listen: "127.0.0.1:0"
            tls:
              cert: pki/server.crt
              key: pki/server.key
              client_ca: pki/ca.crt
            workers: 4
            hsm:
              module: /m/libsofthsm2.so
              token: "pkcs11:token=jwt-signer-test"
              pin_env: PIN_VAR
            keys:
              - name: test-es256
                label: jwt-signer-test-es256
                alg: ES256
            policy: policy.yaml
            audit:
              dir: audit
              key_label: jwt-signer-test-audit
            http:
              listen: "127.0.0.1:0"
            """))

    def test_scalars_and_empties(self):
        self.assertEqual(harness.to_yaml({"a": [], "b": {}, "c": "yes", "d": "x\"y", "e": False,
                                          "f": None, "g": "0"}),
                         'a: []\nb: {}\nc: "yes"\nd: "x\\"y"\ne: false\nf: null\ng: "0"\n')


class PkiAndTokenTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.env = harness.Env()
        cls.env.init_token()
        cls.env.make_pki({"issuer-b": "spiffe://example.org/issuer-b"})

    @classmethod
    def tearDownClass(cls):
        cls.env.cleanup()

    def cert(self, name):
        with open(os.path.join(self.env.pki_dir, name + ".crt"), "rb") as f:
            return x509.load_pem_x509_certificate(f.read())

    def sans(self, cert):
        try:
            ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return []
        return [type(g).__name__ + ":" + str(g.value) for g in ext]

    def eku(self, cert):
        return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)

    def openssl_verify(self, ca, name):
        p = subprocess.run(["openssl", "verify", "-CAfile", os.path.join(self.env.pki_dir, ca),
                            os.path.join(self.env.pki_dir, name + ".crt")],
                           capture_output=True, text=True, timeout=30, check=False)
        return p.returncode

    def test_files_and_modes(self):
        for name in ("ca", "server", "issuer-a", "intruder", "other-ca", "stranger", "dns-caller",
                     "cn-caller", "issuer-b"):
            key = os.path.join(self.env.pki_dir, name + ".key")
            self.assertEqual(stat.S_IMODE(os.stat(key).st_mode), 0o600, key)
            self.assertIsInstance(self.cert(name).public_key(), ec.EllipticCurvePublicKey)
            self.assertEqual(self.cert(name).public_key().curve.name, "secp256r1")

    def test_identities(self):
        self.assertEqual(self.sans(self.cert("server")),
                         ["DNSName:localhost", "IPAddress:127.0.0.1"])
        self.assertEqual(self.eku(self.cert("server")), [ExtendedKeyUsageOID.SERVER_AUTH])
        expect = {"issuer-a": ["UniformResourceIdentifier:spiffe://example.org/issuer-a"],
                  "intruder": ["UniformResourceIdentifier:spiffe://example.org/intruder"],
                  "stranger": ["UniformResourceIdentifier:spiffe://example.org/issuer-a"],
                  "issuer-b": ["UniformResourceIdentifier:spiffe://example.org/issuer-b"],
                  "dns-caller": ["DNSName:svc.example.org"],
                  "cn-caller": []}
        for name, sans in expect.items():
            self.assertEqual(self.sans(self.cert(name)), sans, name)
            self.assertEqual(self.eku(self.cert(name)), [ExtendedKeyUsageOID.CLIENT_AUTH], name)
        cn = self.cert("cn-caller").subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        self.assertEqual(cn[0].value, "cn-caller")

    def test_chains(self):
        for name in ("server", "issuer-a", "intruder", "dns-caller", "cn-caller", "issuer-b"):
            self.assertEqual(self.openssl_verify("ca.crt", name), 0, name)
        self.assertNotEqual(self.openssl_verify("ca.crt", "stranger"), 0)
        self.assertEqual(self.openssl_verify("other-ca.crt", "stranger"), 0)

    def snapshot(self):
        out = {}
        for name in os.listdir(self.env.pki_dir):
            with open(os.path.join(self.env.pki_dir, name), "rb") as f:
                out[name] = f.read()
        return out

    def test_mkpki_idempotent(self):
        before = self.snapshot()
        self.env.make_pki()
        self.assertEqual(self.snapshot(), before)

    def test_token(self):
        self.assertEqual(stat.S_IMODE(os.stat(self.env.pin_file).st_mode), 0o600)
        with open(self.env.pin_file, encoding="ascii") as f:
            self.assertEqual(f.read().strip(), self.env.pin)
        rc, out, _ = self.env.run(["softhsm2-util", "--show-slots"])
        self.assertEqual(rc, 0)
        self.assertIn("jwt-signer-test", out)
        # The PIN logs in (pkcs11-tool, from opensc).
        rc, out, err = self.env.run(["pkcs11-tool", "--module", self.env.module, "--token-label",
                                     "jwt-signer-test", "--login", "--pin", self.env.pin,
                                     "--list-objects"])
        self.assertEqual(rc, 0, out + err)


FAKE_DAEMON = r'''#!/usr/bin/python3
# Stand-in for jwt-signerd used only by test_harness_selftest.py.
import hashlib, json, os, signal, socket, sys, time
mode = os.environ.get("FAKE_MODE", "ok")
def log(**kw):
    kw.setdefault("level", "info")
    sys.stderr.write(json.dumps(dict(time="2024-01-01T00:00:00Z", **kw)) + "\n")
    sys.stderr.flush()
if sys.argv[1:2] == ["keygen"]:
    sys.exit(0)
if mode == "exit":
    log(level="error", event="config_error", message="bad config")
    sys.exit(3)
if mode == "silent":
    time.sleep(600)
    sys.exit(0)
stop = []
if mode == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
s = socket.socket()
s.bind(("127.0.0.1", 0))
port = s.getsockname()[1]
pin = os.environ.get(os.environ.get("FAKE_PIN_VAR", "-"), "")
log(event="starting", argv=sys.argv[1:], softhsm2_conf=os.environ.get("SOFTHSM2_CONF"),
    pin_sha256=hashlib.sha256(pin.encode()).hexdigest(), cwd=os.getcwd())
print("not json on stdout", flush=True)
sys.stderr.write("plain text line\n")
log(event="listening", address="127.0.0.1:%d" % port, port=port)
deadline = time.time() + 600
while not stop and time.time() < deadline:
    time.sleep(0.02)
if mode == "asan":
    sys.stderr.write("==1==ERROR: AddressSanitizer: heap-use-after-free\n")
log(event="stopped")
sys.exit(0)
'''

FAKE_SIGN = r'''#!/usr/bin/python3
import json, os, sys
print(json.dumps({"argv": sys.argv[1:],
                  "jwt_sign_env": sorted(k for k in os.environ if k.startswith("JWT_SIGN_"))}))
sys.exit(4)
'''


class ProcessTest(unittest.TestCase):
    def setUp(self):
        self.env = harness.Env()
        self.addCleanup(self.env.cleanup)
        self.saved = {k: os.environ.get(k) for k in ("JS_SIGNERD", "JS_SIGN", "JWT_SIGN_TARGET")}
        self.addCleanup(self.restore)
        os.environ["JS_SIGNERD"] = self.write_prog("fake-signerd", FAKE_DAEMON)
        os.environ["JS_SIGN"] = self.write_prog("fake-sign", FAKE_SIGN)
        self.env.module = "/nonexistent/libsofthsm2.so"  # the fake never loads it

    def restore(self):
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        os.environ.pop("FAKE_MODE", None)
        os.environ.pop("FAKE_PIN_VAR", None)

    def write_prog(self, name, text):
        path = self.env.path(name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(path, 0o755)
        return path

    def test_start_logs_stop(self):
        self.env.pin = "1234abcd"
        os.environ["FAKE_PIN_VAR"] = "JS_TEST_PIN"
        cfg = self.env.write_config(pin_env="JS_TEST_PIN")
        self.env.keygen("test-es256")
        d = self.env.start()
        self.assertTrue(0 < self.env.port < 65536)
        first = self.env.logs("starting")[0]
        self.assertEqual(first["argv"], ["--config", cfg])
        self.assertEqual(first["softhsm2_conf"], self.env.softhsm_conf)
        self.assertEqual(first["pin_sha256"], hashlib.sha256(b"1234abcd").hexdigest())
        self.assertEqual(first["cwd"], self.env.dir)
        self.assertIn("plain text line", d.stderr_lines())
        self.assertEqual([o["event"] for o in self.env.logs()], ["starting", "listening"])
        self.assertEqual(self.env.stop(), 0)
        self.assertEqual(self.env.logs()[-1]["event"], "stopped")
        self.assertIn("not json on stdout", d.stdout_lines())

    def test_daemon_exits_early(self):
        os.environ["FAKE_MODE"] = "exit"
        self.env.write_config()
        t0 = time.monotonic()
        with self.assertRaisesRegex(harness.HarnessError, "exited .*status 3"):
            self.env.start()
        self.assertLess(time.monotonic() - t0, harness.timeout(10))
        self.assertEqual(self.env.logs("config_error")[0]["message"], "bad config")

    def test_never_listens(self):
        os.environ["FAKE_MODE"] = "silent"
        self.env.write_config()
        with self.assertRaisesRegex(harness.HarnessError, "within"):
            self.env.start(timeout_s=1)
        self.assertFalse(self.env.daemon.running())

    def test_ignores_sigterm(self):
        os.environ["FAKE_MODE"] = "ignore-term"
        self.env.write_config()
        d = self.env.start()
        with self.assertRaisesRegex(harness.HarnessError, "did not exit"):
            self.env.stop(timeout_s=1)
        self.assertFalse(d.running())

    def test_sanitizer_report_fails_stop(self):
        os.environ["FAKE_MODE"] = "asan"
        self.env.write_config()
        self.env.start()
        with self.assertRaisesRegex(harness.HarnessError, "sanitizer"):
            self.env.stop()

    def test_cleanup_kills_and_removes(self):
        self.env.write_config()
        d = self.env.start()
        self.env.cleanup()
        self.assertFalse(d.running())
        if os.environ.get("JS_KEEP_TMP") != "1":
            self.assertFalse(os.path.exists(self.env.dir))

    def test_sign_argv(self):
        self.env.make_pki()
        self.env.write_config()
        self.env.start()
        os.environ["JWT_SIGN_TARGET"] = "elsewhere:1"
        rc, out, _ = self.env.sign("intruder", {"sub": "x"}, "--json", key_name="k2")
        self.assertEqual(rc, 4)
        got = json.loads(out)
        pki = self.env.pki_dir
        self.assertEqual(got["argv"], [
            "--target", "localhost:%d" % self.env.port, "--ca", pki + "/ca.crt",
            "--cert", pki + "/intruder.crt", "--key", pki + "/intruder.key",
            "--key-name", "k2", "--json", "sign", '{"sub":"x"}'])
        self.assertEqual(got["jwt_sign_env"], [])
        rc, out, _ = self.env.jwks()
        self.assertEqual(json.loads(out)["argv"][-1], "jwks")
        with self.assertRaises(harness.HarnessError):
            self.env.sign("nobody", {})
        self.env.stop()


class KeepTmpTest(unittest.TestCase):
    def test_keep(self):
        saved = os.environ.get("JS_KEEP_TMP")
        os.environ["JS_KEEP_TMP"] = "1"
        try:
            env = harness.Env()
            env.cleanup()
            self.assertTrue(os.path.isdir(env.dir))
        finally:
            if saved is None:
                os.environ.pop("JS_KEEP_TMP", None)
            else:
                os.environ["JS_KEEP_TMP"] = saved
            shutil.rmtree(env.dir, ignore_errors=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
