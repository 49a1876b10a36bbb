#!/usr/bin/python3
"""test_introspection.py - token status (issue 13): RFC 7662 introspection,
token revocation and sender-constrained tokens, through a real jwt-signerd
(real SoftHSM token, real PKI), asked with `jwt-sign introspect` / `jwt-sign
admin revoke-token` and with a gRPC client generated at test time from
proto/jwtsigner/v1/signer.proto (python3-grpc-tools), never with jwt-signer's
own client library for the verdicts.

1. Lifecycle of a token (test_token_lifecycle):
   - a token issued -> active, with exactly the RFC 7662 members: scope,
     client_id (the issuing caller's identity), sub, aud, iss (the policy's
     issuer), exp, iat, jti (those of the token) and token_type "Bearer";
     the typed gRPC fields say the same as the JSON answer;
   - revoked by jti, by sub cut-off, by caller cut-off (jwt-sign admin
     revoke-token) and by key revocation (jwt-sign admin revoke of the kid)
     -> {"active": false}; the other tokens stay active; a token of the
     same sub / caller issued after the cut-off second is active; a
     non-admin (an introspector included) may not revoke (admin.not_admin);
   - each revocation is effective for the very next introspection: over
     persistent gRPC channels, the first Introspect after the RevokeToken
     reply answers inactive, within 100 ms (harness.timeout-scaled);
   - a FORGED token, signed directly in the SoftHSM token with the real
     signing key (pkcs11-tool, CKM_ECDSA over the SHA-256 of header.payload:
     a leaked key) with a fresh jti, verifies with PyJWT against the JWKS
     but is inactive; the same forgery re-using a real jti (other claims)
     is inactive too, and the real token keeps its answer; /metrics counts
     each introspection by reason (unknown_jti, hash_mismatch, revoked_jti);
   - a rotation: the old version retiring, its tokens stay active; the new
     version's tokens are active;
   - expiry with the configured leeway: active before exp, still active
     inside exp + leeway (after the index's once-a-second sweep has run),
     inactive after; a token revoked by jti stays inactive inside the leeway;
   - after a restart (stop + start, same config and audit log): the token
     issued before is still active, every revoked one still inactive, the
     forgeries still inactive;
   - the audit log (jwt-audit show --json): an "introspect" record with
     reason introspect.unknown_jti (detail jti and kid of the forgery) and
     one with introspect.hash_mismatch, by the introspector; no
     unknown_jti record for a genuine token that merely expired (that
     record is the key-leak alarm); a "revoke" record per revocation by the
     admin with what/value/cutoff/until/reason.
2. Who may ask, hostile input, cnf (test_introspectors_input_cnf):
   - a caller not in `introspectors` -> PERMISSION_DENIED
     (introspect.not_allowed), from the CLI and from gRPC;
   - an introspector limited to audiences: {"active": false} for a token of
     another audience, the full answer for a token that has its audience;
   - bad input -> {"active": false}, the reason in the daemon's log line
     (malformed, alg_mismatch, unknown_kid, bad_signature), and the daemon
     still answers: not a JWT, empty segments, header not JSON or not
     base64url, alg none, alg HS256 keyed with the public JWK (alg
     confusion), an unknown kid, a bad signature, another token's payload, a
     padded signature, 40,000 bytes; a 1 MB token over gRPC
     (RESOURCE_EXHAUSTED by the 64 KiB request limit, or inactive: both
     accepted, but the next call works);
   - cnf: a caller with `cnf: required` signing without cnf ->
     PERMISSION_DENIED policy.cnf; malformed cnf -> INVALID_ARGUMENT
     claims.cnf (also for a caller with cnf optional); cnf.jkt -> the
     answer carries cnf and token_type "DPoP"; cnf.x5t#S256 -> cnf and
     "Bearer" (RFC 8705 §3.2); the "sign" audit record holds the cnf;
   - a signer without an introspection section: UNAVAILABLE
     (introspect.disabled).

Debian: python3-grpcio, python3-grpc-tools, python3-jwt, python3-cryptography,
python3-prometheus-client, opensc (pkcs11-tool). Run with /usr/bin/python3.
"""

import atexit
import hashlib
import hmac
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import unittest
import uuid

import grpc
import jwt as pyjwt

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import rawgrpc  # noqa: E402

ISSUER = "https://jwt-signer.test.example"
AUD = harness.SAMPLE_AUD
OTHER_AUD = "https://other.example"
SUB = harness.SAMPLE_SUB
KEY = harness.DEFAULT_KEY
SECOND_KEY = {"name": "second-es256", "label": "jwt-signer-test-second-es256", "alg": "ES256"}
ADMIN = "spiffe://example.org/ops/admin"
VERIFIER = "spiffe://example.org/verifier"
PAYMENTS = "spiffe://example.org/payments"
ISSUER_A = harness.CALLER_IDS["issuer-a"]
DNS_CALLER = harness.CALLER_IDS["dns-caller"]
CN_CALLER = harness.CALLER_IDS["cn-caller"]
LEEWAY = 3
EXIT_OK, EXIT_OTHER, EXIT_DENIED, EXIT_INVALID, EXIT_UNAVAILABLE = 0, 1, 3, 4, 5
INACTIVE = {"active": False}
REVEAL_MS = 100  # revocation -> inactive answer, issue 13


