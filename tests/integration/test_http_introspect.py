#!/usr/bin/python3
"""test_http_introspect.py - POST /introspect (RFC 7662 §2.1) on the HTTP
listener of a real jwt-signerd (real SoftHSM token, real PKI from
scripts/mkpki.sh), over HTTPS with client certificates checked against
http.client_ca, spoken to with Python's ssl and http.client only.

- The JWKS is still served over HTTPS to a client without a certificate.
- No client certificate -> 401 {"error":"invalid_client"}; a certificate
  from another CA claiming an introspector's identity (mkpki's `stranger`)
  -> 401: the chain decides, not the name; the server's certificate from the
  same CA (extended key usage serverAuth only) -> 401.
- A caller with a valid certificate that is not in the policy's
  `introspectors` -> 403 {"error":"access_denied"}.
- The introspector: a token just signed with jwt-sign -> {"active":true}
  with the RFC 7662 members (client_id = the issuing caller, sub, aud, iss,
  jti, token_type), Content-Type application/json, Cache-Control no-store;
  garbage, an empty token, a 40 KB token -> {"active":false} and nothing
  else; token_type_hint and unknown parameters are ignored.
- Malformed requests: a bad %XX escape, no token, a JSON body -> 400
  {"error":"invalid_request"}; a body announced as 1 MB -> 413 before any
  of it is read; GET /introspect -> 405 with Allow: POST.
- A log line with method "POST /introspect" names the introspector, the
  answer's reason (the caller never sees it) and the HTTP status; refusals
  are "introspect" audit records; of the answers only the forgery evidence
  is: a token signed in the SoftHSM token with the real key (pkcs11-tool,
  test_introspection.Case.forge) with a fresh jti -> introspect.unknown_jti,
  re-using the real jti on other claims -> introspect.hash_mismatch, each
  {"active":false} to the caller and one audit record naming jti and kid.

Debian: python3 (ssl, http.client), and what test_introspection.py needs
(python3-grpcio, python3-jwt, opensc). Run with /usr/bin/python3.
"""

import http.client
import json
import os
import socket
import ssl
import sys
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import test_introspection as ti  # noqa: E402

ISSUER = "https://jwt-signer.test.example"
VERIFIER = "spiffe://example.org/verifier"
ISSUER_A = harness.CALLER_IDS["issuer-a"]
FORM = "application/x-www-form-urlencoded"


