#!/usr/bin/python3
"""test_externaljwt.py - Kubernetes' ExternalJWTSigner service (k8s.io/externaljwt
v1 and v1alpha1, KEP-740) on a real jwt-signerd, through its Unix domain socket,
with a client generated from the published proto (k8s_client.py), never with
jwt-signer's own code.

1. Tokens, for each of ES256, ES384 and RS256 (one key each; the unix caller's
   default key is switched between the three by a policy reload, SIGHUP): a
   claim set shaped like kube-apiserver's (iss, sub
   system:serviceaccount:NS:NAME, aud, exp, iat, nbf, jti and the
   kubernetes.io object), serialised compactly and base64url-encoded by the
   test, is signed through Sign of v1 AND of v1alpha1. The token
   header.claims.signature: the header holds exactly alg (the key's), kid and
   typ "JWT"; the payload segment is the one sent, byte for byte (a claim set
   with unsorted members and a "\\/" escape, which any re-encoding would
   change, verifies too); it verifies with PyJWT and with npm's jose against
   the FetchKeys key (PKIX DER, parsed by python3-cryptography: strict DER
   that re-encodes to the same bytes) and against the JWKS the discovery
   document names (its jwks_uri path, fetched from the test listener). FetchKeys
   and the JWKS hold the same kids and the same public keys. Metadata is the
   policy's max_ttl (>= 600) in both versions.
2. Refusals, each with its gRPC status, the reason in the trailer
   jwt-signer-reason and the details "reason: message", and a full audit
   record in order (decision deny, that reason, caller unix:uid=N, its peer
   credentials, sub and aud when the claims parsed): a payload that is not
   base64url (b64url.*), not JSON (claims.syntax), a wrong iss
   (policy.token_issuer), an aud outside the allowlist (policy.audience), a
   lifetime over max_ttl (policy.lifetime), a sub not matching
   (policy.subject), a peer uid the policy does not name (policy.no_match,
   on an open connection after a reload to a policy naming only uid+1; see
   7 for a new connection), and beyond the issue's list: a claim not
   allowed or over its max_bytes (policy.claim), no jti (claims.jti), iat in
   the future or after exp (claims.iat), nbf after iat (claims.nbf), exp in the past
   (claims.exp_past), a duplicate sub (claims.duplicate_member), over 16 KiB
   (claims.too_large). The config's `limits` keep the denial budget from
   folding any of them into a counted record.
3. Every token is a "sign" audit record (jwt-audit show --json): caller
   unix:uid=N, peer unix:pid=..,uid=..,gid=.., jti, sub, aud, iat, exp, key,
   kid, alg, token_sha256 = SHA-256 of the token. The log verifies
   (jwt-audit verify); `show --sub system:serviceaccount:NS:NAME` lists
   exactly that account's tokens; `prove` and `check-proof` work for one.
4. The socket: mode 0660 by default, or as configured (0600), never more
   than 0660; owner and group as configured (a user name, a numeric gid).
5. Start-up refusals: a unix caller that may sign with PS256 or EdDSA
   (config.externaljwt_alg, with a message saying why), a unix caller and no
   externaljwt section (config.externaljwt_alg), a socket mode over 0660
   (config.externaljwt), a unix caller's max_ttl under 600 s (the message
   names 600); an mTLS caller may still use PS256 and EdDSA.
6. Rotation (prepublish 3 s, scaled by JS_TIMEOUT_SCALE): FetchKeys shows the
   new kid at once, while Sign still uses the old one; Sign switches after the
   pre-publication; the old kid stays in FetchKeys while it is retiring (its
   retirement comes max_ttl + leeway later, >= 601 s because Metadata must be
   >= 600, so the test checks the schedule in Admin status instead of waiting
   for it) and leaves it at once when revoked; data_timestamp changes when the
   key set does; 0 < refresh_hint_seconds <= the pre-publication period. Freezing
   the caller (Admin) refuses Sign with admin.frozen but leaves FetchKeys
   and Metadata answering.
7. (as root only) Real peers of another uid, in a child process running as
   nobody: without the socket's group the socket itself refuses the
   connection; with it, a uid the policy does not name has its connection
   closed at accept (UNAVAILABLE to the client; logged and audited as
   policy.no_match with that uid and its peer credentials), and once a
   reload names it, it signs as unix:uid=65534.
8. The caller's rate applies to Sign (rate.limited, retry-after-ms), not to
   FetchKeys or Metadata. More than 32 idle connections of one uid (half of
   the 64 the socket takes): the extra ones are closed at accept
   (externaljwt.connections, RESOURCE_EXHAUSTED in the log) and a call
   meanwhile fails UNAVAILABLE; once they close, calls work again (twice
   over: the slots are released).

Debian: python3-grpcio, python3-grpc-tools, python3-jwt, python3-cryptography;
npm: tests/node (jose 5, openid-client 5; `npm ci` by harness.npm_ci()).
Run with /usr/bin/python3.
"""

import grp
import hashlib
import json
import math
import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
import time
import unittest
import uuid
from urllib.parse import urlparse

import grpc
import jwt as pyjwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import k8s_client  # noqa: E402

KEYS = {
    "ES256": {"name": "k8s-es256", "label": "jwt-signer-test-k8s-es256", "alg": "ES256"},
    "ES384": {"name": "k8s-es384", "label": "jwt-signer-test-k8s-es384", "alg": "ES384"},
    "RS256": {"name": "k8s-rs256", "label": "jwt-signer-test-k8s-rs256", "alg": "RS256"},
}
PS256_KEY = {"name": "k8s-ps256", "label": "jwt-signer-test-k8s-ps256", "alg": "PS256"}
EDDSA_KEY = {"name": "k8s-eddsa", "label": "jwt-signer-test-k8s-eddsa", "alg": "EdDSA"}
ISSUER = "https://jwt-signer.test.example"
KUBE_AUD = "https://kubernetes.default.svc"
OTHER_AUD = "https://vault.test.example"
SA_SUBJECT = r"^system:serviceaccount:[a-z0-9]([-a-z0-9]*[a-z0-9])?:[a-z0-9]([-.a-z0-9]*[a-z0-9])?$"
ADMIN = "spiffe://example.org/ops/admin"
OIDC_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/.well-known/jwks.json"
SOCK = "externaljwt.sock"
HEADER_MEMBERS = {"alg", "kid", "typ"}
SIG_BYTES = {"ES256": 64, "ES384": 96}