# --- a gRPC client from the published proto --------------------------------------------

_gen = {"lock": threading.Lock(), "mods": None}


def signer_modules():
    """(signer_pb2, signer_pb2_grpc) compiled from proto/jwtsigner/v1/signer.proto
    with grpc_tools.protoc into a private temporary directory (once)."""
    with _gen["lock"]:
        if _gen["mods"] is None:
            from grpc_tools import protoc
            import grpc_tools
            import importlib
            proto = os.path.join(harness.source_dir(), "proto")
            out = tempfile.mkdtemp(prefix="jwt-signer-pb-")
            atexit.register(shutil.rmtree, out, True)
            well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
            argv = ["grpc_tools.protoc", "-I" + proto, "-I" + well_known, "--python_out=" + out,
                    "--grpc_python_out=" + out, os.path.join("jwtsigner", "v1", "signer.proto")]
            if protoc.main(argv) != 0:
                raise harness.HarnessError("protoc failed: %s" % " ".join(argv))
            sys.path.insert(0, out)
            _gen["mods"] = (importlib.import_module("jwtsigner.v1.signer_pb2"),
                            importlib.import_module("jwtsigner.v1.signer_pb2_grpc"))
        return _gen["mods"]


class Rpc:
    """A persistent mTLS channel as one caller, with Status and Admin stubs."""

    def __init__(self, env, caller):
        self.pb, pb_grpc = signer_modules()
        ca, cert, key = env.caller_files(caller)
        self.ch = rawgrpc.channel(env.port, ca, cert, key)
        self.status = pb_grpc.StatusStub(self.ch)
        self.admin = pb_grpc.AdminStub(self.ch)

    def introspect(self, token):
        return self.status.Introspect(self.pb.IntrospectRequest(token=token),
                                      timeout=harness.timeout(10))

    def revoke(self, **what):
        return self.admin.RevokeToken(self.pb.RevokeTokenRequest(**what),
                                      timeout=harness.timeout(10))

    def close(self):
        self.ch.close()


# --- helpers -------------------------------------------------------------------------

def segments(token):
    h, p, s = token.split(".")
    return (json.loads(harness.b64url_decode(h)), json.loads(harness.b64url_decode(p)),
            harness.b64url_decode(s))


def b64json(obj):
    return harness.b64url_encode(json.dumps(obj, separators=(",", ":")).encode("utf-8"))


def auds(value):
    return [value] if isinstance(value, str) else list(value)


def reason_of(stderr):
    """The reason from jwt-sign's "jwt-sign: STATUS: reason: message" line."""
    line = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    parts = line.split(": ")
    return parts[2] if len(parts) >= 3 else None


def audit_records(env):
    """Every record of the log (jwt-audit show --json), after the daemon stopped."""
    rc, out, err = env.run([harness.audit_path(), "show", "--json"] + env.audit_segments(),
                           timeout_s=60)
    if rc != 0:
        raise AssertionError("jwt-audit show failed (%d): %s" % (rc, err))
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def as_obj(value):
    return json.loads(value) if isinstance(value, str) else value


def new_sub():
    return str(uuid.uuid4())


def sleep_until(t):
    left = t - time.time()
    if left > 0:
        time.sleep(left)


