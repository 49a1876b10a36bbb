#!/usr/bin/python3
"""test_oidc_discovery.py - GET /.well-known/openid-configuration on a real
jwt-signerd (OpenID Connect Discovery 1.0).

1. The document: exactly issuer, jwks_uri, response_types_supported
   ["id_token"], subject_types_supported ["public"] and
   id_token_signing_alg_values_supported; the issuer is the policy's, byte for
   byte; jwks_uri defaults to issuer + /.well-known/jwks.json, whose path is
   the one this listener serves the JWKS on; the algorithms are the sorted,
   distinct algs of the JWKS (ES256 and RS256 keys configured). Caching as the
   JWKS: the same Cache-Control, an ETag, 304 on If-None-Match, HEAD.
2. A standard OIDC library from Debian (python3-authlib,
   authlib.oidc.discovery.OpenIDProviderMetadata) accepts every member. Its
   validate() also demands authorization_endpoint and token_endpoint, the
   login endpoints of an OpenID provider that a token signer does not have
   (Kubernetes' own service-account issuer document omits them too); the
   test checks that these two, and only these, are what it reports. The test
   policy's issuer is an https URL (authlib requires https for issuer and
   jwks_uri); the validator only reads the document, it fetches nothing.
3. Change: a policy reload (SIGHUP) with another issuer changes the document
   and its ETag (the old tag no longer 304s); revoking the only RS256 key
   removes RS256 from the list; a rotation of the ES256 key adds a JWKS entry
   but leaves the document (and its ETag) as it was.
4. http.jwks_uri: a configured value is served as written; a bad one refuses
   start-up with config.http_jwks_uri naming the key.
5. An OIDC client library from npm (openid-client 5, tests/node/verify.mjs)
   discovers the real daemon: Issuer.discover(http://127.0.0.1:PORT/.well-known/
   openid-configuration) accepts the document (the policy's issuer is that
   base URL, as a relying party requires: OIDC Discovery 1.0 section 4.3),
   fetches jwks_uri itself, and validates a token the daemon signed as an ID
   token (signature with the key it found by kid in that JWKS, iss, aud,
   exp, iat, sub); a token whose kid is not published is refused.
"""

import http.client
import json
import os
import signal
import random
import socket
import sys
import unittest
from urllib.parse import urlparse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

OIDC_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/.well-known/jwks.json"
ADMIN = "spiffe://example.org/ops/admin"
RS_KEY = {"name": "test-rs256", "label": "jwt-signer-test-rs256", "alg": "RS256"}
MEMBERS = {"issuer", "jwks_uri", "response_types_supported", "subject_types_supported",
           "id_token_signing_alg_values_supported"}
EXIT_OK = 0


def strict_json(body):
    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            raise AssertionError("duplicate member in %r" % body)
        return dict(pairs)
    return json.loads(body.decode("utf-8"), object_pairs_hook=no_duplicates)


