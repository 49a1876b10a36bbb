"""test_identity_confusion.py - a caller's identity carries its type.

Real PKI (certificates issued by the test CA with chosen names, harness
add_cert), real SoftHSM token, real jwt-signerd on a loopback port:

1. A certificate with no SAN and CN=spiffe://example.org/ops/admin is the
   identity cn:spiffe://example.org/ops/admin: not an administrator
   (GetStatus PERMISSION_DENIED admin.not_admin) and not the URI caller of
   the same text, exactly or through a prefix pattern. The real admin
   (URI SAN) is, as a control. Logs, metrics and audit records carry the
   typed text.
2. A DNS SAN reading spiffe://example.org/issuer-a does not sign as issuer-a.
3. A `dns:`-typed policy entry accepts its DNS-SAN caller (in any letter
   case), and nobody else: not a CN with the same text.
4. A CN with C1 and bidi characters (issuer U+0085 a U+202E) is refused,
   PERMISSION_DENIED identity.invalid, the message naming the certificate
   field and the code point; the raw characters reach no log line.
5. Freezing works on typed identities; an untyped one is INVALID_ARGUMENT.
6. An old-style policy (a bare caller id or admin) is refused at start, by
   check-policy and on reload, with FILE:LINE and how to write it now.
"""

import json
import os
import signal
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

SUB = harness.SAMPLE_SUB
AUD = harness.SAMPLE_AUD
ISSUER_A = harness.CALLER_IDS["issuer-a"]
ADMIN = "spiffe://example.org/ops/admin"
PAY_PATTERN = "spiffe://example.org/ns/pay/*"
LEGACY_DNS = "legacy.example.org"
EXIT_OK, EXIT_DENIED, EXIT_INVALID = 0, 3, 4
BAD_CN = "issuer\u0085a\u202e"


def status_and_reason(stderr):
    """(STATUS, reason) from jwt-sign's "jwt-sign: STATUS: reason: message" line."""
    line = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    parts = line.split(": ")
    return (parts[1] if len(parts) >= 2 else None, parts[2] if len(parts) >= 3 else None)


def policy(env, callers=None):
    return env.default_policy(callers=callers or [
        {"id": ISSUER_A},
        {"id": PAY_PATTERN},
        {"id": "dns:" + LEGACY_DNS},
    ])


