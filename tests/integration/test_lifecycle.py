#!/usr/bin/python3
"""test_lifecycle.py - key lifecycle, admin API and HTTP endpoints through a
running jwt-signerd.

1. HTTP JWKS: Cache-Control max-age, ETag and If-None-Match -> 304; the body
   equals `jwt-sign jwks`; every JWK is complete and its kid is its RFC 7638
   thumbprint.
2. /healthz: 200 while healthy, 503 naming the audit log while it cannot be
   written (faultio.c, LD_PRELOAD), 200 again once the fault is gone.
3. /metrics parses with prometheus_client's text parser; the SignJwt
   counters match the requests made, the incident gauge and the key version
   gauges follow admin calls.
4. Admin: every RPC by an admin succeeds and by a non-admin is
   PERMISSION_DENIED (admin.not_admin); every call is an audit record of type
   "admin" with the caller. Freeze works on the next request and survives a
   restart; incident mode via RPC applies incident_rate; reload via RPC picks
   up an edited policy; status reports keys, incident mode and frozen callers.
5. Rotation: the new kid is published before any token carries it; tokens
   signed before the rotation verify while the old version is retiring and
   no longer find their key once it is retired; "key" audit records for every
   transition.
6. Revocation: with and without a `next` version, the kid leaves the JWKS and
   signing at once and stays revoked over a restart; exp - iat never exceeds
   max_ttl + leeway.

Programs: the harness's (JS_SIGNERD, JS_SIGN), JS_AUDIT (jwt-audit) and
JS_FAULTIO (the LD_PRELOAD library). Run with /usr/bin/python3 (it needs
python3-cryptography and python3-prometheus-client from Debian).
"""

import hashlib
import json
import math
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

SUB = harness.SAMPLE_SUB
AUD = harness.SAMPLE_AUD
KEY = harness.DEFAULT_KEY["name"]
ISSUER_A = harness.CALLER_URIS["issuer-a"]
INTRUDER = harness.CALLER_URIS["intruder"]
ADMIN = "spiffe://example.org/ops/admin"
JWKS_PATH = "/.well-known/jwks.json"
EXIT_OK, EXIT_OTHER, EXIT_DENIED, EXIT_UNAVAILABLE, EXIT_LIMITED = 0, 1, 3, 5, 6


def scaled_s(seconds):
    """Whole seconds (config durations are whole seconds), scaled like harness.timeout
    but never shorter than `seconds`."""
    return max(seconds, int(math.ceil(harness.timeout(seconds))))


# Short lifecycle windows, scaled with harness.timeout (3 s, 15 s under ThreadSanitizer):
# the rotation test must sign inside the pre-publication window (PREPUBLISH - 1 s at
# least, activate_at counting from the rotation's whole second) and look at the
# retiring one (MAX_TTL + LEEWAY s from activation) after a jwt-sign process or two,
# each ~0.7 s under ThreadSanitizer.
PREPUBLISH, LEEWAY, MAX_TTL, DEFAULT_TTL = scaled_s(3), 1, scaled_s(3), 2
SHORT_LIFECYCLE = {"prepublish": "%ds" % PREPUBLISH, "leeway": "%ds" % LEEWAY}


def audit_records(env):
    """Every record of the log, from `jwt-audit show --json` (run after stop)."""
    rc, out, err = env.run([harness.audit_path(), "show", "--json"] + env.audit_segments(), timeout_s=60)
    if rc != 0:
        raise AssertionError("jwt-audit show failed (%d): %s" % (rc, err))
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def short_policy(env, **defaults):
    d = {"max_ttl": "%ds" % MAX_TTL, "default_ttl": "%ds" % DEFAULT_TTL}
    d.update(defaults)
    return env.default_policy(**d)


def decode_jwt(jwt):
    parts = jwt.split(".")
    return (json.loads(harness.b64url_decode(parts[0])),
            json.loads(harness.b64url_decode(parts[1])))


def reason_of(stderr):
    """The reason from jwt-sign's "jwt-sign: STATUS: reason: message" line."""
    line = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    parts = line.split(": ")
    return parts[2] if len(parts) >= 3 else None