class HttpIntrospect(ti.Case):
    """Case (test_introspection.py) brings setUp/tearDown and forge()."""

    # --- HTTPS client ---------------------------------------------------------------
    def context(self, cert=None):
        """A TLS client context trusting the test CA, with caller cert's certificate."""
        ctx = ssl.create_default_context(cafile=os.path.join(self.env.pki_dir, "ca.crt"))
        if cert is not None:
            ctx.load_cert_chain(os.path.join(self.env.pki_dir, cert + ".crt"),
                                os.path.join(self.env.pki_dir, cert + ".key"))
        return ctx

    def request(self, method, path, cert=None, body=None, headers=None):
        """(status, headers dict, body bytes) of one HTTPS request."""
        conn = http.client.HTTPSConnection("localhost", self.env.http_port,
                                           context=self.context(cert),
                                           timeout=harness.timeout(10))
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def introspect(self, cert, token=None, body=None, content_type=FORM):
        if body is None:
            body = urllib.parse.urlencode({"token": token})
        return self.request("POST", "/introspect", cert=cert, body=body,
                            headers={"Content-Type": content_type})

    def answer(self, cert, token, status=200):
        st, hdrs, body = self.introspect(cert, token)
        self.assertEqual(st, status, body)
        self.assertEqual(hdrs.get("content-type"), "application/json")
        self.assertEqual(hdrs.get("cache-control"), "no-store")
        return json.loads(body)

    # --- the test -------------------------------------------------------------------
    def test_http_introspect(self):
        env = self.env
        policy = env.default_policy(issuer=ISSUER)
        policy["introspectors"] = [{"id": VERIFIER}]
        pki = env.pki_dir
        # A denial budget large enough that every refusal below is logged in full.
        env.setup(policy=policy, introspection={"max_tokens": 1000},
                  limits={"denials_per_second": 1000, "denials_burst": 1000},
                  http={"listen": "127.0.0.1:0",
                        "tls_cert": os.path.join(pki, "server.crt"),
                        "tls_key": os.path.join(pki, "server.key"),
                        "client_ca": os.path.join(pki, "ca.crt")})
        env.add_cert("verifier", uris=[VERIFIER])
        env.start()

        rc, out, err = env.sign("issuer-a", {"sub": harness.SAMPLE_SUB,
                                             "aud": harness.SAMPLE_AUD})
        self.assertEqual(rc, 0, err)
        token = out.strip()

        # The JWKS needs no client certificate.
        st, _, body = self.request("GET", "/.well-known/jwks.json")
        self.assertEqual(st, 200, body)
        self.assertIn("keys", json.loads(body))

        # Not authenticated: no certificate, or one from another CA.
        # The server's own certificate (same CA, serverAuth only) is no client's.
        for cert in (None, "stranger", "server"):
            self.assertEqual(self.answer(cert, token, status=401), {"error": "invalid_client"},
                             cert)
        # Authenticated, not an introspector.
        self.assertEqual(self.answer("intruder", token, status=403), {"error": "access_denied"})
        self.assertEqual(self.answer("issuer-a", token, status=403), {"error": "access_denied"})

        # The introspector.
        ans = self.answer("verifier", token)
        payload = json.loads(harness.b64url_decode(token.split(".")[1]))
        self.assertIs(ans.get("active"), True, ans)
        self.assertEqual(ans["client_id"], ISSUER_A)
        self.assertEqual(ans["sub"], harness.SAMPLE_SUB)
        self.assertEqual(ans["aud"], payload["aud"])
        self.assertEqual(ans["iss"], ISSUER)
        self.assertEqual(ans["jti"], payload["jti"])
        self.assertEqual(ans["exp"], payload["exp"])
        self.assertEqual(ans["token_type"], "Bearer")
        # token_type_hint and unknown parameters are ignored (RFC 7662 §2.1).
        st, _, body = self.introspect("verifier", body=urllib.parse.urlencode(
            {"x": "1", "token": token, "token_type_hint": "refresh_token"}))
        self.assertEqual((st, json.loads(body).get("active")), (200, True), body)

        # Anything else is inactive, and says nothing more (RFC 7662 §2.2).
        forged = token[:-8] + ("A" * 8 if not token.endswith("A" * 8) else "B" * 8)
        for bad in ("garbage", "", "a.b.c", forged, "x" * 40000, token + "."):
            self.assertEqual(self.answer("verifier", bad), {"active": False}, bad[:40])

        # Malformed requests.
        for body, ctype in (("token=a%zz", FORM), ("token_type_hint=access_token", FORM),
                            ("token=a&token=b", FORM),
                            (json.dumps({"token": token}), "application/json")):
            st, hdrs, out = self.introspect("verifier", body=body, content_type=ctype)
            self.assertEqual(st, 400, (body, out))
            self.assertEqual(json.loads(out), {"error": "invalid_request"})
        st, hdrs, out = self.request("GET", "/introspect", cert="verifier")
        self.assertEqual(st, 405, out)
        self.assertEqual(hdrs.get("allow"), "POST")

        # A 1 MB body: 413 as soon as the header is read.
        self.assertEqual(self.big_body(), 413)

        # The daemon still answers.
        self.assertIs(self.answer("verifier", token).get("active"), True)

        # Forgeries signed with the real key in the HSM (a leaked key): a fresh
        # jti (unknown_jti) and a real jti on other claims (hash_mismatch).
        header = json.loads(harness.b64url_decode(token.split(".")[0]))
        fresh = dict(payload, jti="forged-" + ti.new_sub())
        reused = dict(payload, scope="write")
        for forged_payload in (fresh, reused):
            self.assertEqual(self.answer("verifier", self.forge(header, forged_payload)),
                             {"active": False})

        # Log lines: the introspector and the answer's reason, never the token.
        env.wait_log(lambda o: o.get("method") == "POST /introspect" and
                     o.get("caller") == VERIFIER and o.get("reason") == "active")
        lines = [o for o in env.logs() if o.get("method") == "POST /introspect"]
        reasons = {o.get("reason") for o in lines}
        self.assertIn("introspect.not_allowed", reasons, lines)
        self.assertIn("identity.none", reasons, lines)
        self.assertIn("http.form", reasons, lines)
        self.assertIn("http.body_too_large", reasons, lines)
        by_reason = {o.get("reason"): o.get("status") for o in lines}
        self.assertEqual(by_reason["identity.none"], "401")
        self.assertEqual(by_reason["introspect.not_allowed"], "403")
        self.assertEqual(by_reason["http.body_too_large"], "413")
        self.assertEqual(by_reason["active"], "200")
        for o in lines:
            self.assertNotIn(token, json.dumps(o))
        env.stop()

        # Refusals are audit records of type "introspect", like the gRPC call's.
        rc, out, err = env.run([harness.audit_path(), "show", "--json"] + env.audit_segments(),
                               timeout_s=60)
        self.assertEqual(rc, 0, err)
        records = [json.loads(line) for line in out.splitlines() if line.strip()]
        refused = {(r.get("caller"), r.get("reason")) for r in records
                   if r.get("type") == "introspect" and r.get("decision") == "deny"}
        self.assertIn(("spiffe://example.org/intruder", "introspect.not_allowed"), refused,
                      records[-5:])
        self.assertIn((VERIFIER, "http.body_too_large"), refused)
        # Forgery evidence is audited one record each, naming the jti and kid.
        evidence = [r for r in records if r.get("type") == "introspect" and
                    r.get("reason") in ("introspect.unknown_jti", "introspect.hash_mismatch")]
        self.assertEqual([(r["reason"], r.get("caller"), ti.as_obj(r.get("detail"))["jti"])
                          for r in evidence],
                         [("introspect.unknown_jti", VERIFIER, fresh["jti"]),
                          ("introspect.hash_mismatch", VERIFIER, payload["jti"])], evidence)
        # Other answers (active or not) are not audited.
        self.assertFalse([r for r in records if r.get("type") == "introspect" and
                          r.get("caller") == VERIFIER and r.get("reason") not in
                          ("http.form", "http.body_too_large", "introspect.unknown_jti",
                           "introspect.hash_mismatch")], records[-5:])

    def big_body(self):
        """POSTs a 1 MB body announced by Content-Length; the status of the answer."""
        raw = socket.create_connection(("127.0.0.1", self.env.http_port),
                                       timeout=harness.timeout(10))
        s = self.context("verifier").wrap_socket(raw, server_hostname="localhost")
        try:
            size = 1024 * 1024
            s.sendall(("POST /introspect HTTP/1.1\r\nHost: localhost\r\nContent-Type: %s\r\n"
                       "Content-Length: %d\r\nConnection: close\r\n\r\n" % (FORM, size))
                      .encode())
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            try:  # the server does not read it: sending may fail, that is fine
                s.sendall(b"token=" + b"a" * (size - 6))
            except OSError:
                pass
            self.assertTrue(data.startswith(b"HTTP/1.1 "), data)
            return int(data[9:12])
        finally:
            s.close()


if __name__ == "__main__":
    unittest.main()