class OidcDiscovery(unittest.TestCase):
    def setUp(self):
        self.env = harness.Env()

    def tearDown(self):
        self.env.cleanup()

    def get(self, path, headers=None):
        status, h, body = self.env.http_get(path, headers)
        return status, h, body

    def document(self):
        status, h, body = self.get(OIDC_PATH)
        self.assertEqual(status, 200, body)
        return strict_json(body), h, body

    def jwks_algs(self):
        status, _, body = self.get(JWKS_PATH)
        self.assertEqual(status, 200, body)
        keys = json.loads(body)["keys"]
        return sorted({k["alg"] for k in keys}), len(keys)

    def admin(self, *args):
        rc, out, err = self.env.run_sign("admin", "admin", *args)
        self.assertEqual(rc, EXIT_OK, "admin %s: %s%s" % (args, out, err))
        return json.loads(out)

    def check_authlib(self, doc):
        from authlib.oidc.discovery import OpenIDProviderMetadata
        meta = OpenIDProviderMetadata(doc)
        failed = {}
        for key in meta.REGISTRY_KEYS:
            try:
                object.__getattribute__(meta, "validate_" + key)()
            except ValueError as e:
                failed[key] = str(e)
        self.assertEqual(failed, {
            "authorization_endpoint": '"authorization_endpoint" is required',
            "token_endpoint": '"token_endpoint" is required'}, doc)
        with self.assertRaisesRegex(ValueError, "authorization_endpoint"):
            meta.validate()

    def test_document_follows_policy_and_keys(self):
        env = self.env
        issuer = env.default_policy()["issuer"]
        self.assertTrue(issuer.startswith("https://"), issuer)
        env.setup(keys=[dict(harness.DEFAULT_KEY), dict(RS_KEY)])
        env.add_caller("admin", ADMIN)
        env.start()

        # 1. Every member.
        doc, h, body = self.document()
        self.assertEqual(set(doc), MEMBERS, doc)
        self.assertEqual(doc["issuer"], issuer)
        self.assertIn(json.dumps(issuer).encode(), body)  # byte for byte on the wire
        self.assertEqual(doc["jwks_uri"], issuer.rstrip("/") + JWKS_PATH)
        self.assertEqual(urlparse(doc["jwks_uri"]).path, JWKS_PATH)
        self.assertEqual(doc["response_types_supported"], ["id_token"])
        self.assertEqual(doc["subject_types_supported"], ["public"])
        algs, _ = self.jwks_algs()
        self.assertEqual(algs, ["ES256", "RS256"])
        self.assertEqual(doc["id_token_signing_alg_values_supported"], algs)

        # Caching exactly as the JWKS.
        _, jh, _ = self.get(JWKS_PATH)
        self.assertEqual(h.get("content-type"), "application/json")
        self.assertEqual(h.get("cache-control"), jh.get("cache-control"))
        self.assertTrue(h.get("cache-control", "").startswith("public, max-age="), h)
        etag = h.get("etag")
        self.assertTrue(etag and etag.startswith('"') and etag != jh.get("etag"), h)
        status, h304, b304 = self.get(OIDC_PATH, {"If-None-Match": etag})
        self.assertEqual((status, b304), (304, b""))
        self.assertEqual(h304.get("etag"), etag)
        self.assertEqual(h304.get("cache-control"), h.get("cache-control"))
        conn = http.client.HTTPConnection("127.0.0.1", env.http_port,
                                          timeout=harness.timeout(10))
        try:
            conn.request("HEAD", OIDC_PATH)
            r = conn.getresponse()
            self.assertEqual(r.status, 200)
            self.assertEqual(r.getheader("Content-Length"), str(len(body)))
            self.assertEqual(r.read(), b"")
        finally:
            conn.close()

        # 2. A standard OIDC library accepts it.
        self.check_authlib(doc)

        # 3a. A reload with another issuer: the document and its ETag change.
        issuer2 = "https://idp.test.example/tenants/a/"
        env.write_policy(env.default_policy(issuer=issuer2))
        start = len(env.daemon.stderr_lines())
        os.kill(env.daemon.pid, signal.SIGHUP)
        env.wait_log("policy_reloaded", start=start)
        status, h2, body2 = self.get(OIDC_PATH, {"If-None-Match": etag})
        self.assertEqual(status, 200, body2)
        doc2 = strict_json(body2)
        self.assertEqual(doc2["issuer"], issuer2)
        self.assertEqual(doc2["jwks_uri"], "https://idp.test.example/tenants/a" + JWKS_PATH)
        self.assertNotEqual(h2.get("etag"), etag)
        etag2 = h2.get("etag")
        self.check_authlib(doc2)
        # Tokens now carry the new issuer too: the document says what verifiers will see.
        rc, out, err = env.sign("issuer-a", env.sample_claims(), "--json")
        self.assertEqual(rc, EXIT_OK, err)
        payload = json.loads(harness.b64url_decode(json.loads(out)["jwt"].split(".")[1]))
        self.assertEqual(payload["iss"], issuer2)

        # 3b. Revoking the only RS256 version removes RS256 from the list.
        rs_kid = [k["kid"] for k in json.loads(self.get(JWKS_PATH)[2])["keys"]
                  if k["alg"] == "RS256"][0]
        self.admin("revoke", RS_KEY["name"], rs_kid, "--reason", "test")
        status, h3, body3 = self.get(OIDC_PATH, {"If-None-Match": etag2})
        self.assertEqual(status, 200, body3)
        doc3 = strict_json(body3)
        self.assertEqual(doc3["id_token_signing_alg_values_supported"], ["ES256"])
        self.assertEqual(self.jwks_algs()[0], ["ES256"])
        etag3 = h3.get("etag")
        self.assertNotEqual(etag3, etag2)

        # 3c. A rotation adds a version to the JWKS; the algorithms, the document
        # and its ETag stay as they were.
        _, n_before = self.jwks_algs()
        self.admin("rotate", harness.DEFAULT_KEY["name"])
        algs, n_after = self.jwks_algs()
        self.assertEqual((algs, n_after), (["ES256"], n_before + 1))
        status, _, _ = self.get(OIDC_PATH, {"If-None-Match": etag3})
        self.assertEqual(status, 304)
        self.assertEqual(env.stop(), 0)

    def test_configured_jwks_uri(self):
        env = self.env
        uri = "https://keys.test.example/prefix/jwks.json?v=1"
        env.setup(http={"listen": "127.0.0.1:0", "jwks_uri": uri})
        env.start()
        doc, _, _ = self.document()
        self.assertEqual(doc["jwks_uri"], uri)
        self.assertEqual(doc["issuer"], env.default_policy()["issuer"])
        self.assertEqual(doc["id_token_signing_alg_values_supported"], ["ES256"])
        self.assertEqual(env.stop(), 0)

    def test_bad_jwks_uri_refuses_start(self):
        env = self.env
        env.setup()
        for bad in ("/.well-known/jwks.json", "ftp://keys.test.example/jwks.json",
                    "https://keys.test.example/a b", "https://keys.test.example/\nX: y",
                    "https://keys.test.example/jwks#k", "https://" + "a" * 2048):
            with self.subTest(uri=bad):
                cfg = env.write_config("bad.yaml",
                                       http={"listen": "127.0.0.1:0", "jwks_uri": bad})
                rc, _, err = env.run([harness.signerd_path(), "--config", cfg], timeout_s=60)
                self.assertEqual(rc, 1, err)
                line = None
                for text in err.splitlines():
                    try:
                        obj = json.loads(text)
                    except ValueError:
                        continue
                    if obj.get("event") == "startup_failed":
                        line = obj
                self.assertIsNotNone(line, err)
                self.assertEqual(line["reason"], "config.http_jwks_uri", line)
                self.assertIn("http.jwks_uri", line["message"])

    @staticmethod
    def free_fixed_port():
        """A free loopback port outside the kernel's ephemeral range."""
        try:
            with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
                low = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            low = 32768
        rng = random.SystemRandom()
        for _ in range(100):
            port = rng.randrange(max(1024, low - 12000), low)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
        raise AssertionError("no free loopback port below the ephemeral range")

    def test_openid_client_library(self):
        env = self.env
        # The issuer must be the URL the library discovers from, so the port is
        # chosen before start: below the ephemeral range (ip_local_port_range),
        # where no port-0 bind (the signer's own gRPC listener included) can
        # take it between the check and the start, and free when checked.
        port = self.free_fixed_port()
        issuer = "http://127.0.0.1:%d" % port
        env.setup(policy=env.default_policy(issuer=issuer),
                  http={"listen": "127.0.0.1:%d" % port})
        env.start()
        self.assertEqual(env.http_port, port)
        rc, out, err = env.sign("issuer-a", env.sample_claims(), "--json")
        self.assertEqual(rc, EXIT_OK, err)
        res = json.loads(out)
        token, kid = res["jwt"], res["kid"]

        job = {"op": "discover", "url": issuer + OIDC_PATH, "token": token,
               "audience": harness.SAMPLE_AUD, "alg": "ES256"}
        got = harness.node_job("verify.mjs", job)
        meta = got["metadata"]
        self.assertEqual(meta["issuer"], issuer)
        self.assertEqual(meta["jwks_uri"], issuer + JWKS_PATH)
        self.assertEqual(meta["id_token_signing_alg_values_supported"], ["ES256"])
        self.assertEqual(meta["response_types_supported"], ["id_token"])
        self.assertEqual(meta["subject_types_supported"], ["public"])
        self.assertTrue(got["jwks_fetched"], got)
        self.assertEqual(got["id_token"], {"ok": True, "kid": kid}, got)

        # A token signed by a key the JWKS does not hold is refused by kid.
        parts = token.split(".")
        header = json.loads(harness.b64url_decode(parts[0]))
        header["kid"] = "not-" + kid
        forged = ".".join([harness.b64url_encode(json.dumps(header).encode())] + parts[1:])
        got = harness.node_job("verify.mjs", dict(job, token=forged))
        self.assertFalse(got["id_token"]["ok"], got)
        self.assertIn("no valid key found", got["id_token"]["error"], got)
        self.assertEqual(env.stop(), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