def b64(obj):
    """Compact JSON (no spaces), base64url without padding: what kube-apiserver sends."""
    return harness.b64url_encode(json.dumps(obj, separators=(",", ":")).encode("utf-8"))


def kube_claims(now=None, ns="payments", sa="deployer", ttl=3600, **override):
    """A claim set shaped like kube-apiserver's for a projected service-account
    token bound to a pod (pkg/serviceaccount/claims.go), members in the order
    Go's map marshalling gives (sorted)."""
    now = int(time.time()) if now is None else now
    claims = {
        "aud": [KUBE_AUD],
        "exp": now + ttl,
        "iat": now,
        "iss": ISSUER,
        "jti": str(uuid.uuid4()),
        "kubernetes.io": {
            "namespace": ns,
            "node": {"name": "node-a.test", "uid": str(uuid.uuid4())},
            "pod": {"name": "web-7d9f8b6c5-x2x9k", "uid": str(uuid.uuid4())},
            "serviceaccount": {"name": sa, "uid": str(uuid.uuid4())},
            "warnafter": now + ttl * 5 // 6,
        },
        "nbf": now,
        "sub": "system:serviceaccount:%s:%s" % (ns, sa),
    }
    for k, v in override.items():
        if v is None:
            claims.pop(k, None)
        else:
            claims[k] = v
    return claims


def unix_entry(uid=None, keys=("k8s-es256",), default_key=None, max_ttl="1h", **extra):
    entry = {
        "id": harness.unix_caller_id(uid),
        "keys": list(keys),
        "default_key": default_key or keys[0],
        "audiences": [KUBE_AUD, OTHER_AUD],
        "max_aud": 2,
        "max_ttl": max_ttl,
        "default_ttl": "5m",
        "subject": SA_SUBJECT,
        "scopes": [],
        "claims": {"kubernetes.io": {"type": "object", "max_bytes": 4096}},
        "rate": {"per_second": 1000, "burst": 2000},
        "incident_rate": {"per_second": 1000, "burst": 2000},
    }
    entry.update(extra)
    return entry


def k8s_policy(env, callers, default_key="k8s-es256"):
    """A policy whose callers are `callers`; defaults point at an existing key."""
    return env.default_policy(callers=callers, issuer=ISSUER, keys=[default_key],
                              default_key=default_key)


def sha256_hex(text):
    return hashlib.sha256(text.encode("ascii") if isinstance(text, str) else text).hexdigest()


def der_to_pem(der):
    key = load_der_public_key(der)
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def startup_failure(stderr):
    """The last startup_failed JSON log line in stderr (or None)."""
    line = None
    for text in stderr.splitlines():
        try:
            obj = json.loads(text)
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("event") == "startup_failed":
            line = obj
    return line


def show(env, *filters):
    """The records (matching filters) of the log: `jwt-audit show --json`, run
    after the daemon stopped."""
    rc, out, err = env.run([harness.audit_path(), "show", "--json", *filters] +
                           env.audit_segments(), timeout_s=60)
    if rc != 0:
        raise AssertionError("jwt-audit show failed (%d): %s" % (rc, err))
    return [json.loads(line) for line in out.splitlines() if line.strip()]


class Case(unittest.TestCase):
    def setUp(self):
        self.env = harness.Env()
        self.t0 = time.monotonic()
        self.clients = []

    def tearDown(self):
        for c in self.clients:
            c.close()
        if self._outcome_failed() and self.env.daemon is not None:
            sys.stderr.write(self.env.daemon.tail(80) + "\n")
        self.env.cleanup()
        sys.stderr.write("[%s: %.1f s] " % (self._testMethodName, time.monotonic() - self.t0))

    def _outcome_failed(self):
        result = getattr(getattr(self, "_outcome", None), "result", None)
        for attr in ("errors", "failures"):
            for test, _ in getattr(result, attr, None) or []:
                if test is self:
                    return True
        return False

    def sock_path(self):
        return self.env.path(SOCK)

    def client(self, version):
        c = k8s_client.Client(self.sock_path(), version, timeout_s=harness.timeout(10))
        self.clients.append(c)
        return c

    def start(self):
        self.env.start()
        harness.wait_unix_socket(self.sock_path(), daemon=self.env.daemon)
        return {v: self.client(v) for v in k8s_client.VERSIONS}

    def stop(self):
        """Closes this test's connections, then stops the daemon (its exit status).
        An idle HTTP/2 connection left open holds the daemon's drain for ~5 s
        (gRPC's GOAWAY handshake), as kube-apiserver's would."""
        for c in self.clients:
            c.close()
        return self.env.stop()

    def reload_policy(self, policy):
        env = self.env
        env.write_policy(policy)
        mark = len(env.daemon.stderr_lines())
        os.kill(env.daemon.pid, signal.SIGHUP)
        env.wait_log("policy_reloaded", start=mark)

    def sign_token(self, client, claims_b64):
        """Sign, then the checks every response must pass; returns (token, header dict)."""
        header_b64, sig_b64 = client.sign(claims_b64)
        header = json.loads(harness.b64url_decode(header_b64))  # strict base64url
        self.assertEqual(set(header), HEADER_MEMBERS, header)
        self.assertEqual(header["typ"], "JWT")
        self.assertTrue(isinstance(header["kid"], str) and 0 < len(header["kid"]) <= 1024, header)
        sig = harness.b64url_decode(sig_b64)
        if header["alg"] in SIG_BYTES:
            self.assertEqual(len(sig), SIG_BYTES[header["alg"]], header)
        token = "%s.%s.%s" % (header_b64, claims_b64, sig_b64)
        self.assertEqual(token.split(".")[1], claims_b64)
        return token, header

    def fetch_keys(self, client):
        """FetchKeys with its invariants; returns ({kid: public key}, {kid: DER}, response)."""
        resp = client.fetch_keys()
        self.assertGreater(resp.refresh_hint_seconds, 0, resp)
        self.assertTrue(resp.HasField("data_timestamp"), resp)
        self.assertLessEqual(resp.data_timestamp.seconds, time.time() + 1, resp)
        self.assertGreater(resp.data_timestamp.seconds, 1700000000, resp)
        keys, ders = {}, {}
        for k in resp.keys:
            self.assertTrue(0 < len(k.key_id) <= 1024, k)
            self.assertNotIn(k.key_id, keys, "kid %r twice in FetchKeys" % k.key_id)
            self.assertFalse(k.exclude_from_oidc_discovery, k)
            key = load_der_public_key(k.key)  # PKIX SubjectPublicKeyInfo DER
            self.assertEqual(key.public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo),
                             k.key, "FetchKeys %r: not the canonical DER encoding" % k.key_id)
            keys[k.key_id] = key
            ders[k.key_id] = k.key
        return keys, ders, resp

    def expect_refused(self, client, claims_b64, status, reason, prefix=False):
        """Sign refused with status and reason (a prefix of it with prefix=True,
        one of them for a tuple): trailer and details; returns the CallError."""
        err = client.sign_error(claims_b64)
        self.assertEqual(err.code, status, err)
        if prefix:
            self.assertTrue(err.reason and err.reason.startswith(reason), err)
        elif isinstance(reason, tuple):
            self.assertIn(err.reason, reason, err)
        else:
            self.assertEqual(err.reason, reason, err)
        self.assertTrue(err.details.startswith(err.reason + ": "), err)
        self.assertGreater(len(err.details), len(err.reason) + 2, err)
        return err