class Case(unittest.TestCase):
    def setUp(self):
        self.env = harness.Env()
        self.t0 = time.monotonic()
        self.rpcs = []

    def tearDown(self):
        self.close_rpcs()
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

    def rpc(self, caller):
        r = Rpc(self.env, caller)
        self.rpcs.append(r)
        return r

    def close_rpcs(self):
        """Closes the test's channels (an idle HTTP/2 connection holds the daemon's drain)."""
        for r in self.rpcs:
            r.close()
        self.rpcs = []

    def setup_env(self, policy_extra, callers, certs, **config):
        env = self.env
        policy = env.default_policy(callers=callers, issuer=ISSUER,
                                    keys=[KEY["name"], SECOND_KEY["name"]],
                                    default_key=KEY["name"])
        policy.update(policy_extra)
        env.setup(policy=policy, keys=[dict(KEY), dict(SECOND_KEY)],
                  introspection={"max_tokens": 10000, "leeway": "%ds" % LEEWAY},
                  limits={"denials_per_second": 1000, "denials_burst": 1000},
                  key_lifecycle={"prepublish": "1s", "leeway": "1s"}, **config)
        for name, uri in certs.items():
            env.add_cert(name, uris=[uri])
        env.start()

    def sign(self, caller="issuer-a", key_name=None, **claims):
        """Signs {sub, aud, **claims} as caller; returns (token, header, payload)."""
        c = {"sub": SUB, "aud": AUD}
        c.update(claims)
        rc, out, err = self.env.sign(caller, c, key_name=key_name)
        self.assertEqual(rc, EXIT_OK, "sign %r as %s: %s" % (c, caller, err))
        token = out.strip()
        header, payload, _ = segments(token)
        return token, header, payload

    def sign_refused(self, caller, claims, rc_want, reason):
        rc, out, err = self.env.sign(caller, claims)
        self.assertEqual((rc, reason_of(err)), (rc_want, reason),
                         "sign %r as %s: rc %d %s%s" % (claims, caller, rc, out, err))

    def introspect(self, token, caller="verifier", expect=EXIT_OK):
        """`jwt-sign introspect` (stdin for long tokens): the parsed answer, or stderr."""
        if len(token) > 4096:
            rc, out, err = self.env.run_sign(caller, "introspect", "-", input_text=token)
        else:
            rc, out, err = self.env.run_sign(caller, "introspect", token)
        self.assertEqual(rc, expect, "introspect as %s: rc %d\n%s%s" % (caller, rc, out, err))
        if rc != EXIT_OK:
            self.assertEqual(out, "")
            return err
        return json.loads(out)

    def admin(self, *args):
        rc, out, err = self.env.run_sign("admin", "admin", *args)
        self.assertEqual(rc, EXIT_OK, "admin %s: rc %d\n%s%s" % (args, rc, out, err))
        return json.loads(out)

    def expected_answer(self, token, client_id, token_type="Bearer"):
        _, p, _ = segments(token)
        want = {"active": True, "client_id": client_id, "sub": p["sub"], "aud": auds(p["aud"]),
                "iss": ISSUER, "exp": p["exp"], "iat": p["iat"], "jti": p["jti"],
                "token_type": token_type}
        if "scope" in p:
            want["scope"] = p["scope"]
        if "cnf" in p:
            want["cnf"] = p["cnf"]
        return want

    def assert_active(self, answer, token, client_id, token_type="Bearer"):
        self.assertIs(answer.get("active"), True, answer)
        got = dict(answer)
        if "aud" in got:
            got["aud"] = auds(got["aud"])
        self.assertEqual(got, self.expected_answer(token, client_id, token_type))

    def assert_inactive(self, answer, what=""):
        self.assertEqual(answer, INACTIVE, what)

    def assert_grpc_active(self, resp, token, client_id, token_type="Bearer"):
        """The typed fields agree with the JSON answer and with the token."""
        self.assertTrue(resp.active, resp)
        doc = json.loads(resp.json)
        self.assert_active(doc, token, client_id, token_type)
        self.assertEqual((resp.scope, resp.client_id, resp.sub, list(resp.aud), resp.iss,
                          resp.exp, resp.iat, resp.jti, resp.token_type),
                         (doc.get("scope", ""), doc["client_id"], doc["sub"], auds(doc["aud"]),
                          doc["iss"], doc["exp"], doc["iat"], doc["jti"], doc["token_type"]))
        if "cnf" in doc:
            self.assertEqual(json.loads(resp.cnf_json), doc["cnf"])
        else:
            self.assertEqual(resp.cnf_json, "")

    def why(self, jti):
        """The reasons the daemon logged for Introspect calls about jti (for messages)."""
        return [o.get("reason") for o in self.env.daemon.logs("request")
                if o.get("method") == "Introspect" and o.get("jti") == jti]

    def assert_grpc_inactive(self, resp, what=""):
        self.assertFalse(resp.active, what)
        self.assertEqual(json.loads(resp.json), INACTIVE, what)
        self.assertEqual((resp.scope, resp.client_id, resp.sub, list(resp.aud), resp.jti,
                          resp.exp, resp.iat, resp.cnf_json), ("", "", "", [], "", 0, 0, ""), what)

    def introspect_counts(self):
        """{reason: count} of jwt_signer_requests_total{method="Introspect"} (/metrics)."""
        from prometheus_client.parser import text_string_to_metric_families
        status, _, body = self.env.http_get("/metrics")
        self.assertEqual(status, 200, body)
        counts = {}
        for fam in text_string_to_metric_families(body.decode("utf-8")):
            for smp in fam.samples:
                if smp.name == "jwt_signer_requests_total" and \
                        smp.labels.get("method") == "Introspect":
                    r = smp.labels.get("reason")
                    counts[r] = counts.get(r, 0) + int(smp.value)
        return counts

    # --- forging with the HSM key (a leaked signing key) ---------------------------------
    def hsm_sign_es256(self, label, signing_input):
        """ES256 over signing_input with the private key `label` in the SoftHSM
        token, outside the signer: pkcs11-tool, CKM_ECDSA on the SHA-256 digest
        (SoftHSM has no CKM_ECDSA_SHA256); the signature is raw r||s (RFC 7518
        §3.4), pkcs11-tool's default for ECDSA."""
        env = self.env
        # pkcs11-tool picks the key to sign with by --id (with only --label it
        # may take the first private key), so look the id up by label first.
        rc, out, err = env.run(["pkcs11-tool", "--module", env.module, "--token-label",
                                env.token_label, "--login", "--pin", env.pin, "--list-objects",
                                "--type", "privkey"], timeout_s=60)
        if rc != 0:
            raise harness.HarnessError("pkcs11-tool --list-objects failed (%d): %s%s" % (rc, out,
                                                                                      err))
        ids, current = [], None
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("label:"):
                current = line.split(":", 1)[1].strip()
            elif line.startswith("ID:") and current == label:
                ids.append(line.split(":", 1)[1].strip())
        if len(ids) != 1:
            raise harness.HarnessError("%d private keys labelled %r:\n%s" % (len(ids), label, out))
        din, dout = env.path("forge.in"), env.path("forge.sig")
        with open(din, "wb") as f:
            f.write(hashlib.sha256(signing_input).digest())
        rc, out, err = env.run(["pkcs11-tool", "--module", env.module, "--token-label",
                                env.token_label, "--login", "--pin", env.pin, "--sign",
                                "--mechanism", "ECDSA", "--id", ids[0], "--input-file", din,
                                "--output-file", dout], timeout_s=60)
        if rc != 0:
            raise harness.HarnessError("pkcs11-tool --sign failed (%d): %s%s" % (rc, out, err))
        with open(dout, "rb") as f:
            sig = f.read()
        if len(sig) != 64:
            raise harness.HarnessError("pkcs11-tool gave %d signature bytes, not 64" % len(sig))
        return sig

    def forge(self, header, payload, label=KEY["label"]):
        signing_input = ("%s.%s" % (b64json(header), b64json(payload))).encode("ascii")
        sig = self.hsm_sign_es256(label, signing_input)
        return signing_input.decode("ascii") + "." + harness.b64url_encode(sig)

    def pyjwt_verify(self, token, jwks, aud=AUD):
        header, _, _ = segments(token)
        jwk = [k for k in jwks["keys"] if k.get("kid") == header["kid"]]
        self.assertEqual(len(jwk), 1, "kid %r not in the JWKS once" % header["kid"])
        return pyjwt.decode(token, key=pyjwt.PyJWK(jwk[0]).key, algorithms=["ES256"],
                            audience=aud, issuer=ISSUER)

    def jwks(self):
        rc, out, err = self.env.jwks("issuer-a")
        self.assertEqual(rc, EXIT_OK, err)
        return json.loads(out)


