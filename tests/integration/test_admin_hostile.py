#!/usr/bin/python3
"""test_admin_hostile.py - hostile input to the Admin and Signer services of a
running jwt-signerd, and its control-plane defects.

1. NUL inside protobuf strings (signer/rpc/pbcheck.h): SignJwt key "<key>\\0../x"
   and "\\0<key>", request_id "ok\\0\\nINJECT", FreezeCaller identity
   "spiffe://.../intruder\\0garbage", RotateKey key and RevokeKey kid with a
   NUL -> INVALID_ARGUMENT (request.nul) naming the field; nothing is signed,
   frozen or rotated. Bytes are sent raw (rawgrpc.py): protobuf encoders
   cannot produce them from C strings.
2. Unicode Cc and Cf in admin text (lib/base/text.h): a C1 control or a bidi
   override in the FreezeCaller identity or reason, the incident reason, the
   RotateKey reason -> INVALID_ARGUMENT with reason request.<field> and the
   code point; an untyped identity ("intruder") -> INVALID_ARGUMENT saying
   how to write it (dns:, cn: or a full URI).
3. ReloadPolicy of a broken policy file -> FAILED_PRECONDITION with FILE:LINE
   and the loader's whole reason; the old policy stays in force.
4. Revoke with no successor, then rotate: signing works at once with the new
   kid (default 5-minute pre-publication notwithstanding); the audit records
   of the rotation say emergency, with a note.
5. jwt-sign prints a hint when the TLS handshake fails (wrong --ca, a client
   certificate the signer does not trust, a host name not in the server
   certificate).

Programs: the harness's (JS_SIGNERD, JS_SIGN) and JS_AUDIT (jwt-audit).
Needs python3-grpcio and python3-cryptography from Debian.
"""

import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import rawgrpc  # noqa: E402

KEY = harness.DEFAULT_KEY["name"]
ADMIN = "spiffe://example.org/ops/admin"
INTRUDER = harness.CALLER_URIS["intruder"]
EXIT_OK, EXIT_UNAVAILABLE = 0, 5

ADMIN_SVC = "/jwtsigner.v1.Admin/"


# --- protobuf encoding of the Admin requests (proto/jwtsigner/v1/signer.proto) ----------
def _str(num, data):
    return rawgrpc._field_bytes(num, data)  # pylint: disable=protected-access


def rotate_request(key, reason=b""):
    return _str(1, key) + (_str(2, reason) if reason else b"")


def revoke_request(key, kid, reason=b""):
    return _str(1, key) + _str(2, kid) + (_str(3, reason) if reason else b"")


def incident_request(on, reason=b""):
    return (b"\x08\x01" if on else b"") + (_str(2, reason) if reason else b"")


def freeze_request(identity, reason=b""):
    return _str(1, identity) + (_str(2, reason) if reason else b"")


def read_str_fields(data):
    """{field number: bytes} of the length-delimited fields of a response; varints as ints."""
    out, i = {}, 0
    while i < len(data):
        tag, i = _varint_at(data, i)
        num, wt = tag >> 3, tag & 7
        if wt == 2:
            n, i = _varint_at(data, i)
            out[num] = data[i:i + n]
            i += n
        elif wt == 0:
            out[num], i = _varint_at(data, i)
        else:
            raise AssertionError("unexpected wire type %d" % wt)
    return out


def _varint_at(data, i):
    shift = value = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def audit_records(env):
    rc, out, err = env.run([harness.audit_path(), "show", "--json"] + env.audit_segments(),
                           timeout_s=60)
    if rc != 0:
        raise AssertionError("jwt-audit show failed (%d): %s" % (rc, err))
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def detail_of(rec):
    d = rec.get("detail")
    if isinstance(d, str):
        d = json.loads(d)
    return d or {}