# --- 1-4: tokens, refusals, audit, socket ------------------------------------------------

class Tokens(Case):
    def discovery_jwks(self):
        status, _, body = self.env.http_get(OIDC_PATH)
        self.assertEqual(status, 200, body)
        doc = json.loads(body)
        self.assertEqual(doc["issuer"], ISSUER)
        path = urlparse(doc["jwks_uri"]).path
        self.assertEqual(path, JWKS_PATH, doc)
        status, _, body = self.env.http_get(path)
        self.assertEqual(status, 200, body)
        return doc, json.loads(body)

    def check_key_type(self, key, alg):
        if alg == "ES256":
            self.assertIsInstance(key, ec.EllipticCurvePublicKey)
            self.assertEqual(key.curve.name, "secp256r1")
        elif alg == "ES384":
            self.assertIsInstance(key, ec.EllipticCurvePublicKey)
            self.assertEqual(key.curve.name, "secp384r1")
        else:
            self.assertIsInstance(key, rsa.RSAPublicKey)
            self.assertGreaterEqual(key.key_size, 2048)

    def verify_everywhere(self, token, alg, kid, claims, fk_keys, fk_ders, jwks):
        """PyJWT and jose, against the FetchKeys key and the discovery JWKS."""
        opts = {"algorithms": [alg], "audience": KUBE_AUD, "issuer": ISSUER}
        self.assertIn(kid, fk_keys, "signing kid not in FetchKeys")
        self.check_key_type(fk_keys[kid], alg)
        self.assertEqual(pyjwt.decode(token, key=fk_keys[kid], **opts), claims)
        jwk = [k for k in jwks["keys"] if k.get("kid") == kid]
        self.assertEqual(len(jwk), 1, "kid %r in the JWKS %d times" % (kid, len(jwk)))
        pjwk = pyjwt.PyJWK(jwk[0])
        self.assertEqual(pyjwt.decode(token, key=pjwk.key, **opts), claims)
        # The JWKS and FetchKeys publish the same public key under the kid.
        self.assertEqual(pjwk.key.public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo),
                         fk_ders[kid])
        res = harness.node_job("verify.mjs", {
            "op": "jwt", "token": token, "alg": alg, "spki": der_to_pem(fk_ders[kid]),
            "jwks": jwks, "issuer": ISSUER, "audience": KUBE_AUD})
        for how in ("spki", "jwks"):
            self.assertTrue(res[how]["ok"], "jose (%s) refused a %s token: %r" % (how, alg, res))
            self.assertEqual(res[how]["payload"], claims)
            self.assertEqual(res[how]["header"], {"alg": alg, "kid": kid, "typ": "JWT"})

    def test_sign_verify_refuse_audit(self):
        env = self.env
        uid = os.getuid()
        keys = [KEYS[a] for a in ("ES256", "ES384", "RS256")]
        names = [k["name"] for k in keys]
        policy = k8s_policy(env, [unix_entry(keys=names)])
        # The socket is 0600, its owner named by user name, its group by number.
        # The denial budget (limits) holds every refusal below in full.
        env.setup(policy=policy, keys=[dict(k) for k in keys],
                  externaljwt=harness.externaljwt_config(
                      SOCK, owner=pwd.getpwuid(os.getuid()).pw_name, group=str(os.getgid()),
                      mode="0600"),
                  limits={"denials_per_second": 100, "denials_burst": 100})
        clients = self.start()

        # 4. The socket.
        st = os.stat(self.sock_path())
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600, oct(st.st_mode))
        self.assertEqual((st.st_uid, st.st_gid), (os.getuid(), os.getgid()))

        # Metadata: the caller's max_ttl, in both versions.
        for v, c in clients.items():
            self.assertEqual(c.metadata().max_token_expiration_seconds, 3600, v)

        doc, jwks = self.discovery_jwks()
        self.assertEqual(doc["id_token_signing_alg_values_supported"],
                         ["ES256", "ES384", "RS256"])
        fk_keys, fk_ders, _ = self.fetch_keys(clients["v1"])
        self.assertEqual(sorted(fk_keys), sorted(k["kid"] for k in jwks["keys"]))
        fk_alpha, _, _ = self.fetch_keys(clients["v1alpha1"])
        self.assertEqual(sorted(fk_alpha), sorted(fk_keys))

        # 1. A token per algorithm and API version.
        issued = []   # (token, claims, alg, kid)
        kids = {}
        for alg in ("ES256", "ES384", "RS256"):
            if alg != "ES256":
                self.reload_policy(k8s_policy(env, [unix_entry(keys=names,
                                                               default_key=KEYS[alg]["name"])]))
            for version in k8s_client.VERSIONS:
                with self.subTest(alg=alg, version=version):
                    claims = kube_claims()
                    claims_b64 = b64(claims)
                    token, header = self.sign_token(clients[version], claims_b64)
                    self.assertEqual(header["alg"], alg)
                    kids.setdefault(alg, header["kid"])
                    self.assertEqual(header["kid"], kids[alg], "kid changed between versions")
                    self.verify_everywhere(token, alg, header["kid"], claims, fk_keys, fk_ders,
                                           jwks)
                    issued.append((token, claims, alg, header["kid"]))
        self.assertEqual(len(set(kids.values())), 3, kids)

        # Signed as sent: unsorted members and a "\/" escape (a re-encoder
        # would sort, or write "/"), so only the sent bytes verify.
        now = int(time.time())
        raw = ('{"sub":"system:serviceaccount:ns:deployer","iss":%s,"aud":[%s],"exp":%d,'
               '"iat":%d,"nbf":%d,"jti":"%s","kubernetes.io":{"namespace":"ns",'
               '"serviceaccount":{"name":"deployer","uid":"%s"},"note":"a\\/b"}}'
               % (json.dumps(ISSUER), json.dumps(KUBE_AUD), now + 600, now, now, uuid.uuid4(),
                  uuid.uuid4()))
        claims_b64 = harness.b64url_encode(raw.encode("utf-8"))
        token, header = self.sign_token(clients["v1"], claims_b64)
        self.assertEqual(header["alg"], "RS256")
        claims = json.loads(raw)
        self.verify_everywhere(token, "RS256", header["kid"], claims, fk_keys, fk_ders, jwks)
        issued.append((token, claims, "RS256", header["kid"]))

        # 2. Refusals (the RS256 key is the default now).
        c = clients["v1"]
        denied = []   # (reason, claims sent or None), in order
        for bad in ("eyJhbGciOiJub25lIn0+", "eyJ=", "e"):
            err = self.expect_refused(c, bad, grpc.StatusCode.INVALID_ARGUMENT, "b64url.",
                                      prefix=True)
            denied.append((err.reason, None))
        self.expect_refused(clients["v1alpha1"], harness.b64url_encode(b'{"iss":'),
                            grpc.StatusCode.INVALID_ARGUMENT, "claims.syntax")
        denied.append(("claims.syntax", None))
        now = int(time.time())
        denied_ = grpc.StatusCode.PERMISSION_DENIED
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        cases = [
            ("wrong iss", {"iss": "https://evil.test.example"}, denied_, "policy.token_issuer"),
            ("aud not allowed", {"aud": ["https://not-allowed.test.example"]}, denied_,
             "policy.audience"),
            ("lifetime over max_ttl", {"exp": now + 3601}, denied_, "policy.lifetime"),
            ("sub not matching", {"sub": "system:serviceaccount:NS:Deployer"}, denied_,
             "policy.subject"),
            # Beyond the issue's list: the other rules for pre-built claims.
            ("claim not allowed", {"groups": ["system:masters"]}, denied_, "policy.claim"),
            ("no jti", {"jti": None}, invalid, "claims.jti"),
            ("iat in the future", {"iat": now + 3600, "nbf": now + 3600, "exp": now + 4200},
             invalid, "claims.iat"),
            ("nbf after iat", {"nbf": now + 900}, invalid, "claims.nbf"),
            ("exp in the past", {"iat": now - 7200, "nbf": now - 7200, "exp": now - 3600},
             invalid, "claims.exp_past"),
            # exp before iat (iat within the leeway): a negative lifetime
            # passes any max_ttl unless it is refused as such.
            ("exp before iat", {"iat": now + 30, "nbf": now + 30, "exp": now + 10}, invalid,
             "claims.iat"),
        ]
        for what, override, status, reason in cases:
            with self.subTest(refusal=what):
                claims = kube_claims(now=now, **override)
                self.expect_refused(c, b64(claims), status, reason)
                denied.append((reason, claims))
        # The kubernetes.io object over its max_bytes (4096) in the policy.
        claims = kube_claims(now=now)
        claims["kubernetes.io"]["pad"] = "x" * 4096
        self.expect_refused(c, b64(claims), denied_, "policy.claim")
        denied.append(("policy.claim", claims))
        # A second sub after the allowed one (RFC 7519 section 4: a smuggled
        # member a lenient parser would take) is malformed, never signed.
        good = b64(kube_claims(now=now))
        raw = (harness.b64url_decode(good)[:-1] +
               b',"sub":"system:serviceaccount:kube-system:admin"}')
        self.expect_refused(c, harness.b64url_encode(raw), invalid, "claims.duplicate_member")
        denied.append(("claims.duplicate_member", None))
        # Over the 16 KiB claims limit, before any parsing.
        claims = kube_claims(now=now)
        claims["kubernetes.io"]["pad"] = "x" * 17000
        self.expect_refused(c, b64(claims), invalid, "claims.too_large")
        denied.append(("claims.too_large", None))

        # A peer uid the policy does not name.
        self.reload_policy(k8s_policy(env, [unix_entry(uid=uid + 1, keys=names)]))
        claims = kube_claims()
        for v in k8s_client.VERSIONS:
            self.expect_refused(clients[v], b64(claims), grpc.StatusCode.PERMISSION_DENIED,
                                "policy.no_match")
            denied.append(("policy.no_match", claims))
        self.assertEqual(self.stop(), 0)

        # 3. The audit log.
        recs = [r for r in show(env) if r.get("type") == "sign"]
        caller = harness.unix_caller_id()
        peer_tail = ",uid=%d,gid=%d" % (uid, os.getgid())
        key_of = {k["alg"]: k["name"] for k in keys}
        for token, claims, alg, kid in issued:
            with self.subTest(audit=claims["jti"]):
                mine = [r for r in recs if r.get("jti") == claims["jti"]]
                self.assertEqual(len(mine), 1, "records for jti %s: %r" % (claims["jti"], mine))
                r = mine[0]
                self.assertEqual((r["decision"], r["reason"]), ("allow", "ok"), r)
                self.assertEqual(r["caller"], caller)
                self.assertTrue(r.get("peer", "").startswith("unix:pid="), r)
                self.assertTrue(r["peer"].endswith(peer_tail), r)
                self.assertEqual(r["sub"], claims["sub"])
                self.assertEqual(r["aud"], claims["aud"])  # an array, as sent
                self.assertEqual((r["iat"], r["exp"]), (claims["iat"], claims["exp"]))
                self.assertEqual((r["kid"], r["alg"], r["key"]), (kid, alg, key_of[alg]))
                self.assertEqual(r["token_sha256"], sha256_hex(token))
                self.assertNotIn("jwt", r)
        denies = [r for r in recs if r.get("decision") == "deny"]
        for r in denies:
            self.assertEqual(r["caller"], caller, r)
            self.assertTrue(r.get("peer", "").endswith(peer_tail), r)
            self.assertNotIn("token_sha256", r)
        # One full record per refusal, in the order they were made (the
        # denial budget in `limits` keeps any from being folded into a count).
        self.assertEqual([r["reason"] for r in denies], [reason for reason, _ in denied], denies)
        for r, (reason, claims) in zip(denies, denied):
            self.assertNotIn("count", r)
            self.assertTrue(r.get("message"), r)
            if claims is not None and reason != "policy.no_match":
                self.assertEqual((r.get("sub"), r.get("aud")), (claims["sub"], claims["aud"]), r)
        self.assertEqual(len([r for r in recs if r["decision"] == "allow"]), len(issued))

        # An auditor's questions: the log verifies; every token of one service
        # account is one `show --sub` query; a token's inclusion proof checks.
        adir = env.audit_dir()
        pubkey = os.path.join(adir, "audit-key.pem")
        rc, out, err = env.run([harness.audit_path(), "verify", "--pubkey", pubkey, "--checkpoint",
                                os.path.join(adir, "checkpoint.json")] + env.audit_segments())
        self.assertEqual(rc, 0, out + err)
        sa = "system:serviceaccount:payments:deployer"
        got = show(env, "--sub", sa, "--decision", "allow")
        self.assertEqual(sorted(r["jti"] for r in got),
                         sorted(c["jti"] for _, c, _, _ in issued if c["sub"] == sa))
        token, claims, _, _ = issued[-2]
        rc, proof, err = env.run([harness.audit_path(), "prove", "--jti", claims["jti"]] +
                                 env.audit_segments())
        self.assertEqual(rc, 0, err)
        proof_file = env.path("proof.json")
        with open(proof_file, "w", encoding="utf-8") as f:
            f.write(proof)
        rc, out, err = env.run([harness.audit_path(), "check-proof", "--pubkey", pubkey,
                                proof_file])
        self.assertEqual(rc, 0, out + err)
        self.assertIn(claims["jti"], out)
        self.assertEqual(json.loads(json.loads(proof)["payload"])["token_sha256"],
                         sha256_hex(token))