# --- 1. a token's lifecycle ---------------------------------------------------------------

class Lifecycle(Case):
    def test_token_lifecycle(self):
        env = self.env
        callers = [{"id": ISSUER_A}, {"id": DNS_CALLER}, {"id": CN_CALLER}]
        self.setup_env({"introspectors": [{"id": VERIFIER}]}, callers,
                       {"admin": ADMIN, "verifier": VERIFIER})
        loaded = env.logs("token_index_loaded")
        self.assertEqual(len(loaded), 1, env.daemon.tail())
        self.assertEqual(loaded[0].get("tokens"), 0, loaded)

        # Tokens: one kept throughout, one per kind of revocation.
        sub_rev, sub_fast = new_sub(), new_sub()
        keep, _, keep_p = self.sign(scope="read write", aud=[AUD, OTHER_AUD])
        t_jti, _, _ = self.sign()
        t_sub, _, _ = self.sign(sub=sub_rev)
        t_caller, _, _ = self.sign("dns-caller")
        t_key, key_h, _ = self.sign(key_name=SECOND_KEY["name"])
        f_jti, _, f_jti_p = self.sign()
        f_sub, _, _ = self.sign(sub=sub_fast)
        f_caller, _, _ = self.sign("cn-caller")
        revocable = {"jti": t_jti, "sub": t_sub, "caller": t_caller, "key": t_key,
                     "fast jti": f_jti, "fast sub": f_sub, "fast caller": f_caller}

        # Issued -> active, exactly the RFC 7662 members, from the CLI and gRPC.
        self.assert_active(self.introspect(keep), keep, ISSUER_A)
        self.assertEqual(self.introspect(keep)["scope"], "read write")
        self.assert_active(self.introspect(t_caller), t_caller, DNS_CALLER)
        self.assert_active(self.introspect(f_caller), f_caller, CN_CALLER)
        ver = self.rpc("verifier")
        adm = self.rpc("admin")
        self.assert_grpc_active(ver.introspect(keep), keep, ISSUER_A)
        issued_to = {"caller": DNS_CALLER, "fast caller": CN_CALLER}
        for what, tok in revocable.items():
            with self.subTest(before=what):
                self.assert_grpc_active(ver.introspect(tok), tok, issued_to.get(what, ISSUER_A))

        # Only admins revoke (an introspector is not one).
        for caller in ("issuer-a", "verifier"):
            rc, out, err = env.run_sign(caller, "admin", "revoke-token", "--sub", sub_rev)
            self.assertEqual((rc, reason_of(err)), (EXIT_DENIED, "admin.not_admin"), err)

        # Revocation through the CLI: jti, sub cut-off, caller cut-off, key.
        before = int(time.time())
        r_jti = self.admin("revoke-token", "--jti", segments(t_jti)[1]["jti"], "--reason", "lost")
        self.assertEqual(r_jti["cutoff"], 0, r_jti)
        self.assertGreaterEqual(r_jti["until"], segments(t_jti)[1]["exp"], r_jti)
        self.assertGreater(r_jti["audit_seq"], 0, r_jti)
        r_sub = self.admin("revoke-token", "--sub", sub_rev, "--reason", "user offboarded")
        r_caller = self.admin("revoke-token", "--caller", DNS_CALLER, "--reason", "compromised")
        for rr in (r_sub, r_caller):
            self.assertTrue(before <= rr["cutoff"] <= time.time(), rr)
            self.assertGreater(rr["until"], rr["cutoff"], rr)
        self.assertLess(r_jti["audit_seq"], r_sub["audit_seq"])
        self.assertLess(r_sub["audit_seq"], r_caller["audit_seq"])
        rk = self.admin("revoke", SECOND_KEY["name"], key_h["kid"], "--reason", "key leaked")
        self.assertEqual(rk["kid"], key_h["kid"], rk)
        for what, tok in (("jti", t_jti), ("sub", t_sub), ("caller", t_caller), ("key", t_key)):
            with self.subTest(revoked=what):
                self.assert_inactive(self.introspect(tok), what)
                self.assert_grpc_inactive(ver.introspect(tok), what)
        self.assert_active(self.introspect(keep), keep, ISSUER_A)

        # Effective for the very next introspection, in under 100 ms (gRPC,
        # warm channels; the first Introspect after the reply must say inactive).
        adm.admin.GetStatus(adm.pb.GetStatusRequest(), timeout=harness.timeout(10))
        bound = harness.timeout(REVEAL_MS / 1000.0)
        for what, tok, req in (("jti", f_jti, {"jti": f_jti_p["jti"]}),
                               ("sub", f_sub, {"sub": sub_fast}),
                               ("caller", f_caller, {"caller": CN_CALLER})):
            with self.subTest(fast=what):
                self.assertTrue(ver.introspect(tok).active)
                resp = adm.revoke(reason="fast " + what, **req)
                t1 = time.monotonic()
                ans = ver.introspect(tok)
                dt = time.monotonic() - t1
                self.assert_grpc_inactive(ans, "the first introspection after revoking " + what)
                self.assertLess(dt, bound, "revoke %s -> inactive answer took %.1f ms" %
                                (what, dt * 1000))
                self.assertGreater(resp.audit_seq, 0)
        self.assert_grpc_active(ver.introspect(keep), keep, ISSUER_A)

        # Forgeries signed with the real key in the HSM (a leaked key).
        jwks = self.jwks()
        keep_h, _, _ = segments(keep)
        fresh = dict(keep_p, jti=str(uuid.uuid4()), scope="read write")
        forged = self.forge(keep_h, fresh)
        self.assertEqual(self.pyjwt_verify(forged, jwks), fresh)  # verifies offline...
        self.assert_inactive(self.introspect(forged), "forged, fresh jti")  # ...but not online
        self.assert_grpc_inactive(ver.introspect(forged), "forged, fresh jti")
        reused = dict(keep_p, sub=new_sub(), role="admin")
        forged_reuse = self.forge(keep_h, reused)
        self.assertEqual(self.pyjwt_verify(forged_reuse, jwks), reused)
        self.assertEqual(segments(forged_reuse)[1]["jti"], keep_p["jti"])
        self.assert_inactive(self.introspect(forged_reuse), "forged, real jti")
        self.assert_active(self.introspect(keep), keep, ISSUER_A)  # the real one stands
        counts = self.introspect_counts()  # each introspection counted, by reason
        self.assertEqual((counts.get("unknown_jti"), counts.get("hash_mismatch")), (2, 1), counts)
        self.assertGreaterEqual(counts.get("revoked_jti", 0), 3, counts)

        # Cut-offs cover tokens issued up to their second, not after.
        sleep_until(max(r_sub["cutoff"], r_caller["cutoff"]) + 1.05)
        after_sub, _, _ = self.sign(sub=sub_rev)
        after_caller, _, _ = self.sign("dns-caller")
        self.assert_active(self.introspect(after_sub), after_sub, ISSUER_A)
        self.assert_active(self.introspect(after_caller), after_caller, DNS_CALLER)

        # A rotation: the old version is retiring, its tokens stay active
        # (it is still published); the new version's tokens are active.
        rot = self.admin("rotate", KEY["name"], "--reason", "scheduled")
        self.assertNotEqual(rot["kid"], keep_h["kid"])
        deadline = time.monotonic() + harness.timeout(15)
        while True:
            rotated, rot_h, _ = self.sign()
            if rot_h["kid"] == rot["kid"] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(rot_h["kid"], rot["kid"], "the new version does not sign")
        states = {v.get("kid"): v["state"] for k in self.admin("status")["keys"]
                  if k.get("key") == KEY["name"] for v in k["versions"]}
        self.assertEqual(states.get(keep_h["kid"]), "retiring", states)
        self.assert_active(self.introspect(keep), keep, ISSUER_A)
        self.assert_active(self.introspect(rotated), rotated, ISSUER_A)

        # Expiry with leeway: active before exp and within exp + LEEWAY (the
        # index's sweep runs every second), inactive after; a token revoked
        # by jti stays inactive inside the leeway too.
        exp = int(time.time()) + 2
        short, _, short_p = self.sign(exp=exp)
        short_rev, _, short_rev_p = self.sign(exp=exp)
        self.assertEqual(short_p["exp"], exp)
        self.assert_grpc_active(ver.introspect(short), short, ISSUER_A)
        self.admin("revoke-token", "--jti", short_rev_p["jti"])
        self.assert_grpc_inactive(ver.introspect(short_rev), "revoked, before exp")
        sleep_until(exp + 1.5)  # past exp, a sweep has run, inside the leeway
        self.assert_grpc_inactive(ver.introspect(short_rev), "revoked, inside the leeway")
        with self.subTest("inside the leeway"):
            ans = ver.introspect(short)
            self.assertTrue(ans.active, "inside exp + leeway: %s; the daemon's reasons: %s" %
                            (ans.json, self.why(short_p["jti"])))
            self.assert_grpc_active(ans, short, ISSUER_A)
        sleep_until(exp + LEEWAY + 1.05)
        self.assert_grpc_inactive(ver.introspect(short), "expired")

        # Restart on the same config and audit log.
        self.close_rpcs()
        self.assertEqual(env.stop(), 0)
        env.start()
        loaded = env.logs("token_index_loaded")
        self.assertEqual(len(loaded), 1, env.daemon.tail())
        self.assertGreaterEqual(loaded[0]["revocations"], 6, loaded)
        self.assert_active(self.introspect(keep), keep, ISSUER_A)
        self.assert_active(self.introspect(rotated), rotated, ISSUER_A)
        self.assert_active(self.introspect(after_sub), after_sub, ISSUER_A)
        self.assert_active(self.introspect(after_caller), after_caller, DNS_CALLER)
        for what, tok in revocable.items():
            with self.subTest(after_restart=what):
                self.assert_inactive(self.introspect(tok), what)
        for what, tok in (("forged", forged), ("forged reuse", forged_reuse),
                          ("expired", short)):
            with self.subTest(after_restart=what):
                self.assert_inactive(self.introspect(tok), what)
        self.assertEqual(env.stop(), 0)
        self.assertEqual(env.daemon.sanitizer_reports(), [])

        # The audit log.
        recs = audit_records(env)
        intro = [r for r in recs if r.get("type") == "introspect"]
        unknown = [r for r in intro if r.get("reason") == "introspect.unknown_jti"]
        mismatch = [r for r in intro if r.get("reason") == "introspect.hash_mismatch"]
        forged_recs = [r for r in unknown if as_obj(r.get("detail")).get("jti") == fresh["jti"]]
        self.assertEqual(len(forged_recs), 3, intro)
        for r in forged_recs + mismatch:
            self.assertEqual(r.get("caller"), VERIFIER, r)
            self.assertEqual(as_obj(r["detail"]).get("kid"), keep_h["kid"], r)
        self.assertEqual(len(mismatch), 2, intro)
        self.assertEqual({as_obj(r["detail"]).get("jti") for r in mismatch}, {keep_p["jti"]})
        # The key-leak alarm is not raised by a genuine token that merely expired.
        with self.subTest("no unknown_jti for an expired genuine token"):
            self.assertEqual([r for r in unknown
                              if as_obj(r.get("detail")).get("jti") == short_p["jti"]], [],
                             "a genuine expired token audited as introspect.unknown_jti (a "
                             "false key-leak alarm)")
        revokes = [r for r in recs if r.get("type") == "revoke"]
        got = [(r.get("caller"), as_obj(r["detail"])["what"], as_obj(r["detail"])["value"])
               for r in revokes]
        self.assertEqual(got, [(ADMIN, "jti", segments(t_jti)[1]["jti"]),
                               (ADMIN, "sub", sub_rev), (ADMIN, "caller", DNS_CALLER),
                               (ADMIN, "jti", f_jti_p["jti"]), (ADMIN, "sub", sub_fast),
                               (ADMIN, "caller", CN_CALLER), (ADMIN, "jti", short_rev_p["jti"])])
        d = as_obj(revokes[1]["detail"])
        self.assertEqual((d["cutoff"], d["until"], d["reason"]),
                         (r_sub["cutoff"], r_sub["until"], "user offboarded"))
        self.assertNotIn("cutoff", as_obj(revokes[0]["detail"]))
        self.assertEqual(revokes[0]["seq"], r_jti["audit_seq"])