class AdminHostileCase(unittest.TestCase):
    def setUp(self):
        self.env = harness.Env()
        self.t0 = time.monotonic()
        env = self.env
        env.setup()
        env.add_caller("admin", ADMIN)
        env.start()
        ca, cert, key = env.caller_files("admin")
        self.admin_ch = rawgrpc.channel(env.port, ca, cert, key)
        ca, cert, key = env.caller_files("issuer-a")
        self.issuer_ch = rawgrpc.channel(env.port, ca, cert, key)

    def tearDown(self):
        self.admin_ch.close()
        self.issuer_ch.close()
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
    def admin_call(self, method, payload):
        return rawgrpc.call(self.admin_ch, ADMIN_SVC + method, payload)

    def sign_raw(self, key=b"", request_id=b""):
        claims = json.dumps(self.env.sample_claims()).encode()
        return rawgrpc.call(self.issuer_ch, rawgrpc.SIGN,
                            rawgrpc.sign_request(claims, key=key, request_id=request_id))

    def assert_refused(self, result, code, reason, *parts):
        got_code, details, resp = result
        self.assertEqual(got_code, code, details)
        self.assertIsNone(resp)
        self.assertTrue(details.startswith(reason + ": "), details)
        for p in parts:
            self.assertIn(p, details)
        return details

    def status(self):
        code, details, resp = self.admin_call("GetStatus", b"")
        self.assertEqual(code, "OK", details)
        return json.loads(read_str_fields(resp)[1])

    def active_kid(self):
        for v in self.status()["keys"][0]["versions"]:
            if v["state"] == "active":
                return v["kid"]
        return None

    # --- 1. NUL inside protobuf strings ----------------------------------------------
    def test_nul_in_strings(self):
        env = self.env
        # Control-plane requests: control.c checks them itself (js_pb_unpack).
        self.assert_refused(self.admin_call("RotateKey", rotate_request(KEY.encode() + b"\0x")),
                            "INVALID_ARGUMENT", "request.nul",
                            "RotateKeyRequest.key contains a NUL byte at offset %d" % len(KEY))
        kid = self.active_kid()
        self.assert_refused(
            self.admin_call("RevokeKey", revoke_request(KEY.encode(), kid.encode() + b"\0junk")),
            "INVALID_ARGUMENT", "request.nul",
            "RevokeKeyRequest.kid contains a NUL byte at offset %d" % len(kid))
        self.assertEqual(self.active_kid(), kid, "nothing was revoked")
        self.assertEqual(len(self.status()["keys"][0]["versions"]), 1, "nothing was rotated")

        # Requests decoded by server.c: these wait on the pbcheck call there.
        self.assert_refused(self.sign_raw(key=KEY.encode() + b"\0../x"), "INVALID_ARGUMENT",
                            "request.nul",
                            "SignJwtRequest.key contains a NUL byte at offset %d" % len(KEY))
        self.assert_refused(self.sign_raw(key=b"\0" + KEY.encode()), "INVALID_ARGUMENT",
                            "request.nul", "SignJwtRequest.key contains a NUL byte at offset 0")
        self.assert_refused(self.sign_raw(request_id=b"ok\0\nINJECT"), "INVALID_ARGUMENT",
                            "request.nul",
                            "SignJwtRequest.request_id contains a NUL byte at offset 2")
        self.assert_refused(
            self.admin_call("FreezeCaller", freeze_request(INTRUDER.encode() + b"\0garbage")),
            "INVALID_ARGUMENT", "request.nul",
            "FreezeCallerRequest.identity contains a NUL byte at offset %d" % len(INTRUDER))
        self.assertEqual(self.status()["frozen"], {}, "nothing was frozen")
        # The request_id never reached a log line.
        self.assertFalse([line for line in env.daemon.stderr_lines() if "INJECT" in line])
        # A clean request still signs.
        code, details, _ = self.sign_raw(key=KEY.encode(), request_id=b"ok-1")
        self.assertEqual(code, "OK", details)

    # --- 2. Cc/Cf in admin text, typed FreezeCaller identity -------------------------
    def test_control_and_format_characters(self):
        cases = [
            ("FreezeCaller", freeze_request("spiffe://example.org/intr\u0085uder".encode()),
             "request.identity", "U+0085"),
            ("FreezeCaller", freeze_request("spiffe://example.org/issuer\u202ea".encode()),
             "request.identity", "U+202E"),
            ("FreezeCaller", freeze_request(INTRUDER.encode(), "looks\u2066fine".encode()),
             "request.reason", "U+2066"),
            ("SetIncidentMode", incident_request(True, "ok\u200f".encode()), "request.reason",
             "U+200F"),
            ("SetIncidentMode", incident_request(True, "log\nforged".encode()), "request.reason",
             "U+000A"),
            ("RotateKey", rotate_request(KEY.encode(), "zero\u200bwidth".encode()),
             "request.reason", "U+200B"),
            ("RevokeKey", revoke_request(KEY.encode(), b"kid", "\ufeffbom".encode()),
             "request.reason", "U+FEFF"),
        ]
        for method, payload, reason, cp in cases:
            with self.subTest(method=method, reason=reason, cp=cp):
                self.assert_refused(self.admin_call(method, payload), "INVALID_ARGUMENT", reason,
                                    cp)
        st = self.status()
        self.assertEqual(st["frozen"], {})
        self.assertFalse(st["incident_mode"])
        self.assertEqual(len(st["keys"][0]["versions"]), 1)

        # An identity without its type can never match a caller: refused, with how to write it.
        details = self.assert_refused(self.admin_call("FreezeCaller", freeze_request(b"intruder")),
                                      "INVALID_ARGUMENT", "identity.ambiguous", "dns:intruder",
                                      "cn:intruder")
        self.assertIn("URI", details)
        # Typed identities are accepted, and unfreezing works.
        for ident in (INTRUDER, "dns:svc.example.org", "cn:legacy-batch"):
            code, details, resp = self.admin_call("FreezeCaller", freeze_request(ident.encode()))
            self.assertEqual(code, "OK", details)
            self.assertEqual(read_str_fields(resp)[1].decode(), ident)
        self.assertEqual(sorted(self.status()["frozen"]),
                         sorted([INTRUDER, "dns:svc.example.org", "cn:legacy-batch"]))
        code, details, _ = self.admin_call("UnfreezeCaller", freeze_request(INTRUDER.encode()))
        self.assertEqual(code, "OK", details)
        self.assertNotIn(INTRUDER, self.status()["frozen"])

    def test_untyped_frozen_entry_migrated(self):
        """A bare name frozen before typed identities stays frozen: it becomes the
        dns: and cn: identities it used to match (never silently unfrozen)."""
        env = self.env
        self.assertEqual(env.stop(), 0)
        path = env.path("state", "runtime.json")
        rt = {"incident": False, "frozen": {}}  # absent until the first change
        rt["frozen"]["Legacy-Batch.example"] = {"by": "old", "reason": "compromised", "at": 1}
        rt["frozen"][INTRUDER] = {"by": "old", "reason": "", "at": 1}
        with open(path, "w", encoding="utf-8") as f:
            json.dump(rt, f)
        env.start()
        self.admin_ch.close()
        ca, cert, key = env.caller_files("admin")
        self.admin_ch = rawgrpc.channel(env.port, ca, cert, key)
        frozen = self.status()["frozen"]
        self.assertEqual(sorted(frozen), sorted(["dns:legacy-batch.example",
                                                 "cn:Legacy-Batch.example", INTRUDER]))
        self.assertEqual(frozen["cn:Legacy-Batch.example"]["reason"], "compromised")
        self.assertTrue(env.logs("frozen_entry_migrated"))
        # Saved: a restart finds the typed entries.
        with open(path, encoding="utf-8") as f:
            self.assertNotIn("Legacy-Batch.example", json.load(f)["frozen"])

    # --- 3. ReloadPolicy of a broken file ----------------------------------------------
    def test_reload_broken_policy(self):
        env = self.env
        policy_path = env.path("policy.yaml")
        with open(policy_path, encoding="utf-8") as f:
            good = f.read()
        lines = good.rstrip("\n").split("\n")
        # An unknown member inside the first caller entry, on a known line.
        idx = next(i for i, line in enumerate(lines) if line.strip().startswith("- id:"))
        indent = lines[idx][:len(lines[idx]) - len(lines[idx].lstrip())] + "  "
        lines.insert(idx + 1, indent + "incident_rate_typo_with_a_rather_long_name: 5")
        bad_line = idx + 2  # 1-based
        with open(policy_path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")

        code, details, resp = self.admin_call("ReloadPolicy", b"")
        self.assertEqual(code, "FAILED_PRECONDITION", details)
        self.assertIsNone(resp)
        self.assertIn("policy.yaml:%d" % bad_line, details)
        self.assertIn("incident_rate_typo_with_a_rather_long_name", details)
        self.assertIn("unchanged", details)
        self.assertTrue(details.startswith("policy.unknown_key: "), details)
        sys.stderr.write("\nReloadPolicy refusal: %s\n" % details)
        refusal = details
        # The old policy is still in force.
        code, details, _ = self.sign_raw(key=KEY.encode())
        self.assertEqual(code, "OK", details)
        # And a fixed file reloads.
        with open(policy_path, "w", encoding="utf-8") as f:
            f.write(good)
        code, details, _ = self.admin_call("ReloadPolicy", b"")
        self.assertEqual(code, "OK", details)
        # Never cut mid-word; and the whole reason, up to the list's end (")"),
        # once messages have room for it (err.h JS_MSG_MAX).
        self.assertRegex(refusal, r"(\)| \.\.\.)$")
        self.assertTrue(refusal.endswith(")"), refusal)

    # --- 4. revoke with no successor, then rotate = emergency activation -------------
    def test_emergency_rotation(self):
        env = self.env
        kid1 = self.active_kid()
        code, details, resp = self.admin_call(
            "RevokeKey", revoke_request(KEY.encode(), kid1.encode(), b"leaked"))
        self.assertEqual(code, "OK", details)
        self.assertEqual(read_str_fields(resp).get(4, b""), b"", "no active version is left")

        rc, out, err = env.sign("issuer-a", env.sample_claims())
        self.assertEqual(rc, EXIT_UNAVAILABLE, err)
        self.assertIn("key.no_active", err)
        no_active_msg = err

        t_rotate = time.time()
        code, details, resp = self.admin_call("RotateKey",
                                              rotate_request(KEY.encode(), b"after the leak"))
        self.assertEqual(code, "OK", details)
        f = read_str_fields(resp)
        kid2 = f[3].decode()
        self.assertNotEqual(kid2, kid1)
        # Active now, not after the 5-minute default pre-publication.
        self.assertLessEqual(f.get(4, 0), int(t_rotate) + 2, f)

        # Signing works at once, with the new kid: no polling.
        rc, out, err = env.sign("issuer-a", env.sample_claims(), "--json")
        self.assertEqual(rc, EXIT_OK, err)
        self.assertEqual(json.loads(out)["kid"], kid2)
        self.assertEqual(self.active_kid(), kid2)

        # An ordinary rotation after it waits out its pre-publication again.
        code, details, resp = self.admin_call("RotateKey", rotate_request(KEY.encode()))
        self.assertEqual(code, "OK", details)
        self.assertGreater(read_str_fields(resp)[4], int(time.time()) + 60)
        self.assertEqual(self.active_kid(), kid2)

        self.assertEqual(env.stop(), 0)
        recs = audit_records(env)
        rotations = [detail_of(r) for r in recs
                     if r.get("type") == "admin" and detail_of(r).get("action") == "rotate"
                     and r.get("decision") == "allow"]
        if not rotations:  # the action's name in the record, whatever it is
            rotations = [detail_of(r) for r in recs if r.get("type") == "admin"
                         and "kid" in detail_of(r) and "version" in detail_of(r)]
        self.assertEqual(len(rotations), 2, recs)
        self.assertIs(rotations[0].get("emergency"), True, rotations[0])
        self.assertIn("verifiers", rotations[0].get("note", ""))
        self.assertIs(rotations[1].get("emergency"), False, rotations[1])
        keyrecs = [detail_of(r) for r in recs if r.get("type") == "key"
                   and detail_of(r).get("kid") == kid2]
        self.assertTrue(any(d.get("to") == "active" and d.get("emergency") is True
                            for d in keyrecs), keyrecs)
        # The UNAVAILABLE refusal said what to do (its text is service.c's).
        self.assertIn("RotateKey", no_active_msg)

    # --- 5. jwt-sign hints on TLS handshake failures -----------------------------------
    def test_jwt_sign_tls_hints(self):
        env = self.env
        pki = env.pki_dir
        ca, cert, key = env.caller_files("issuer-a")

        def run(target=None, ca_=ca, cert_=cert, key_=key):
            argv = [harness.sign_path(), "--target", target or "localhost:%d" % env.port,
                    "--ca", ca_, "--cert", cert_, "--key", key_, "jwks"]
            rc, out, err = env.run(argv)
            self.assertEqual((rc, out), (EXIT_UNAVAILABLE, ""), err)
            lines = err.strip().splitlines()
            self.assertTrue(lines[0].startswith("jwt-sign: UNAVAILABLE: "), err)
            hints = [line for line in lines if line.startswith("jwt-sign: hint: ")]
            self.assertEqual(len(hints), 1, err)
            return hints[0]

        self.assertIn("--ca", run(ca_=os.path.join(pki, "other-ca.crt")))
        # A client certificate from a CA the signer does not trust for clients.
        h = run(cert_=os.path.join(pki, "stranger.crt"), key_=os.path.join(pki, "stranger.key"))
        self.assertIn("client certificate", h)
        # A server certificate has no clientAuth: the signer refuses it the same way.
        self.assertIn("client certificate",
                      run(cert_=os.path.join(pki, "server.crt"),
                          key_=os.path.join(pki, "server.key")))
        # 127.1 reaches the signer but is not a name in its certificate.
        self.assertIn("host name", run(target="127.1:%d" % env.port))
        # A refusal by the signer itself carries no hint.
        rc, out, err = env.run_sign("intruder", "sign", json.dumps(env.sample_claims()))
        self.assertNotEqual(rc, EXIT_OK)
        self.assertNotIn("hint:", err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