class LifecycleCase(unittest.TestCase):
    def setUp(self):
        self.env = harness.Env()
        self.t0 = time.monotonic()

    def tearDown(self):
        if self._outcome_failed() and self.env.daemon is not None:
            sys.stderr.write(self.env.daemon.tail(60) + "\n")
        self.env.cleanup()
        sys.stderr.write("[%s: %.1f s] " % (self._testMethodName, time.monotonic() - self.t0))

    def _outcome_failed(self):
        result = getattr(getattr(self, "_outcome", None), "result", None)
        for attr in ("errors", "failures"):
            for test, _ in getattr(result, attr, None) or []:
                if test is self:
                    return True
        return False

    # --- helpers ---------------------------------------------------------------------
    def admin(self, *args, caller="admin", expect=EXIT_OK):
        """`jwt-sign admin ARGS` as caller; returns the parsed JSON (or stderr if denied)."""
        rc, out, err = self.env.run_sign(caller, "admin", *args)
        self.assertEqual(rc, expect, "admin %s as %s: rc %d\n%s%s" % (args, caller, rc, out, err))
        if expect == EXIT_OK:
            return json.loads(out)
        self.assertEqual(out, "")
        return err

    def sign_ok(self, claims=None, caller="issuer-a"):
        rc, out, err = self.env.sign(caller, claims or self.env.sample_claims(), "--json")
        self.assertEqual(rc, EXIT_OK, err)
        res = json.loads(out)
        header, payload = decode_jwt(res["jwt"])
        self.assertEqual(header["kid"], res["kid"])
        return res["jwt"], header, payload

    def http_jwks(self):
        status, headers, body = self.env.http_get(JWKS_PATH)
        self.assertEqual(status, 200, body)
        return json.loads(body)

    def http_kids(self):
        return [k["kid"] for k in self.http_jwks()["keys"]]

    def grpc_kids(self):
        rc, out, err = self.env.jwks()
        self.assertEqual(rc, EXIT_OK, err)
        return [k["kid"] for k in json.loads(out)["keys"]]

    def poll(self, what, fn, timeout_s=15, interval=0.2):
        """Calls fn() until it returns a true value (returned); fails after timeout_s (scaled)."""
        deadline = time.monotonic() + harness.timeout(timeout_s)
        last = None
        while True:
            last = fn()
            if last:
                return last
            if time.monotonic() > deadline:
                self.fail("%s: not within %.0f s" % (what, harness.timeout(timeout_s)))
            time.sleep(interval)

    def metrics(self):
        status, headers, body = self.env.http_get("/metrics")
        self.assertEqual(status, 200, body)
        self.assertTrue(headers.get("content-type", "").startswith("text/plain"), headers)
        samples = []
        for fam in text_string_to_metric_families(body.decode("utf-8")):
            samples.extend(fam.samples)
        return samples

    def gauge(self, samples, name, **labels):
        found = [s.value for s in samples
                 if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
        self.assertEqual(len(found), 1, "%s%r: %r" % (name, labels, found))
        return found[0]


# --- 1. HTTP JWKS ----------------------------------------------------------------------

class HttpJwks(LifecycleCase):
    def test_jwks_caching_and_content(self):
        env = self.env
        env.setup(http={"listen": "127.0.0.1:0", "jwks_max_age": "42s"})
        env.start()
        status, headers, body = env.http_get(JWKS_PATH)
        self.assertEqual(status, 200, body)
        self.assertTrue(headers.get("content-type", "").startswith("application/json"), headers)
        cc = [p.strip() for p in headers.get("cache-control", "").split(",")]
        self.assertIn("max-age=42", cc, headers)
        etag = headers.get("etag")
        self.assertTrue(etag and etag.startswith('"') and etag.endswith('"'), headers)

        # Same ETag twice, then a conditional GET: 304, no body, ETag repeated.
        status2, headers2, body2 = env.http_get(JWKS_PATH)
        self.assertEqual((status2, headers2.get("etag"), body2), (200, etag, body))
        status, h304, b304 = env.http_get(JWKS_PATH, {"If-None-Match": etag})
        self.assertEqual(status, 304, b304)
        self.assertEqual(b304, b"")
        self.assertEqual(h304.get("etag"), etag)
        status, _, b = env.http_get(JWKS_PATH, {"If-None-Match": '"not-the-tag"'})
        self.assertEqual(status, 200)
        self.assertEqual(b, body)

        # The same set as the gRPC GetJwks.
        jwks = json.loads(body)
        rc, out, err = env.jwks()
        self.assertEqual(rc, EXIT_OK, err)
        self.assertEqual(jwks, json.loads(out))
        self.assertEqual(list(jwks), ["keys"])
        self.assertEqual(len(jwks["keys"]), 1)
        for jwk in jwks["keys"]:
            self.assertIn(jwk.get("kty"), ("EC", "RSA", "OKP"), jwk)
            if jwk["kty"] == "RSA":
                self.assertTrue(jwk.get("n") and jwk.get("e"), jwk)
            else:
                self.assertTrue(jwk.get("crv"), jwk)
            self.assertEqual(jwk.get("alg"), "ES256", jwk)
            self.assertEqual(jwk.get("use"), "sig", jwk)
            self.assertEqual(jwk.get("kid"), harness.jwk_thumbprint(jwk), jwk)
            self.assertNotIn("d", jwk, "private member in the JWKS")

        # A token verifies against the HTTP JWKS.
        jwt, header, _ = self.sign_ok()
        harness.verify_es256(jwt, jwks)

        # After a rotation the body (and so the ETag) changes: the old ETag no longer 304s.
        env.add_caller("admin", ADMIN)
        self.admin("rotate", KEY)
        status, h, b = env.http_get(JWKS_PATH, {"If-None-Match": etag})
        self.assertEqual(status, 200, b)
        self.assertNotEqual(h.get("etag"), etag)
        self.assertEqual(len(json.loads(b)["keys"]), 2)
        self.assertEqual(env.stop(), 0)


# --- 2. /healthz -----------------------------------------------------------------------

class Health(LifecycleCase):
    def test_healthz_follows_audit_log(self):
        env = self.env
        env.setup()
        trigger = env.path("fault-trigger")
        extra = {"LD_PRELOAD": harness.faultio_path(), "JS_FAULT_TRIGGER": trigger,
                 "JS_FAULT_MATCH": os.path.join(env.audit_dir(), "audit-")}
        if os.environ.get("ASAN_OPTIONS") is not None:
            extra["ASAN_OPTIONS"] = os.environ["ASAN_OPTIONS"] + ":verify_asan_link_order=0"
        env.start(env=extra)

        status, headers, body = env.http_get("/healthz")
        self.assertEqual(status, 200, body)
        health = json.loads(body)
        self.assertEqual(health.get("status"), "ok", health)
        self.assertIn("no-store", headers.get("cache-control", ""))
        self.sign_ok()

        with open(trigger, "w", encoding="ascii"):
            pass
        rc, out, err = env.sign("issuer-a", env.sample_claims())
        self.assertEqual(rc, EXIT_UNAVAILABLE, err)
        self.assertIn("audit", err.lower())
        status, _, body = env.http_get("/healthz")
        sys.stderr.write("healthz during the fault: %d %s\n" % (status, body))
        self.assertEqual(status, 503, body)
        health = json.loads(body)
        self.assertEqual(health.get("status"), "unhealthy", health)
        self.assertNotEqual(health.get("audit"), "ok", health)
        self.assertIn("audit", json.dumps(health).lower().replace('"audit":', ""), health)
        self.assertEqual(health.get("hsm"), "ok", health)
        self.assertEqual(self.gauge(self.metrics(), "jwt_signer_audit_healthy"), 0)

        os.unlink(trigger)
        self.poll("/healthz back to 200 after the fault was removed",
                  lambda: env.http_get("/healthz")[0] == 200, timeout_s=10)
        self.assertEqual(json.loads(env.http_get("/healthz")[2]).get("status"), "ok")
        self.assertEqual(self.gauge(self.metrics(), "jwt_signer_audit_healthy"), 1)
        self.sign_ok()
        self.assertEqual(env.stop(), 0)


# --- 3. /metrics -----------------------------------------------------------------------

class Metrics(LifecycleCase):
    def test_metrics_counters_and_gauges(self):
        env = self.env
        env.setup()
        env.add_caller("admin", ADMIN)
        env.start()

        expected = {}  # (caller, decision, reason) -> count, SignJwt only

        def count(caller, decision, reason):
            key = (caller, decision, reason)
            expected[key] = expected.get(key, 0) + 1

        for _ in range(3):
            self.sign_ok()
            count(ISSUER_A, "allow", "ok")
        for _ in range(2):
            rc, _, err = env.sign("issuer-a", {"sub": SUB, "aud": "https://nope.example"})
            self.assertEqual((rc, reason_of(err)), (EXIT_DENIED, "policy.audience"), err)
            count(ISSUER_A, "deny", "policy.audience")
        rc, _, err = env.sign("issuer-a", {"sub": "not-a-uuid", "aud": AUD})
        self.assertEqual(rc, EXIT_DENIED, err)
        count(ISSUER_A, "deny", reason_of(err))
        rc, _, err = env.sign("intruder", env.sample_claims())
        self.assertEqual((rc, reason_of(err)), (EXIT_DENIED, "policy.no_match"), err)
        count(INTRUDER, "deny", "policy.no_match")

        samples = self.metrics()
        got = {(s.labels["caller"], s.labels["decision"], s.labels["reason"]): s.value
               for s in samples
               if s.name == "jwt_signer_requests_total" and s.labels.get("method") == "SignJwt"}
        self.assertEqual(got, expected)
        self.assertEqual(self.gauge(samples, "jwt_signer_incident_mode"), 0)
        self.assertEqual(self.gauge(samples, "jwt_signer_key_versions", state="active"), 1)
        self.assertEqual(self.gauge(samples, "jwt_signer_key_versions", state="next"), 0)
        self.assertEqual(self.gauge(samples, "jwt_signer_audit_healthy"), 1)
        self.assertEqual(self.gauge(samples, "jwt_signer_hsm_healthy"), 1)
        lat = [s.value for s in samples if s.name == "jwt_signer_sign_latency_seconds_count"]
        self.assertEqual(lat, [3])

        self.admin("incident", "on", "--reason", "metrics test")
        samples = self.metrics()
        self.assertEqual(self.gauge(samples, "jwt_signer_incident_mode"), 1)
        self.assertEqual(self.gauge(samples, "jwt_signer_requests_total",
                                    method="Admin/SetIncidentMode", caller=ADMIN), 1)
        self.admin("incident", "off")
        self.assertEqual(self.gauge(self.metrics(), "jwt_signer_incident_mode"), 0)

        # Default prepublish (= jwks_max_age, 300 s): the new version stays `next`.
        rot = self.admin("rotate", KEY)
        self.assertEqual(rot["version"], 2)
        samples = self.metrics()
        self.assertEqual(self.gauge(samples, "jwt_signer_key_versions", state="next"), 1)
        self.assertEqual(self.gauge(samples, "jwt_signer_key_versions", state="active"), 1)
        self.assertEqual(self.gauge(samples, "jwt_signer_key_versions", state="revoked"), 0)
        self.admin("revoke", KEY, rot["kid"])
        samples = self.metrics()
        self.assertEqual(self.gauge(samples, "jwt_signer_key_versions", state="next"), 0)
        self.assertEqual(self.gauge(samples, "jwt_signer_key_versions", state="revoked"), 1)
        # Counters unchanged by admin calls and scrapes.
        got = {(s.labels["caller"], s.labels["decision"], s.labels["reason"]): s.value
               for s in samples
               if s.name == "jwt_signer_requests_total" and s.labels.get("method") == "SignJwt"}
        self.assertEqual(got, expected)
        self.assertEqual(env.stop(), 0)


# --- 4. Admin API ----------------------------------------------------------------------

class Admin(LifecycleCase):
    def test_admin_rpcs(self):
        env = self.env
        policy = env.default_policy(incident_rate={"per_second": "0.05", "burst": 2})
        text = harness.to_yaml(policy).replace('"0.05"', "0.05")
        env.setup(policy=text)
        env.add_caller("admin", ADMIN)
        env.start()
        calls = []  # (caller, action, decision) every admin call made, in order

        def admin(action, *args, caller="admin", expect=EXIT_OK):
            ident = ADMIN if caller == "admin" else harness.CALLER_URIS[caller]
            res = self.admin(action, *args, caller=caller, expect=expect)
            calls.append((ident, action, "allow" if expect == EXIT_OK else "deny"))
            return res

        # Every action by a non-admin: PERMISSION_DENIED, admin.not_admin, nothing changes.
        jwks_before = self.http_jwks()
        kid1 = jwks_before["keys"][0]["kid"]
        for args in (("rotate", KEY, "--reason", "x"), ("revoke", KEY, kid1),
                     ("incident", "on"), ("freeze", INTRUDER), ("unfreeze", INTRUDER),
                     ("reload",), ("status",)):
            with self.subTest(non_admin=args[0]):
                err = admin(*args, caller="issuer-a", expect=EXIT_DENIED)
                self.assertIn("PERMISSION_DENIED", err)
                self.assertEqual(reason_of(err), "admin.not_admin", err)
        self.assertEqual(self.http_jwks(), jwks_before)
        self.sign_ok()

        # status
        st = admin("status")
        self.assertIs(st["incident_mode"], False)
        self.assertEqual(st["frozen"], {})
        self.assertEqual([k["key"] for k in st["keys"]], [KEY])
        (v1,) = st["keys"][0]["versions"]
        self.assertEqual((v1["version"], v1["state"], v1["kid"]),
                         (1, "active", jwks_before["keys"][0]["kid"]))
        # per-caller counters: issuer-a has signed at least once above, and
        # its limits are in the effective rules.
        self.assertGreaterEqual(st["callers"][ISSUER_A]["allow"], 1, st["callers"])
        self.assertIn("rate", st["policy"]["rules"])

        # freeze: the very next request is refused; unfreeze restores.
        res = admin("freeze", ISSUER_A, "--reason", "suspicious")
        self.assertEqual(res, {"identity": ISSUER_A, "frozen": True})
        rc, out, err = env.sign("issuer-a", env.sample_claims())
        self.assertEqual((rc, reason_of(err)), (EXIT_DENIED, "admin.frozen"), err)
        self.assertEqual(out, "")
        self.assertIn(ISSUER_A, admin("status")["frozen"])
        with open(env.path("state", "runtime.json"), encoding="utf-8") as f:
            self.assertIn(ISSUER_A, json.load(f)["frozen"])

        # The freeze survives a restart on the same config.
        self.assertEqual(env.stop(), 0)
        env.start()
        rc, out, err = env.sign("issuer-a", env.sample_claims())
        self.assertEqual((rc, reason_of(err)), (EXIT_DENIED, "admin.frozen"),
                         "freeze lost over a restart: " + err)
        self.assertIn(ISSUER_A, admin("status")["frozen"])
        res = admin("unfreeze", ISSUER_A, "--reason", "cleared")
        self.assertEqual(res, {"identity": ISSUER_A, "frozen": False})
        self.sign_ok()
        self.assertEqual(admin("status")["frozen"], {})

        # incident on: issuer-a held to incident_rate (0.05/s, burst 2); off again.
        res = admin("incident", "on", "--reason", "drill")
        self.assertEqual(res, {"incident_mode": True})
        self.assertIs(admin("status")["incident_mode"], True)
        codes = []
        for _ in range(4):
            rc, _, err = env.sign("issuer-a", env.sample_claims())
            codes.append((rc, reason_of(err) if rc else "ok"))
        self.assertEqual(codes[:2], [(0, "ok"), (0, "ok")], codes)
        self.assertEqual(codes[2:], [(EXIT_LIMITED, "rate.limited")] * 2, codes)
        # Incident mode survives a restart too (README: run-time changes survive).
        with open(env.path("state", "runtime.json"), encoding="utf-8") as f:
            self.assertIs(json.load(f)["incident"], True)
        self.assertEqual(env.stop(), 0)
        env.start()
        self.assertIs(admin("status")["incident_mode"], True)
        res = admin("incident", "off", "--reason", "drill over")
        self.assertEqual(res, {"incident_mode": False})
        for _ in range(3):
            self.sign_ok()
        self.assertIs(admin("status")["incident_mode"], False)

        # reload after editing the policy: other.example is no longer an audience.
        policy["defaults"]["audiences"] = [AUD]
        text = harness.to_yaml(policy).replace('"0.05"', "0.05")
        path = env.write_policy(text)
        self.sign_ok({"sub": SUB, "aud": "https://other.example"})
        res = admin("reload")
        with open(path, "rb") as f:
            file_sha = hashlib.sha256(f.read()).hexdigest()
        self.assertRegex(res.get("sha256", ""), "^[0-9a-f]{64}$")
        self.assertEqual(admin("status")["policy"]["sha256"], res["sha256"])
        if res["sha256"] != file_sha:
            sys.stderr.write("note: reload sha256 %s is not the file's SHA-256 %s\n"
                             % (res["sha256"], file_sha))
        rc, _, err = env.sign("issuer-a", {"sub": SUB, "aud": "https://other.example"})
        self.assertEqual((rc, reason_of(err)), (EXIT_DENIED, "policy.audience"), err)
        self.sign_ok()
        # A non-admin is still refused after the reload; so is an unknown key for the admin.
        admin("status", caller="issuer-a", expect=EXIT_DENIED)
        admin("rotate", "no-such-key", expect=EXIT_OTHER)
        calls[-1] = (ADMIN, "rotate", None)  # refused NOT_FOUND: any non-allow decision

        # rotate and revoke by the admin (details in the Rotation/Revocation tests)
        rot = admin("rotate", KEY, "--reason", "scheduled")
        self.assertEqual((rot["key"], rot["version"]), (KEY, 2))
        st = admin("status")
        self.assertEqual([(v["version"], v["state"]) for v in st["keys"][0]["versions"]],
                         [(1, "active"), (2, "next")])
        rev = admin("revoke", KEY, rot["kid"], "--reason", "test")
        self.assertEqual((rev["key"], rev["kid"]), (KEY, rot["kid"]))
        self.assertEqual(rev["active_kid"], v1["kid"])
        self.assertEqual(env.stop(), 0)

        # Every call, allowed or denied, is an "admin" record with the caller's identity.
        recs = [r for r in audit_records(env) if r.get("type") == "admin"]
        self.assertEqual(len(recs), len(calls), [(r["caller"], r["detail"]) for r in recs])
        for (ident, action, decision), r in zip(calls, recs):
            with self.subTest(record=r["seq"]):
                self.assertEqual(r.get("caller"), ident, r)
                self.assertEqual(r.get("detail", {}).get("action"), action, r)
                if decision is None:
                    self.assertNotEqual(r.get("decision"), "allow", r)
                else:
                    self.assertEqual(r.get("decision"), decision, r)
                if decision == "deny":
                    self.assertEqual(r.get("reason"), "admin.not_admin", r)
        freeze = [r for r in recs if r["detail"].get("action") == "freeze" and
                  r["decision"] == "allow"]
        self.assertEqual(freeze[0]["detail"].get("identity"), ISSUER_A)
        self.assertEqual(freeze[0]["detail"].get("reason"), "suspicious")
        incident = [r for r in audit_records(env) if r.get("type") == "incident"]
        self.assertEqual([(r["caller"], r["decision"]) for r in incident],
                         [(ADMIN, "on"), (ADMIN, "off")])


# --- 5. Rotation -----------------------------------------------------------------------

class Rotation(LifecycleCase):
    def test_rotation_windows(self):
        env = self.env
        env.setup(policy=short_policy(env), key_lifecycle=SHORT_LIFECYCLE)
        env.add_caller("admin", ADMIN)
        env.start()

        old_jwt, header, payload = self.sign_ok()
        old_kid = header["kid"]
        self.assertEqual(self.http_kids(), [old_kid])
        harness.verify_es256(old_jwt, self.http_jwks())

        t_pre = time.time()
        rot = self.admin("rotate", KEY, "--reason", "lifecycle test")
        t_rotate = time.time()
        # Sign straight away: only this leaves the pre-publication window (PREPUBLISH - 1 s
        # at least) to one jwt-sign process, whatever the checks below cost.
        signed_before = [self.sign_ok()]
        t_first = time.time()
        new_kid = rot["kid"]
        self.assertEqual((rot["key"], rot["version"]), (KEY, 2))
        self.assertNotEqual(new_kid, old_kid)
        activate_at = rot["activate_at"]
        # The daemon read its clock (whole seconds) during the admin call.
        self.assertTrue(int(t_pre) <= activate_at - PREPUBLISH <= t_rotate,
                        (t_pre, activate_at, t_rotate))

        # Published at once, in both JWKS, with the thumbprint as kid.
        jwks = self.http_jwks()
        self.assertEqual(sorted(k["kid"] for k in jwks["keys"]), sorted([old_kid, new_kid]))
        for jwk in jwks["keys"]:
            self.assertEqual(jwk["kid"], harness.jwk_thumbprint(jwk))
        self.assertEqual(sorted(self.grpc_kids()), sorted([old_kid, new_kid]))

        # Before activate_at every token carries the OLD kid.
        for _ in range(3):
            signed_before.append(self.sign_ok())
        before = 0
        old_payloads = [payload]
        for jwt, header, payload in signed_before:
            if header["kid"] == old_kid:
                old_payloads.append(payload)
            if payload["iat"] < activate_at:
                before += 1
                self.assertEqual(header["kid"], old_kid, "a token carried the new kid before "
                                 "activate_at %d: iat %d" % (activate_at, payload["iat"]))
            harness.verify_es256(jwt, self.http_jwks())
        self.assertGreaterEqual(before, 1, "no signature fell inside the pre-publication window "
                                "(the first was signed %.1f s after the rotation, %.1f s before "
                                "activate_at)" % (t_first - t_rotate, activate_at - t_first))

        # After activate_at (and the next tick): the NEW kid signs.
        def signs_new():
            jwt, header, payload = self.sign_ok()
            return (jwt, payload) if header["kid"] == new_kid else None
        new_jwt, new_payload = self.poll("tokens carry the new kid", signs_new, timeout_s=10)
        self.assertGreaterEqual(new_payload["iat"], activate_at)
        t_active = time.time()

        # Retiring: the old kid is still published and the old token still verifies.
        # Looked at first, before any other process runs; whether it had to be still
        # published is decided on the time the answer came, against unpublish_at.
        jwks = self.http_jwks()
        t_jwks = time.time()
        st = self.admin("status")
        t_status = time.time()
        states = {v["version"]: v for v in st["keys"][0]["versions"]}
        self.assertEqual(states[2]["state"], "active")
        self.assertEqual(states[1]["unpublish_at"] - states[1]["retire_at"], MAX_TTL + LEEWAY)
        unpublish_at = states[1]["unpublish_at"]
        # The window is MAX_TTL + LEEWAY s from activation: the JWKS answered inside it.
        self.assertLess(t_jwks, unpublish_at, "the retiring window (%d s) was over before the "
                        "JWKS was fetched, %.1f s after activation"
                        % (MAX_TTL + LEEWAY, t_jwks - states[1]["retire_at"]))
        self.assertIn(old_kid, [k["kid"] for k in jwks["keys"]])
        harness.verify_es256(old_jwt, jwks)
        harness.verify_es256(new_jwt, jwks)
        # Retired only by a tick at or after unpublish_at.
        if t_status < unpublish_at:
            self.assertEqual(states[1]["state"], "retiring", states)
        else:
            self.assertIn(states[1]["state"], ("retiring", "retired"), states)
        for _ in range(2):
            _, header, _ = self.sign_ok()
            self.assertEqual(header["kid"], new_kid)

        # Retired after max_ttl + leeway: gone from the JWKS, the old token finds no key.
        self.poll("old kid unpublished", lambda: old_kid not in self.http_kids(), timeout_s=12)
        waited = time.time() - t_active
        self.assertGreaterEqual(time.time(), states[1]["unpublish_at"] - 0.5,
                                "old kid unpublished too early (after %.1f s)" % waited)
        jwks = self.http_jwks()
        self.assertEqual([k["kid"] for k in jwks["keys"]], [new_kid])
        self.assertEqual(self.grpc_kids(), [new_kid])
        with self.assertRaisesRegex(ValueError, "0 keys with kid"):
            harness.verify_es256(old_jwt, jwks)
        harness.verify_es256(new_jwt, jwks)
        # Every token the old version signed had expired by then.
        for p in old_payloads:
            self.assertLessEqual(p["exp"], states[1]["unpublish_at"], p)
        st = self.admin("status")
        states = {v["version"]: v["state"] for v in st["keys"][0]["versions"]}
        self.assertEqual(states, {1: "retired", 2: "active"})
        self.assertEqual(env.stop(), 0)

        recs = [r for r in audit_records(env) if r.get("type") == "key"]
        trans = [(r["detail"]["version"], r["detail"]["from"], r["detail"]["to"], r["decision"])
                 for r in recs]
        for t in [(1, "none", "active", "active"), (2, "none", "next", "next"),
                  (2, "next", "active", "active"), (1, "active", "retiring", "retiring"),
                  (1, "retiring", "retired", "retired")]:
            self.assertIn(t, trans)
        by_to = {(r["detail"]["version"], r["detail"]["to"]): r for r in recs}
        self.assertEqual(by_to[(2, "next")]["caller"], ADMIN)
        self.assertEqual(by_to[(2, "next")]["detail"]["kid"], new_kid)
        self.assertEqual(by_to[(1, "retired")]["detail"]["kid"], old_kid)
        order = [trans.index(t) for t in [(2, "none", "next", "next"),
                                          (2, "next", "active", "active"),
                                          (1, "retiring", "retired", "retired")]]
        self.assertEqual(order, sorted(order))


# --- 6. Revocation ---------------------------------------------------------------------

class AutomaticRotation(LifecycleCase):
    def test_rotation_period(self):
        """keys[].rotation_period: the schedule rotates by itself, with the same
        pre-publication as a manual rotation, and audits who did it."""
        env = self.env
        key = dict(harness.DEFAULT_KEY, rotation_period="3s")
        env.setup(policy=short_policy(env), key_lifecycle=SHORT_LIFECYCLE, keys=[key])
        env.start()
        (first,) = self.http_kids()
        # A second version appears (next), then signs after its pre-publication.
        self.poll("automatic rotation publishes a new version", lambda: len(self.http_kids()) >= 2)
        second = [k for k in self.http_kids() if k != first][0]
        self.poll("the new version signs", lambda: self.sign_ok()[1]["kid"] == second)
        self.assertEqual(env.stop(), 0)
        keys = [r for r in audit_records(env) if r["type"] == "key"]
        rotated = [r for r in keys if r["detail"].get("kid") == second]
        self.assertEqual(rotated[0]["caller"], "rotation period", rotated[0])
        self.assertEqual([r["detail"]["to"] for r in rotated[:2]], ["next", "active"], rotated)


class Revocation(LifecycleCase):
    def check_exp(self, payload):
        self.assertLessEqual(payload["exp"] - payload["iat"], MAX_TTL + LEEWAY, payload)
        self.assertGreater(payload["exp"], payload["iat"], payload)

    def test_revoke_with_next(self):
        env = self.env
        env.setup(policy=short_policy(env), key_lifecycle=SHORT_LIFECYCLE)
        env.add_caller("admin", ADMIN)
        env.start()
        claims = {"sub": SUB, "aud": AUD, "exp": int(time.time()) + MAX_TTL}
        _, header, payload = self.sign_ok(claims)
        self.check_exp(payload)
        kid1 = header["kid"]
        rot = self.admin("rotate", KEY)
        kid2 = rot["kid"]

        rev = self.admin("revoke", KEY, kid1, "--reason", "leaked")
        self.assertEqual((rev["kid"], rev["active_kid"]), (kid1, kid2))
        # At once: gone from both JWKS, and the next version signs.
        self.assertEqual(self.http_kids(), [kid2])
        self.assertEqual(self.grpc_kids(), [kid2])
        for _ in range(3):
            jwt, header, payload = self.sign_ok()
            self.assertEqual(header["kid"], kid2)
            self.check_exp(payload)
            harness.verify_es256(jwt, self.http_jwks())
        st = self.admin("status")
        states = {v["version"]: v["state"] for v in st["keys"][0]["versions"]}
        self.assertEqual(states, {1: "revoked", 2: "active"})

        # Revoking again changes nothing.
        self.admin("revoke", KEY, kid1)
        self.assertEqual(self.http_kids(), [kid2])

        self.assertEqual(env.stop(), 0)
        env.start()
        self.assertEqual(self.http_kids(), [kid2])
        _, header, payload = self.sign_ok()
        self.assertEqual(header["kid"], kid2)
        self.check_exp(payload)
        with open(env.path("state", "keys.json"), encoding="utf-8") as f:
            self.assertIn(kid1, f.read())
        self.assertEqual(env.stop(), 0)

        recs = [r for r in audit_records(env) if r.get("type") == "key"]
        revoked = [r for r in recs if r["detail"]["to"] == "revoked"]
        self.assertEqual([(r["detail"]["kid"], r["caller"]) for r in revoked], [(kid1, ADMIN)])
        promoted = [r for r in recs
                    if r["detail"]["version"] == 2 and r["detail"]["to"] == "active"]
        self.assertEqual(len(promoted), 1)
        signed = [r for r in audit_records(env) if r.get("type") == "sign" and
                  r.get("decision") == "allow"]
        after = [r["kid"] for r in signed if r["seq"] > revoked[0]["seq"]]
        self.assertTrue(after and set(after) == {kid2}, after)

    def test_revoke_without_next(self):
        env = self.env
        env.setup(policy=short_policy(env), key_lifecycle=SHORT_LIFECYCLE)
        env.add_caller("admin", ADMIN)
        env.start()
        _, header, payload = self.sign_ok()
        self.check_exp(payload)
        kid1 = header["kid"]

        rev = self.admin("revoke", KEY, kid1, "--reason", "leaked")
        self.assertEqual(rev["kid"], kid1)
        self.assertFalse(rev.get("active_kid"), rev)
        self.assertEqual(self.http_kids(), [])
        self.assertEqual(self.grpc_kids(), [])

        def refused():
            rc, out, err = env.sign("issuer-a", env.sample_claims())
            self.assertEqual((rc, out), (EXIT_UNAVAILABLE, ""), err)
            self.assertIn("UNAVAILABLE", err)
            self.assertEqual(reason_of(err), "key.no_active", err)
        refused()
        refused()
        # No tick brings it back.
        time.sleep(1.2)
        refused()

        self.assertEqual(env.stop(), 0)
        env.start()
        self.assertEqual(self.http_kids(), [])
        refused()
        st = self.admin("status")
        self.assertEqual([(v["version"], v["state"]) for v in st["keys"][0]["versions"]],
                         [(1, "revoked")])

        # Recovery is a rotation: published as next, then signing, never the revoked kid.
        rot = self.admin("rotate", KEY)
        self.assertNotEqual(rot["kid"], kid1)
        self.assertEqual(self.http_kids(), [rot["kid"]])

        def signs():
            rc, out, err = env.sign("issuer-a", env.sample_claims(), "--json")
            if rc != 0:
                self.assertEqual(reason_of(err), "key.no_active", err)
                return None
            return json.loads(out)
        res = self.poll("signing resumes with the new version", signs, timeout_s=10)
        self.assertEqual(res["kid"], rot["kid"])
        _, payload = decode_jwt(res["jwt"])
        self.check_exp(payload)
        self.assertEqual(env.stop(), 0)

        kids = {r.get("kid") for r in audit_records(env)
                if r.get("type") == "sign" and r.get("decision") == "allow"}
        self.assertEqual(kids, {kid1, rot["kid"]})


if __name__ == "__main__":
    unittest.main(verbosity=2)