# --- 5: start-up refusals --------------------------------------------------------------

class StartupRefusals(Case):
    def refused(self, cfg, reason):
        rc, out, err = self.env.run([harness.signerd_path(), "--config", cfg], timeout_s=30)
        self.assertEqual(rc, 1, "jwt-signerd exit %d, expected 1\n%s%s" % (rc, out, err))
        line = startup_failure(err)
        self.assertIsNotNone(line, err)
        self.assertEqual(line.get("reason"), reason, line)
        return line

    def test_unsupported_algorithms_and_bad_socket(self):
        env = self.env
        es = KEYS["ES256"]
        all_keys = [dict(es), dict(PS256_KEY), dict(EDDSA_KEY)]
        ejwt = harness.externaljwt_config(SOCK)
        env.setup(policy=k8s_policy(env, [unix_entry()]), keys=all_keys[:2], externaljwt=ejwt)
        cfg = env.write_config(keys=all_keys, externaljwt=ejwt)
        # SoftHSM leaks an ASN1_STRING signing with Ed25519 (tests/lsan.supp,
        # C_SignInit: keygen and start-up sign with each key); the suppression
        # matches only with full stack unwinding (sanitizer builds).
        lsan = os.environ.get("LSAN_OPTIONS")
        extra = {"LSAN_OPTIONS": lsan + ":fast_unwind_on_malloc=0"} if lsan else None
        rc, out, err = env.run([harness.signerd_path(), "keygen", "--config", cfg, "--key",
                                EDDSA_KEY["name"]], env=extra)
        self.assertEqual(rc, 0, out + err)

        for bad, keys in (("PS256", [PS256_KEY["name"]]), ("EdDSA", [EDDSA_KEY["name"]]),
                          ("EdDSA", [es["name"], EDDSA_KEY["name"]])):
            with self.subTest(keys=keys):
                env.write_policy(k8s_policy(env, [unix_entry(keys=keys, default_key=keys[0])]))
                line = self.refused(cfg, "config.externaljwt_alg")
                msg = line.get("message", "")
                self.assertIn(bad, msg, line)
                # Says why: what kube-apiserver accepts.
                self.assertTrue("kube-apiserver" in msg or "RS256" in msg, line)

        # A unix caller but no socket for it to call.
        env.write_policy(k8s_policy(env, [unix_entry()]))
        no_sock = env.write_config("no-socket.yaml", keys=all_keys)
        self.refused(no_sock, "config.externaljwt_alg")

        # A socket mode that grants more than 0660.
        for mode in ("0666", "0670", "0661", "4660"):
            with self.subTest(mode=mode):
                bad = env.write_config("bad-mode.yaml", keys=all_keys,
                                       externaljwt=harness.externaljwt_config(SOCK, mode=mode))
                line = self.refused(bad, "config.externaljwt")
                self.assertIn("mode", line.get("message", ""), line)

        # A Kubernetes caller's max_ttl under 600 s is refused at policy load.
        env.write_policy(k8s_policy(env, [unix_entry(max_ttl="5m")]))
        rc, out, err = env.run([harness.signerd_path(), "--config", cfg], timeout_s=30)
        self.assertEqual(rc, 1, out + err)
        line = startup_failure(err)
        self.assertIsNotNone(line, err)
        self.assertIn("600", line.get("message", ""), line)

        # An mTLS caller may sign with PS256 and EdDSA; the default mode is 0660.
        env.write_policy(k8s_policy(env, [
            unix_entry(),
            {"id": harness.CALLER_URIS["issuer-a"], "keys": [PS256_KEY["name"], EDDSA_KEY["name"]],
             "default_key": PS256_KEY["name"]}]))
        env.start(config=cfg, env=extra)
        harness.wait_unix_socket(self.sock_path(), daemon=env.daemon)
        st = os.stat(self.sock_path())
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o660, oct(st.st_mode))
        self.assertEqual((st.st_uid, st.st_gid), (os.getuid(), os.getgid()))
        rc, out, err = env.sign("issuer-a", env.sample_claims())
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(harness.b64url_decode(out.strip().split(".")[0]))["alg"],
                         "PS256")
        header_b64, _ = self.client("v1").sign(b64(kube_claims()))
        self.assertEqual(json.loads(harness.b64url_decode(header_b64))["alg"], "ES256")

        # The same rules on a reload: refused, the policy in force unchanged.
        for entry, reason, words in (
                (unix_entry(keys=[PS256_KEY["name"]]), "config.externaljwt_alg", ["PS256"]),
                (unix_entry(max_ttl="5m"), None, ["600"])):
            with self.subTest(reload=entry["keys"] + [entry["max_ttl"]]):
                env.write_policy(k8s_policy(env, [entry]))
                mark = len(env.daemon.stderr_lines())
                os.kill(env.daemon.pid, signal.SIGHUP)
                line = env.wait_log(lambda o: o.get("event") in ("policy_reload_failed",
                                                                 "policy_reloaded"), start=mark)
                self.assertEqual(line["event"], "policy_reload_failed", line)
                if reason:
                    self.assertEqual(line["reason"], reason, line)
                for w in words:
                    self.assertIn(w, line["message"], line)
                header_b64, _ = self.client("v1").sign(b64(kube_claims()))
                self.assertEqual(json.loads(harness.b64url_decode(header_b64))["alg"], "ES256")
                self.assertEqual(self.client("v1").metadata().max_token_expiration_seconds, 3600)
        self.assertEqual(self.stop(), 0)


