"""test_signing.py - the signing path end to end through a real jwt-signerd:
SoftHSM token, PKI made at test time, mTLS, jwt-sign and the client library.
Every token is verified with python3-cryptography against the JWKS the
server publishes, never with our own code.
"""

import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import rawgrpc  # noqa: E402

SUB = "3f0c6f1e-8c1a-4b7e-9d2a-5e6f7a8b9c0d"
AUD = "https://api.example"
EXIT_DENIED, EXIT_INVALID, EXIT_UNAVAILABLE = 3, 4, 5


def wait_request(env, start, **fields):
    """The first request log line after stderr line `start` with these fields."""
    def pred(o):
        return o.get("event") == "request" and all(o.get(k) == v for k, v in fields.items())
    return env.wait_log(pred, start=start)


class SigningPath(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.env = harness.Env()
        try:
            env = cls.env
            env.setup(policy=env.default_policy(callers=[
                {"id": harness.CALLER_IDS["issuer-a"]}, {"id": harness.CALLER_IDS["dns-caller"]},
                {"id": harness.CALLER_IDS["cn-caller"]}]))
            cls.env.start()
            rc, out, err = cls.env.jwks("issuer-a")
            assert rc == 0, err
            cls.jwks = out
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

    def expect_fail(self, caller, claims, exit_code, status, reason, *args, **kw):
        rc, out, err = self.env.sign(caller, claims, *args, **kw)
        self.assertEqual(rc, exit_code, "claims %r: rc %d out %r err %r" % (claims, rc, out, err))
        self.assertEqual(out, "", "no token on failure")
        self.assertIn(status, err)
        if reason:
            self.assertIn(reason, err)
        return err

    # --- allowed ------------------------------------------------------------------
    def test_allowed_caller_gets_verifiable_token(self):
        before = int(time.time())
        rc, out, err = self.env.sign("issuer-a", {"sub": SUB, "aud": AUD, "role": "reader"})
        self.assertEqual(rc, 0, err)
        header, payload = harness.verify_es256(out.strip(), self.jwks)
        self.assertEqual(header, {"alg": "ES256", "typ": "JWT", "kid": header["kid"]})
        keys = json.loads(self.jwks)["keys"]
        self.assertEqual(len(keys), 1)
        self.assertEqual(header["kid"], keys[0]["kid"])
        self.assertEqual(header["kid"], harness.jwk_thumbprint(keys[0]))  # RFC 7638
        self.assertEqual(keys[0]["use"], "sig")
        self.assertEqual(keys[0]["alg"], "ES256")
        self.assertNotIn("d", keys[0])
        self.assertEqual(payload["sub"], SUB)
        self.assertEqual(payload["aud"], AUD)
        self.assertEqual(payload["role"], "reader")
        self.assertEqual(payload["iss"], "https://jwt-signer.test.example")
        self.assertTrue(before - 2 <= payload["iat"] <= int(time.time()) + 2)
        self.assertEqual(payload["exp"], payload["iat"] + 300)  # default 5m
        self.assertRegex(payload["jti"], r"^[A-Za-z0-9_-]{22}$")

    def test_openssl_cli_verifies_token(self):
        """The README's verifier recipe: openssl alone, against the JWKS."""
        rc, out, err = self.env.sign("issuer-a", {"sub": SUB, "aud": AUD})
        self.assertEqual(rc, 0, err)
        jwks_file = self.env.path("jwks.json")
        with open(jwks_file, "w", encoding="utf-8") as f:
            f.write(self.jwks)
        script = os.path.join(harness.source_dir(), "scripts", "verify-jwt.sh")
        token = out.strip()
        rc, vout, verr = self.env.run(["bash", script, jwks_file, token])
        self.assertEqual(rc, 0, verr)
        self.assertIn("Verified OK", vout)
        # One flipped signature character: OpenSSL must refuse it.
        head, body, sig = token.split(".")
        bad = head + "." + body + "." + ("A" if sig[0] != "A" else "B") + sig[1:]
        rc, vout, _ = self.env.run(["bash", script, jwks_file, bad])
        self.assertNotEqual(rc, 0)
        self.assertNotIn("Verified OK", vout)

    def test_json_output_and_caller_exp(self):
        exp = int(time.time()) + 1200
        rc, out, err = self.env.sign("issuer-a", {"sub": SUB, "aud": AUD, "exp": exp}, "--json")
        self.assertEqual(rc, 0, err)
        resp = json.loads(out)
        header, payload = harness.verify_es256(resp["jwt"], self.jwks)
        self.assertEqual(payload["exp"], exp)
        self.assertEqual(resp["expires_at"], exp)
        self.assertEqual(resp["jti"], payload["jti"])
        self.assertEqual(resp["kid"], header["kid"])
        self.assertEqual(resp["issued_at"], payload["iat"])
        self.assertGreater(resp["audit_seq"], 0)  # its audit record's sequence number

    def test_claims_from_stdin(self):
        rc, out, err = self.env.run_sign("issuer-a", "sign", "-",
                                         input_text=json.dumps({"sub": SUB, "aud": AUD}))
        self.assertEqual(rc, 0, err)
        harness.verify_es256(out.strip(), self.jwks)

    def test_jti_unique(self):
        jtis = set()
        for _ in range(5):
            rc, out, err = self.env.sign("issuer-a", {"sub": SUB, "aud": AUD})
            self.assertEqual(rc, 0, err)
            jtis.add(harness.verify_es256(out.strip(), self.jwks)[1]["jti"])
        self.assertEqual(len(jtis), 5)

    def test_identity_dns_then_cn(self):
        for caller in ("dns-caller", "cn-caller"):
            start = len(self.env.daemon.stderr_lines())
            rc, out, err = self.env.sign(caller, {"sub": SUB, "aud": AUD})
            self.assertEqual(rc, 0, err)
            harness.verify_es256(out.strip(), self.jwks)
            line = wait_request(self.env, start, decision="allow")
            # The identity carries its type: dns:svc.example.org, cn:cn-caller.
            self.assertEqual(line["caller"], harness.CALLER_IDS[caller])

    def test_client_library_concurrent(self):
        out_file = self.env.path("tokens.txt")
        ca, cert, key = self.env.caller_files("issuer-a")
        rc, out, err = self.env.run([harness.client_test_path(), "--target",
                                     "localhost:%d" % self.env.port, "--ca", ca, "--cert", cert,
                                     "--key", key, "--threads", "4", "--requests", "200",
                                     "--claims", json.dumps({"sub": SUB, "aud": AUD}),
                                     "--out", out_file], timeout_s=120)
        self.assertEqual(rc, 0, err)
        summary = json.loads(out.strip().splitlines()[-1])
        self.assertEqual(summary["ok"], 200, summary)
        with open(out_file, encoding="ascii") as f:
            lines = [l.split() for l in f if l.strip()]
        self.assertEqual(len(lines), 200)
        self.assertEqual(len({jti for jti, _ in lines}), 200)
        for jti, jwt in lines[:50]:
            self.assertEqual(harness.verify_es256(jwt, self.jwks)[1]["jti"], jti)

    def test_log_line_fields_and_no_secrets(self):
        start = len(self.env.daemon.stderr_lines())
        rc, out, err = self.env.sign("issuer-a", {"sub": SUB, "aud": AUD, "secret": "s3cr3t-v4lue"},
                                     "--request-id", "req-42")
        self.assertEqual(rc, 0, err)
        token = out.strip()
        line = wait_request(self.env, start, request_id="req-42")
        for field in ("time", "caller", "peer", "decision", "reason", "kid", "jti",
                      "latency_us", "sub", "aud"):
            self.assertIn(field, line)
        self.assertEqual(line["decision"], "allow")
        self.assertEqual(line["sub"], SUB)
        self.assertEqual(line["jti"], harness.verify_es256(token, self.jwks)[1]["jti"])
        everything = "\n".join(self.env.daemon.stderr_lines())
        self.assertNotIn(token.split(".")[2], everything)  # never the token
        self.assertNotIn("s3cr3t-v4lue", everything)       # claim values beyond sub/aud
        self.assertNotIn(self.env.pin, everything)         # never the PIN

    # --- denied and invalid ---------------------------------------------------------
    def test_unknown_caller_denied(self):
        self.expect_fail("intruder", {"sub": SUB, "aud": AUD}, EXIT_DENIED, "PERMISSION_DENIED",
                         "policy.no_match")

    def test_other_ca_refused(self):
        self.expect_fail("stranger", {"sub": SUB, "aud": AUD}, EXIT_UNAVAILABLE, "UNAVAILABLE",
                         None)

    def test_no_client_certificate_refused(self):
        ca = os.path.join(self.env.pki_dir, "ca.crt")
        ch = rawgrpc.channel(self.env.port, ca)
        code, _, resp = rawgrpc.call(ch, rawgrpc.SIGN, rawgrpc.sign_request(b'{"sub":"x"}'))
        ch.close()
        self.assertEqual(code, "UNAVAILABLE")
        self.assertIsNone(resp)

    def test_invalid_claims(self):
        cases = [
            ("not json", "sub=alice", "claims.syntax"),
            ("array", "[1,2]", "claims.not_object"),
            ("string", '"x"', "claims.syntax"),
            ("duplicate aud", '{"aud":"a","aud":"b"}', "claims.duplicate_member"),
            ("empty", "", "claims.empty"),
            ("iss", {"sub": SUB, "aud": AUD, "iss": "https://evil"}, "claims.reserved"),
            ("iat", {"sub": SUB, "aud": AUD, "iat": 1}, "claims.reserved"),
            ("jti", {"sub": SUB, "aud": AUD, "jti": "mine"}, "claims.reserved"),
            ("nbf", {"sub": SUB, "aud": AUD, "nbf": 1}, "claims.reserved"),
            ("exp past", {"sub": SUB, "aud": AUD, "exp": int(time.time()) - 10}, "claims.exp_past"),
            ("exp float", {"sub": SUB, "aud": AUD, "exp": time.time() + 100.5}, "claims.exp_type"),
            ("exp string", {"sub": SUB, "aud": AUD, "exp": str(int(time.time()) + 100)}, "claims.exp_type"),
            ("17 KiB", {"sub": SUB, "aud": AUD, "pad": "x" * (17 * 1024)}, "claims.too_large"),
        ]
        for name, claims, reason in cases:
            with self.subTest(name):
                self.expect_fail("issuer-a", claims, EXIT_INVALID, "INVALID_ARGUMENT", reason)

    def test_exp_beyond_max_lifetime_denied(self):
        err = self.expect_fail("issuer-a", {"sub": SUB, "aud": AUD, "exp": int(time.time()) + 7200},
                               EXIT_DENIED, "PERMISSION_DENIED", "policy.lifetime")
        self.assertIn("3600", err)  # the message names the limit

    def test_unknown_key_denied(self):
        self.expect_fail("issuer-a", {"sub": SUB, "aud": AUD}, EXIT_DENIED, "PERMISSION_DENIED",
                         "policy.key", key_name="no-such-key")

    def test_raw_invalid_utf8_and_malformed_protobuf(self):
        ca, cert, key = self.env.caller_files("issuer-a")
        ch = rawgrpc.channel(self.env.port, ca, cert, key)
        try:
            code, details, _ = rawgrpc.call(ch, rawgrpc.SIGN,
                                            rawgrpc.sign_request(b'{"sub":"\xff\xfe"}'))
            self.assertEqual(code, "INVALID_ARGUMENT")
            self.assertIn("claims.utf8", details)
            code, details, _ = rawgrpc.call(ch, rawgrpc.SIGN, b"\x0a\xff\xff\xff\xff\x0f")
            self.assertEqual(code, "INVALID_ARGUMENT")
            self.assertIn("request.malformed", details)
            code, details, _ = rawgrpc.call(ch, rawgrpc.SIGN, rawgrpc.sign_request(
                b'{"sub":"x"}', request_id=b"bad id with spaces"))
            self.assertEqual(code, "INVALID_ARGUMENT")
            self.assertIn("request.request_id", details)
            code, details, _ = rawgrpc.call(ch, rawgrpc.SIGN, rawgrpc.sign_request(
                b'{"sub":"x"}', key=b"../etc"))
            self.assertEqual(code, "INVALID_ARGUMENT")
            # a request over the transport limit never reaches the parser
            code, _, _ = rawgrpc.call(ch, rawgrpc.SIGN, rawgrpc.sign_request(b"x" * 200000))
            self.assertEqual(code, "RESOURCE_EXHAUSTED")
        finally:
            ch.close()

    def test_operand_starting_with_dash(self):
        """A kid is base64url and may start with '-': it is an operand, not
        options (`jwt-sign admin revoke KEY -uMP...` once failed that way)."""
        rc, _, err = self.env.run([harness.sign_path(), "decode", "-uMPjR76aloOjycm"])
        self.assertEqual(rc, EXIT_INVALID, err)
        self.assertIn("not a compact JWS", err)
        rc, _, err = self.env.run([harness.sign_path(), "--bogus", "decode", "x.y.z"])
        self.assertEqual(rc, 2, err)

    def test_unknown_method_unimplemented(self):
        ca, cert, key = self.env.caller_files("issuer-a")
        ch = rawgrpc.channel(self.env.port, ca, cert, key)
        try:
            t0 = time.time()
            code, _, _ = rawgrpc.call(ch, "/jwtsigner.v1.Signer/Nope", b"", timeout=10)
            self.assertEqual(code, "UNIMPLEMENTED")
            self.assertLess(time.time() - t0, 5, "answered, not left to the deadline")
        finally:
            ch.close()

    def test_denials_logged_with_reason(self):
        start = len(self.env.daemon.stderr_lines())
        self.env.sign("issuer-a", '{"aud":"a","aud":"b"}', "--request-id", "dup-1")
        line = wait_request(self.env, start, request_id="dup-1")
        self.assertEqual(line["decision"], "deny")
        self.assertEqual(line["status"], "INVALID_ARGUMENT")
        self.assertEqual(line["reason"], "claims.duplicate_member")


if __name__ == "__main__":
    unittest.main(verbosity=2)