# --- 2. introspectors, hostile input, cnf -------------------------------------------------

class AccessInputCnf(Case):
    def test_introspectors_input_cnf(self):
        env = self.env
        callers = [{"id": ISSUER_A}, {"id": CN_CALLER, "cnf": "required"}]
        self.setup_env({"introspectors": [{"id": VERIFIER},
                                          {"id": PAYMENTS, "audiences": [OTHER_AUD]}]},
                       callers, {"verifier": VERIFIER, "payments": PAYMENTS})
        ver, pay, ia = self.rpc("verifier"), self.rpc("payments"), self.rpc("issuer-a")
        tok, tok_h, tok_p = self.sign()
        other, _, _ = self.sign(aud=[OTHER_AUD])
        both, _, _ = self.sign(aud=[AUD, OTHER_AUD])

        # Not an introspector: PERMISSION_DENIED, CLI and gRPC.
        err = self.introspect(tok, caller="issuer-a", expect=EXIT_DENIED)
        self.assertEqual(reason_of(err), "introspect.not_allowed", err)
        with self.assertRaises(grpc.RpcError) as cm:
            ia.introspect(tok)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.PERMISSION_DENIED)
        self.assertTrue(cm.exception.details().startswith("introspect.not_allowed"),
                        cm.exception.details())

        # An introspector limited to audiences learns nothing about others.
        self.assert_inactive(self.introspect(tok, caller="payments"), "other audience")
        self.assert_grpc_inactive(pay.introspect(tok), "other audience")
        self.assert_active(self.introspect(other, caller="payments"), other, ISSUER_A)
        self.assert_grpc_active(pay.introspect(both), both, ISSUER_A)
        self.assert_active(self.introspect(tok), tok, ISSUER_A)

        # Hostile input: inactive, and the daemon keeps answering.
        jwk = [k for k in self.jwks()["keys"] if k["kid"] == tok_h["kid"]][0]
        h64, p64, s64 = tok.split(".")
        unknown_kid = self.forge(dict(tok_h, kid="no-such-kid"), dict(tok_p, jti=str(uuid.uuid4())))
        hs_input = "%s.%s" % (b64json({"alg": "HS256", "kid": tok_h["kid"], "typ": "JWT"}), p64)
        hs_key = json.dumps(jwk, separators=(",", ":")).encode()
        alg_confusion = hs_input + "." + harness.b64url_encode(
            hmac.new(hs_key, hs_input.encode(), hashlib.sha256).digest())
        bad_sig = bytearray(harness.b64url_decode(s64))
        bad_sig[5] ^= 1
        hostile = {  # what: (token, the reason the daemon logs)
            "not a JWT": ("not-a-jwt", "malformed"),
            "two dots only": ("..", "malformed"),
            "four segments": (tok + ".x", "malformed"),
            "header not JSON": (harness.b64url_encode(b"[1,2") + "." + p64 + "." + s64,
                                "malformed"),
            "header not base64url": ("*" + h64 + "." + p64 + "." + s64, "malformed"),
            "alg none": ("%s.%s." % (b64json({"alg": "none", "kid": tok_h["kid"]}), p64),
                         "alg_mismatch"),
            "alg none, real signature": ("%s.%s.%s" % (
                b64json({"alg": "none", "kid": tok_h["kid"], "typ": "JWT"}), p64, s64),
                "alg_mismatch"),
            "alg HS256 keyed with the public JWK": (alg_confusion, "alg_mismatch"),
            "unknown kid": (unknown_kid, "unknown_kid"),
            "bad signature": ("%s.%s.%s" % (h64, p64, harness.b64url_encode(bytes(bad_sig))),
                              "bad_signature"),
            "payload of another token": ("%s.%s.%s" % (h64, other.split(".")[1], s64),
                                         "bad_signature"),
            "padded signature": (tok + "==", "malformed"),
            "over 32 KiB": ("a" * 40000, "malformed"),
        }
        for what, (bad, why) in hostile.items():
            with self.subTest(hostile=what):
                self.assert_inactive(self.introspect(bad), what)
                mark = len(env.daemon.stderr_lines())
                self.assert_grpc_inactive(ver.introspect(bad), what)
                line = env.wait_log(lambda o: o.get("event") == "request" and
                                    o.get("method") == "Introspect", timeout_s=5, start=mark)
                self.assertEqual(line.get("reason"), why, line)
                self.assertTrue(env.daemon.running(), env.daemon.tail())
        # 1 MB: the gRPC message size limit refuses it (or it is inactive).
        big = h64 + "." + harness.b64url_encode(os.urandom(750000)) + "." + s64
        self.assertGreaterEqual(len(big), 1000000)
        try:
            self.assert_grpc_inactive(ver.introspect(big), "1 MB")
        except grpc.RpcError as e:
            self.assertEqual(e.code(), grpc.StatusCode.RESOURCE_EXHAUSTED, e)
        self.assertTrue(env.daemon.running(), env.daemon.tail())
        self.assert_grpc_active(ver.introspect(tok), tok, ISSUER_A)
        self.assert_active(self.introspect(tok), tok, ISSUER_A)

        # cnf: required for cn-caller; shape checked for everyone.
        jkt = harness.jwk_thumbprint(jwk)
        x5t = harness.b64url_encode(hashlib.sha256(b"a client certificate").digest())
        self.sign_refused("cn-caller", {"sub": SUB, "aud": AUD}, EXIT_DENIED, "policy.cnf")
        # 43 characters carry 258 bits: the last one's two low bits must be zero.
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        noncanonical = jkt[:-1] + alphabet[(alphabet.index(jkt[-1]) & ~3) | 1]
        malformed = {
            "string": "jkt",
            "empty object": {},
            "unknown member": {"kid": jkt},
            "two members": {"jkt": jkt, "x5t#S256": x5t},
            "short": {"jkt": jkt[:42]},
            "long": {"jkt": jkt + "A"},
            "padded": {"jkt": jkt + "="},
            "not base64url": {"jkt": "+" + jkt[1:]},
            "non-canonical trailing bits": {"jkt": noncanonical},
            "number": {"jkt": 5},
            "nested": {"jkt": {"jkt": jkt}},
            "array": [{"jkt": jkt}],
        }
        for what, cnf in malformed.items():
            with self.subTest(cnf=what):
                for caller in ("cn-caller", "issuer-a"):
                    self.sign_refused(caller, {"sub": SUB, "aud": AUD, "cnf": cnf}, EXIT_INVALID,
                                      "claims.cnf")
        bound, _, bound_p = self.sign("cn-caller", cnf={"jkt": jkt})
        self.assertEqual(bound_p["cnf"], {"jkt": jkt})
        mtls, _, mtls_p = self.sign("issuer-a", cnf={"x5t#S256": x5t})
        self.assertEqual(mtls_p["cnf"], {"x5t#S256": x5t})
        with self.subTest("cnf.jkt: DPoP"):
            self.assert_active(self.introspect(bound), bound, CN_CALLER, token_type="DPoP")
            self.assert_grpc_active(ver.introspect(bound), bound, CN_CALLER, token_type="DPoP")
        with self.subTest("cnf.x5t#S256: Bearer"):
            self.assert_grpc_active(ver.introspect(mtls), mtls, ISSUER_A, token_type="Bearer")
            self.assert_active(self.introspect(mtls), mtls, ISSUER_A)

        self.close_rpcs()
        self.assertEqual(env.stop(), 0)

        # Without an introspection section: UNAVAILABLE introspect.disabled.
        env.write_config(name="plain.yaml", keys=[dict(KEY), dict(SECOND_KEY)])
        env.start()
        # (FAILED_PRECONDITION: the reason's class is state|unavailable and the
        # handler raises it as a state error; UNAVAILABLE accepted too.)
        rc, out, err = env.run_sign("verifier", "introspect", tok)
        self.assertIn(rc, (EXIT_OTHER, EXIT_UNAVAILABLE), err)
        self.assertIn(err.split(": ")[1], ("FAILED_PRECONDITION", "UNAVAILABLE"), err)
        self.assertEqual(reason_of(err), "introspect.disabled", err)
        self.assertEqual(env.stop(), 0)

        signs = {r.get("jti"): r for r in audit_records(env)
                 if r.get("type") == "sign" and r.get("decision") == "allow"}
        with self.subTest("cnf in the sign records"):
            self.assertEqual(as_obj(signs[bound_p["jti"]].get("cnf")), {"jkt": jkt})
            self.assertEqual(as_obj(signs[mtls_p["jti"]].get("cnf")), {"x5t#S256": x5t})
        self.assertNotIn("cnf", signs[tok_p["jti"]])


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    unittest.main(verbosity=2)