# --- 6: rotation -----------------------------------------------------------------------

# The pre-publication window, scaled with harness.timeout (15 s under ThreadSanitizer):
# a Sign must fall inside it after the admin process and a few FetchKeys calls.
PREPUBLISH, LEEWAY = max(3, int(math.ceil(harness.timeout(3)))), 1


class Rotation(Case):
    def admin(self, *args):
        rc, out, err = self.env.run_sign("admin", "admin", *args)
        self.assertEqual(rc, 0, "admin %s: %s%s" % (args, out, err))
        return json.loads(out)

    def test_new_key_published_before_it_signs(self):
        env = self.env
        es = KEYS["ES256"]
        env.setup(policy=k8s_policy(env, [unix_entry(max_ttl="10m")]), keys=[dict(es)],
                  externaljwt=harness.externaljwt_config(SOCK),
                  key_lifecycle={"prepublish": "%ds" % PREPUBLISH, "leeway": "%ds" % LEEWAY})
        env.add_caller("admin", ADMIN)
        clients = self.start()
        c = clients["v1"]
        self.assertEqual(c.metadata().max_token_expiration_seconds, 600)

        keys1, _, r1 = self.fetch_keys(c)
        self.assertEqual(len(keys1), 1, r1)
        (old_kid,) = keys1
        self.assertLessEqual(r1.refresh_hint_seconds, PREPUBLISH, r1)
        t1 = (r1.data_timestamp.seconds, r1.data_timestamp.nanos)
        old_tokens = []
        for v in k8s_client.VERSIONS:
            claims = kube_claims(ttl=600)
            token, header = self.sign_token(clients[v], b64(claims))
            self.assertEqual(header["kid"], old_kid)
            old_tokens.append((token, claims))
        # So that a data_timestamp in whole seconds must change too.
        time.sleep(max(0.0, r1.data_timestamp.seconds + 1.1 - time.time()))

        rot = self.admin("rotate", es["name"], "--reason", "externaljwt rotation test")
        t_rotate = time.time()
        new_kid = rot["kid"]
        self.assertNotEqual(new_kid, old_kid)
        activate_at = rot["activate_at"]

        # Published at once, in both versions; data_timestamp moved.
        for v in k8s_client.VERSIONS:
            keys2, _, r2 = self.fetch_keys(clients[v])
            self.assertEqual(sorted(keys2), sorted([old_kid, new_kid]), v)
            self.assertGreater((r2.data_timestamp.seconds, r2.data_timestamp.nanos), t1, r2)
            self.assertLessEqual(r2.refresh_hint_seconds, PREPUBLISH, r2)
        t2 = (r2.data_timestamp.seconds, r2.data_timestamp.nanos)

        # Until activate_at, Sign keeps the old kid; the new one only after.
        before = 0
        new_token = None
        deadline = time.monotonic() + harness.timeout(PREPUBLISH + 10)
        while new_token is None:
            published, _, _ = self.fetch_keys(c)
            claims = kube_claims(ttl=600)
            token, header = self.sign_token(c, b64(claims))
            t_signed = time.time()  # the daemon signed before this, on the same clock
            self.assertIn(header["kid"], published, "Sign used a kid FetchKeys had not shown")
            if header["kid"] == new_kid:
                self.assertGreaterEqual(t_signed, activate_at, "new kid before activate_at")
                new_token = (token, claims)
            else:
                self.assertEqual(header["kid"], old_kid)
                if t_signed < activate_at:
                    before += 1
                    old_tokens.append((token, claims))
            self.assertLess(time.monotonic(), deadline, "Sign never switched to the new kid")
            time.sleep(0.2)
        self.assertGreaterEqual(before, 1, "no Sign fell inside the pre-publication window "
                                "(activate_at %.1f s after the rotation)"
                                % (activate_at - t_rotate))
        for v in k8s_client.VERSIONS:
            _, header = self.sign_token(clients[v], b64(kube_claims(ttl=600)))
            self.assertEqual(header["kid"], new_kid, v)

        # The old kid stays published while retiring: old and new tokens verify.
        keys3, _, r3 = self.fetch_keys(c)
        self.assertEqual(sorted(keys3), sorted([old_kid, new_kid]))
        self.assertGreaterEqual((r3.data_timestamp.seconds, r3.data_timestamp.nanos), t2)
        opts = {"algorithms": ["ES256"], "audience": KUBE_AUD, "issuer": ISSUER}
        for token, claims in old_tokens:
            self.assertEqual(pyjwt.decode(token, key=keys3[old_kid], **opts), claims)
        self.assertEqual(pyjwt.decode(new_token[0], key=keys3[new_kid], **opts), new_token[1])
        st = self.admin("status")
        versions = {v["version"]: v for v in st["keys"][0]["versions"]}
        self.assertEqual((versions[1]["state"], versions[2]["state"]), ("retiring", "active"))
        # It leaves FetchKeys max_ttl + leeway after it stopped signing.
        self.assertEqual(versions[1]["unpublish_at"] - versions[1]["retire_at"], 600 + LEEWAY)
        self.assertGreater(versions[1]["unpublish_at"], time.time())

        # Revoked while retiring: it leaves FetchKeys at once.
        t3 = (r3.data_timestamp.seconds, r3.data_timestamp.nanos)
        time.sleep(max(0.0, r3.data_timestamp.seconds + 1.1 - time.time()))
        self.admin("revoke", es["name"], old_kid, "--reason", "externaljwt revocation test")
        for v in k8s_client.VERSIONS:
            keys4, _, r4 = self.fetch_keys(clients[v])
            self.assertEqual(list(keys4), [new_kid], v)
            self.assertGreater((r4.data_timestamp.seconds, r4.data_timestamp.nanos), t3, r4)

        # Freezing the Kubernetes caller stops Sign (admin.frozen, audited like
        # any refusal) but not FetchKeys or Metadata: tokens already issued
        # must still verify. Unfreezing restores Sign.
        ident = harness.unix_caller_id()
        self.assertEqual(self.admin("freeze", ident), {"identity": ident, "frozen": True})
        self.expect_refused(c, b64(kube_claims(ttl=600)), grpc.StatusCode.PERMISSION_DENIED,
                            "admin.frozen")
        self.assertEqual(sorted(self.fetch_keys(c)[0]), [new_kid])
        self.assertEqual(c.metadata().max_token_expiration_seconds, 600)
        self.assertEqual(self.admin("unfreeze", ident), {"identity": ident, "frozen": False})
        _, header = self.sign_token(c, b64(kube_claims(ttl=600)))
        self.assertEqual(header["kid"], new_kid)
        self.assertEqual(self.stop(), 0)
        frozen = [r for r in show(env) if r.get("type") == "sign" and r.get("decision") == "deny"]
        self.assertEqual([(r["caller"], r["reason"]) for r in frozen], [(ident, "admin.frozen")])