class IdentityConfusion(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        env = cls.env = harness.Env()
        try:
            env.setup(policy=policy(env))
            env.add_caller("admin", ADMIN)
            # What a careless CA could be talked into issuing.
            env.add_cert("cn-admin", cn=ADMIN)
            env.add_cert("cn-issuer-a", cn=ISSUER_A)
            env.add_cert("cn-pay", cn="spiffe://example.org/ns/pay/checkout")
            env.add_cert("dns-issuer-a", cn="x", dns=[ISSUER_A])
            env.add_cert("dns-legacy", cn="other", dns=[LEGACY_DNS])
            env.add_cert("dns-legacy-upper", dns=["LEGACY.Example.ORG"])
            env.add_cert("cn-legacy", cn=LEGACY_DNS)
            env.add_cert("cn-bidi", cn=BAD_CN)
            env.add_cert("cn-zwsp", cn="adm\u200bin")
            env.start()
        except Exception:
            env.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.env.cleanup()

    def sign(self, caller):
        rc, out, err = self.env.sign(caller, {"sub": SUB, "aud": AUD})
        return rc, out, err

    def request_lines(self, start):
        """The "request" log lines from stderr line `start` on."""
        objs = (harness._parse_log(t) for t in self.env.daemon.stderr_lines()[start:])
        return [o for o in objs if o is not None and o.get("event") == "request"]

    def mark(self):
        return len(self.env.daemon.stderr_lines())

    def wait_requests(self, start, pred, count):
        """Waits until `count` request lines after `start` satisfy pred; returns them."""
        seen = []

        def enough(_):
            seen[:] = [o for o in self.request_lines(start) if pred(o)]
            return len(seen) >= count
        self.env.wait_log(enough, start=start)
        return seen

    def test_1_cn_holding_admin_uri_is_not_admin(self):
        env = self.env
        # Control: the admin's real certificate (URI SAN) is an administrator.
        rc, out, err = env.run_sign("admin", "admin", "status")
        self.assertEqual(rc, EXIT_OK, err)
        self.assertIn("incident_mode", json.loads(out))

        start = self.mark()
        rc, out, err = env.run_sign("cn-admin", "admin", "status")
        self.assertEqual(rc, EXIT_DENIED, out + err)
        self.assertEqual(status_and_reason(err), ("PERMISSION_DENIED", "admin.not_admin"), err)
        self.assertIn("cn:" + ADMIN, err)
        # Nor may it act: freezing issuer-a is refused and issuer-a still signs.
        rc, out, err = env.run_sign("cn-admin", "admin", "freeze", ISSUER_A)
        self.assertEqual(rc, EXIT_DENIED, out + err)
        self.assertEqual(status_and_reason(err)[1], "admin.not_admin", err)
        rc, _, err = self.sign("issuer-a")
        self.assertEqual(rc, EXIT_OK, err)
        # And it signs as nobody: no URI entry, no URI prefix pattern.
        for cert in ("cn-admin", "cn-issuer-a", "cn-pay"):
            rc, out, err = self.sign(cert)
            self.assertEqual(rc, EXIT_DENIED, "%s: %s%s" % (cert, out, err))
            self.assertEqual(status_and_reason(err), ("PERMISSION_DENIED", "policy.no_match"),
                             cert + ": " + err)
        # The logs carry the typed identity.
        self.wait_requests(start, lambda o: o.get("caller") ==
                           "cn:spiffe://example.org/ns/pay/checkout", 1)
        callers = {o.get("caller") for o in self.request_lines(start)}
        self.assertIn("cn:" + ADMIN, callers)
        self.assertIn("cn:" + ISSUER_A, callers)
        self.assertNotIn(ADMIN, callers)
        # So do the metrics labels.
        status, _, body = env.http_get("/metrics")
        self.assertEqual(status, 200)
        text = body.decode("utf-8")
        self.assertIn('caller="cn:%s"' % ADMIN, text)
        self.assertIn('caller="cn:%s"' % ISSUER_A, text)

    def test_2_dns_san_holding_uri_is_not_issuer_a(self):
        start = self.mark()
        rc, out, err = self.sign("dns-issuer-a")
        self.assertEqual(rc, EXIT_DENIED, out + err)
        status, reason = status_and_reason(err)
        self.assertEqual(status, "PERMISSION_DENIED", err)
        self.assertEqual(reason, "identity.invalid", err)
        self.assertIn("DNS SAN", err)
        lines = self.env.wait_log(lambda o: o.get("event") == "request" and
                                  o.get("reason") == "identity.invalid", start=start)
        self.assertNotEqual(lines.get("caller"), ISSUER_A)
        self.assertNotEqual(lines.get("decision"), "allow")

    def test_3_dns_typed_entry_accepts_its_dns_caller_only(self):
        start = self.mark()
        for cert in ("dns-legacy", "dns-legacy-upper"):
            rc, out, err = self.sign(cert)
            self.assertEqual(rc, EXIT_OK, "%s: %s" % (cert, err))
            self.assertEqual(out.strip().count("."), 2)
        allowed = self.wait_requests(start, lambda o: o.get("decision") == "allow", 2)
        self.assertEqual([o.get("caller") for o in allowed], ["dns:" + LEGACY_DNS] * 2)
        # A CN holding the same name is a different identity.
        rc, out, err = self.sign("cn-legacy")
        self.assertEqual(rc, EXIT_DENIED, out + err)
        self.assertEqual(status_and_reason(err)[1], "policy.no_match", err)
        self.assertIn("cn:" + LEGACY_DNS, err)

    def test_4_control_and_bidi_characters_in_cn_refused(self):
        start = self.mark()
        for cert, cp in (("cn-bidi", "U+0085"), ("cn-zwsp", "U+200B")):
            rc, out, err = self.sign(cert)
            self.assertEqual(rc, EXIT_DENIED, out + err)
            self.assertEqual(status_and_reason(err), ("PERMISSION_DENIED", "identity.invalid"),
                             err)
            self.assertIn("CN", err)
            self.assertIn(cp, err)
            self.assertNotIn("\u0085", err)
            self.assertNotIn("\u202e", err)
            self.assertNotIn("\u200b", err)
        self.env.wait_log(lambda o: o.get("event") == "request" and
                          o.get("reason") == "identity.invalid" and "U+200B" in
                          o.get("message", ""), start=start)
        # No log line anywhere holds the raw characters, even JSON-escaped.
        for o in self.env.daemon.logs():
            text = json.dumps(o, ensure_ascii=False)
            for ch in ("\u0085", "\u202e", "\u200b"):
                self.assertNotIn(ch, text, o)
        status, _, body = self.env.http_get("/metrics")
        self.assertEqual(status, 200)
        self.assertNotIn("\u0085", body.decode("utf-8"))
        self.assertNotIn("\u202e", body.decode("utf-8"))

    def test_5_freeze_typed_identities(self):
        env = self.env
        rc, out, err = env.run_sign("admin", "admin", "freeze", "dns:" + LEGACY_DNS,
                                    "--reason", "typed freeze")
        self.assertEqual(rc, EXIT_OK, err)
        try:
            rc, out, err = self.sign("dns-legacy")
            self.assertEqual(rc, EXIT_DENIED, out + err)
            self.assertEqual(status_and_reason(err)[1], "admin.frozen", err)
            rc, _, err = self.sign("issuer-a")
            self.assertEqual(rc, EXIT_OK, err)
        finally:
            rc, out, err = env.run_sign("admin", "admin", "unfreeze", "dns:" + LEGACY_DNS)
            self.assertEqual(rc, EXIT_OK, err)
        rc, _, err = self.sign("dns-legacy")
        self.assertEqual(rc, EXIT_OK, err)
        # An untyped identity would freeze nobody: refused with how to write it.
        for bare, words in ((LEGACY_DNS, "dns:" + LEGACY_DNS), ("cn-caller", "cn:cn-caller"),
                            ("spiffe://example.org/issuer\u0085a", "U+0085")):
            rc, out, err = env.run_sign("admin", "admin", "freeze", bare)
            self.assertEqual(rc, EXIT_INVALID, "%r: %s%s" % (bare, out, err))
            self.assertEqual(status_and_reason(err)[0], "INVALID_ARGUMENT", err)
            self.assertIn(words, err)
        rc, out, err = env.run_sign("admin", "admin", "status")
        self.assertEqual(rc, EXIT_OK, err)
        self.assertEqual(json.loads(out).get("frozen"), {})

    def test_6_old_style_policy_reload_refused(self):
        env = self.env
        start = self.mark()
        path = env.write_policy(policy(env, callers=[{"id": ISSUER_A}, {"id": LEGACY_DNS}]))
        os.kill(env.daemon.pid, signal.SIGHUP)
        line = env.wait_log(lambda o: o.get("event") == "policy_reload_failed", start=start)
        self.assertIn("callers[1].id", line.get("message", ""), line)
        self.assertIn("dns:" + LEGACY_DNS, line.get("message", ""), line)
        # The policy in force is unchanged: the dns: entry still signs.
        rc, _, err = self.sign("dns-legacy")
        self.assertEqual(rc, EXIT_OK, err)
        env.write_policy(policy(env))
        self.assertTrue(os.path.exists(path))

    def test_7_audit_records_carry_typed_identities(self):
        env = self.env
        self.assertEqual(env.stop(), 0)
        rc, out, err = env.run([harness.audit_path(), "show", "--json"] + env.audit_segments(),
                               timeout_s=60)
        self.assertEqual(rc, 0, err)
        recs = [json.loads(t) for t in out.splitlines() if t.strip()]
        by_caller = {}
        for r in recs:
            by_caller.setdefault(r.get("caller"), set()).add(r.get("decision"))
        self.assertIn("deny", by_caller.get("cn:" + ADMIN, set()), sorted(by_caller, key=str))
        self.assertIn("allow", by_caller.get("dns:" + LEGACY_DNS, set()))
        self.assertIn("allow", by_caller.get(ADMIN, set()))  # the real admin, the control
        self.assertEqual(by_caller.get("cn:" + ISSUER_A), {"deny"})
        for r in recs:
            self.assertNotIn("\u0085", json.dumps(r, ensure_ascii=False))


class OldStylePolicyAtStart(unittest.TestCase):
    def setUp(self):
        self.env = harness.Env()

    def tearDown(self):
        self.env.cleanup()

    def startup_failure(self, stderr):
        for text in stderr.splitlines():
            try:
                obj = json.loads(text)
            except ValueError:
                continue
            if obj.get("event") == "startup_failed":
                return obj
        raise AssertionError("no startup_failed line in:\n" + stderr)

    def test_bare_caller_and_admin_refused(self):
        env = self.env
        env.setup()
        cases = [
            # (policy, line, words)
            (env.default_policy(callers=[{"id": ISSUER_A}, {"id": "svc.example.org"}]),
             "callers[1].id: identity 'svc.example.org' has no type; write it as "
             "dns:svc.example.org (DNS SAN), cn:svc.example.org (subject CN) or a full URI"),
            (dict(env.default_policy(), admins=[ADMIN, "ops-admin"]),
             "admins[1]: identity 'ops-admin' has no type; write it as dns:ops-admin"),
            (env.default_policy(callers=[{"id": "DNS:svc.example.org"}]), "lower case"),
            (env.default_policy(callers=[{"id": "cn:ops/*"}]), "URI identities only"),
        ]
        for pol, words in cases:
            with self.subTest(words=words):
                path = env.write_policy(pol)
                rc, _, err = env.run([harness.signerd_path(), "--config", env.config_path],
                                     timeout_s=60)
                self.assertEqual(rc, 1, err)
                line = self.startup_failure(err)
                self.assertTrue(line["message"].startswith(path + ":"), line)
                self.assertIn(words, line["message"])
                rc, out, err = env.run([harness.signerd_path(), "check-policy", path])
                self.assertNotEqual(rc, 0, out)
                self.assertIn(words, err)
        # The migrated form starts.
        env.write_policy(env.default_policy(callers=[{"id": ISSUER_A},
                                                     {"id": "dns:svc.example.org"}]))
        env.start()
        rc, _, err = env.sign("dns-caller", {"sub": SUB, "aud": AUD})
        self.assertEqual(rc, EXIT_OK, err)
        self.assertEqual(env.stop(), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