# --- 8: rate and connection cap -------------------------------------------------------------

PEERS_MAX = 64  # JS_K8S_MAX_CONNECTIONS, signer/rpc/server.h
PEERS_PER_UID = PEERS_MAX // 2  # rpc_peers.c


class Limits(Case):
    def test_rate_and_connection_cap(self):
        """The caller's rate applies to Sign (not to FetchKeys or Metadata).
        More than PEERS_PER_UID idle connections of one uid: the extra ones
        are closed at accept (externaljwt.connections in the log); once they
        close, calls work again."""
        env = self.env
        # Burst 2 at 0.05/s: a token refills in 20 s, far longer than the calls below take
        # even under ThreadSanitizer, so the third Sign is refused however slow they are.
        rate = {"per_second": "0.05", "burst": 2}
        policy = harness.to_yaml(k8s_policy(env, [unix_entry(rate=rate, incident_rate=rate)]))
        env.setup(policy=policy.replace('"0.05"', "0.05"),
                  keys=[dict(KEYS["ES256"])], externaljwt=harness.externaljwt_config(SOCK))
        clients = self.start()
        c = clients["v1"]
        t_first = time.monotonic()
        for _ in range(2):
            self.sign_token(c, b64(kube_claims()))
        err = self.expect_refused(c, b64(kube_claims()), grpc.StatusCode.RESOURCE_EXHAUSTED,
                                  "rate.limited")
        elapsed_ms = (time.monotonic() - t_first) * 1000
        # The bucket (full at the first Sign) has refilled 0.05 token/s since: the wait for
        # one token is 20 s less that time.
        retry = int(err.trailing.get("retry-after-ms", "0"))
        self.assertTrue(20000 - elapsed_ms - 1 <= retry <= 20000, (retry, elapsed_ms, err))
        self.assertEqual(c.metadata().max_token_expiration_seconds, 3600)
        self.assertEqual(len(self.fetch_keys(c)[0]), 1)
        for _ in range(2):
            mark = len(env.daemon.stderr_lines())
            socks = []
            try:
                for _ in range(PEERS_PER_UID + 6):
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    socks.append(s)
                    s.connect(self.sock_path())
                env.wait_log(lambda o: o.get("event") == "request" and
                             o.get("reason") == "externaljwt.connections" and
                             o.get("status") == "RESOURCE_EXHAUSTED", start=mark)
                with k8s_client.Client(self.sock_path(), "v1", timeout_s=harness.timeout(3)) as c:
                    with self.assertRaises(grpc.RpcError) as cm:
                        c.metadata()
                    self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
            finally:
                for s in socks:
                    s.close()

            def works():
                with k8s_client.Client(self.sock_path(), "v1", timeout_s=3) as c:
                    try:
                        return c.metadata().max_token_expiration_seconds == 3600
                    except grpc.RpcError:
                        return False
            deadline = time.monotonic() + harness.timeout(10)
            while not works():
                self.assertLess(time.monotonic(), deadline, "calls still refused after close")
                time.sleep(0.2)
        self.assertEqual(self.stop(), 0)


# --- 7: real peers of another uid (root only) --------------------------------------------

# Run by a child process as another user: one Sign, the outcome as JSON.
PEER_CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import grpc, k8s_client
c = k8s_client.Client(sys.argv[2], sys.argv[3], timeout_s=float(sys.argv[5]))
try:
    header, signature = c.sign(sys.argv[4])
    out = {"ok": True, "header": header, "signature": signature}
except grpc.RpcError as e:
    err = k8s_client.CallError(e)
    out = {"ok": False, "code": err.code.name, "details": err.details, "reason": err.reason}
print(json.dumps(out))
"""
NOBODY = 65534


@unittest.skipUnless(os.geteuid() == 0, "needs root to run a client as another uid")
class RealPeers(Case):
    def as_user(self, gid, claims_b64, version="v1"):
        argv = [sys.executable, "-c", PEER_CHILD, os.path.dirname(os.path.abspath(__file__)),
                self.sock_path(), version, claims_b64, str(harness.timeout(10))]
        env = {"PATH": "/usr/bin:/bin", "TMPDIR": "/tmp", "PYTHONDONTWRITEBYTECODE": "1",
               "JS_SOURCE_DIR": harness.source_dir(), "GRPC_DNS_RESOLVER": "native"}
        # setpriv (util-linux) changes the ids, not subprocess.run(user=...):
        # that makes CPython fork for real (no vfork once ids change), and
        # grpcio's at-fork handler then waits for gRPC's thread pool to go
        # idle, for ever while a channel of an earlier test winds down (a
        # TSan CI run hung 600 s in "Waiting for thread pool to idle before
        # forking").
        argv = ["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % gid, "--clear-groups"] + argv
        p = subprocess.run(argv, env=env, cwd="/", capture_output=True, text=True,
                           timeout=harness.timeout(60))
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        return json.loads(p.stdout)

    def test_other_uid(self):
        env = self.env
        try:
            group = grp.getgrgid(NOBODY).gr_name
        except KeyError:
            self.skipTest("no group %d" % NOBODY)
        other_gid = next((g.gr_gid for g in grp.getgrall() if g.gr_gid not in (0, NOBODY)), None)
        if other_gid is None:
            self.skipTest("no third group")
        env.setup(policy=k8s_policy(env, [unix_entry()]), keys=[dict(KEYS["ES256"])],
                  externaljwt=harness.externaljwt_config(SOCK, group=group))
        os.chmod(env.dir, 0o711)  # nobody may reach the socket; the socket decides
        clients = self.start()
        st = os.stat(self.sock_path())
        self.assertEqual((stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid), (0o660, 0, NOBODY))

        # Not in the socket's group: the connection itself is refused.
        out = self.as_user(other_gid, b64(kube_claims()))
        self.assertFalse(out["ok"], out)
        self.assertEqual(out["code"], "UNAVAILABLE", out)
        self.assertIsNone(out["reason"], out)
        self.assertIn("ermission denied", out["details"], out)

        # In the group, but a uid the policy does not name: the daemon closes
        # the connection at accept, before any call (signer/rpc/rpc_peers.c),
        # so the client sees UNAVAILABLE without a reason; the refusal is in
        # the log line and the audit record (policy.no_match).
        mark = len(env.daemon.stderr_lines())
        out = self.as_user(NOBODY, b64(kube_claims()), "v1alpha1")
        self.assertEqual((out["ok"], out["code"], out["reason"]), (False, "UNAVAILABLE", None),
                         out)
        line = env.wait_log(lambda o: o.get("event") == "request" and
                            o.get("caller") == harness.unix_caller_id(NOBODY), start=mark)
        self.assertEqual((line["decision"], line["status"], line["reason"]),
                         ("deny", "PERMISSION_DENIED", "policy.no_match"), line)
        self.assertTrue(line["peer"].endswith(",uid=%d,gid=%d" % (NOBODY, NOBODY)), line)

        # Named by a reload: it signs, with its own uid as the caller.
        self.reload_policy(k8s_policy(env, [unix_entry(), unix_entry(uid=NOBODY)]))
        claims = kube_claims()
        out = self.as_user(NOBODY, b64(claims))
        self.assertTrue(out["ok"], out)
        token = "%s.%s.%s" % (out["header"], b64(claims), out["signature"])
        fk_keys, _, _ = self.fetch_keys(clients["v1"])
        kid = json.loads(harness.b64url_decode(out["header"]))["kid"]
        self.assertEqual(pyjwt.decode(token, key=fk_keys[kid], algorithms=["ES256"],
                                      audience=KUBE_AUD, issuer=ISSUER), claims)
        self.assertEqual(self.stop(), 0)

        recs = [r for r in show(env) if r.get("type") == "sign"]
        self.assertEqual(len(recs), 2, recs)
        peer_tail = ",uid=%d,gid=%d" % (NOBODY, NOBODY)
        for r in recs:
            self.assertEqual(r["caller"], harness.unix_caller_id(NOBODY), r)
            self.assertTrue(r["peer"].startswith("unix:pid=") and r["peer"].endswith(peer_tail),
                            r)
        self.assertEqual([(r["decision"], r["reason"]) for r in recs],
                         [("deny", "policy.no_match"), ("allow", "ok")])
        self.assertEqual((recs[1]["jti"], recs[1]["token_sha256"]),
                         (claims["jti"], sha256_hex(token)))


if __name__ == "__main__":
    unittest.main(verbosity=2)
