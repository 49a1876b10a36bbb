#!/usr/bin/python3
"""test_audit_stall.py - a stopped signer is a stall, not tampering.

A real jwt-signerd (SoftHSM token, real PKI, loopback) with checkpoint interval
and heartbeat 1 s signs a few tokens a second; it is stopped with SIGSTOP for
6 s (what a VM pause, swap or a long fsync does to it), continued, signs a
little more and is stopped cleanly. The log then has two checkpoints about
6 s apart -- over the verifier's 3 s limit (2 x 1 s + 1 s) -- and the later
one says, signed, that it is late (late_ms, late_why "stalled"). Required
(audit/FORMAT.md §5.1, §5.2, §7 rule 5): `jwt-audit verify --pubkey
--checkpoint` exits 0 and reports the stall and the largest gap; the
signature over the late members verifies independently (openssl); the same
log against a --max-gap below the ordinary heartbeat spacing fails as an
unexplained gap; a generous --max-gap reports no stall.

Programs: the harness's (JS_SIGNERD, JS_SIGN), plus JS_AUDIT (jwt-audit).
"""

import base64
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

SUB = harness.SAMPLE_SUB
AUD = harness.SAMPLE_AUD
STOP_S = 6.0
SIGNS_BEFORE = 8  # bounded load: a few signs a second, before and after the stop
SIGNS_AFTER = 6


def run_audit(env, *args, timeout_s=120):
    return env.run([harness.audit_path()] + list(args), timeout_s=timeout_s)


def verify(env, *extra):
    d = env.audit_dir()
    rc, out, err = run_audit(env, "verify", "--pubkey", os.path.join(d, "audit-key.pem"),
                             "--checkpoint", os.path.join(d, "checkpoint.json"), *extra,
                             *env.audit_segments())
    return rc, out + err


def checkpoints(env):
    rc, out, err = run_audit(env, "show", "--json", *env.audit_segments())
    if rc != 0:
        raise AssertionError("jwt-audit show: %s" % err)
    recs = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [r for r in recs if r.get("type") == "checkpoint"]


def _der_int(b):
    b = b.lstrip(b"\x00") or b"\x00"
    if b[0] & 0x80:
        b = b"\x00" + b
    return b"\x02" + bytes([len(b)]) + b


def signed_body(cp):
    """audit/FORMAT.md §5.2, rebuilt from the spec (not from checkpoint.c)."""
    lines = ["jwt-signer-audit-checkpoint/v1", "origin " + cp["origin"], "seq %d" % cp["seq"],
             "tree_size %d" % cp["tree_size"], "root " + cp["root"], "head " + cp["prev"],
             "prev_checkpoint " + cp["prev_checkpoint"], "time " + cp["time"],
             "reason " + cp["reason"], "heartbeat_ms %d" % cp["heartbeat_ms"],
             "interval_ms %d" % cp["interval_ms"]]
    if "late_ms" in cp:
        lines.append("late_ms %d" % cp["late_ms"])
    if "late_why" in cp:
        lines += ["late_why " + cp["late_why"], "late_why_ms %d" % cp["late_why_ms"]]
    return ("\n".join(lines) + "\n").encode("ascii")


def es256_verify(pubkey_pem, body, sig_b64url):
    sig = base64.urlsafe_b64decode(sig_b64url + "=" * (-len(sig_b64url) % 4))
    if len(sig) != 64:
        return False
    seq = _der_int(sig[:32]) + _der_int(sig[32:])
    der = b"\x30" + bytes([len(seq)]) + seq
    with tempfile.TemporaryDirectory() as d:
        body_path, sig_path = os.path.join(d, "body"), os.path.join(d, "sig")
        with open(body_path, "wb") as f:
            f.write(body)
        with open(sig_path, "wb") as f:
            f.write(der)
        p = subprocess.run(["openssl", "dgst", "-sha256", "-verify", pubkey_pem, "-signature",
                            sig_path, body_path], capture_output=True, timeout=60)
        return p.returncode == 0


class StallCase(unittest.TestCase):
    def setUp(self):
        self.env = harness.Env()

    def tearDown(self):
        d = self.env.daemon
        if d is not None and d.running():
            try:
                os.kill(d.pid, signal.SIGCONT)  # never leave a stopped process behind
            except ProcessLookupError:
                pass
        self.env.cleanup()

    def _sign_some(self, n, tag):
        for i in range(n):
            rc, out, err = self.env.sign("issuer-a", {"sub": SUB, "aud": AUD},
                                         "--request-id", "%s-%d" % (tag, i))
            self.assertEqual(rc, 0, err)
            time.sleep(0.2)

    def test_sigstop_is_a_reported_stall(self):
        env = self.env
        env.setup(audit={"dir": "audit", "key_label": env.audit_key_label,
                         "checkpoint_interval": "1s", "heartbeat": "1s"})
        env.start()
        self._sign_some(SIGNS_BEFORE, "before")
        time.sleep(0.3)
        os.kill(env.daemon.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        time.sleep(STOP_S)
        os.kill(env.daemon.pid, signal.SIGCONT)
        stopped_for = time.monotonic() - stopped_at
        self._sign_some(SIGNS_AFTER, "after")
        self.assertEqual(env.stop(), 0)

        # The writer's own evidence: one checkpoint late by about the stop,
        # because the process did not run, and signed over §5.2.
        cps = checkpoints(env)
        late = [c for c in cps if c.get("late_ms", 0) >= (STOP_S - 2) * 1000]
        self.assertEqual(len(late), 1, [c for c in cps if "late_ms" in c])
        cp = late[0]
        self.assertLessEqual(cp["late_ms"], (stopped_for + 2) * 1000, cp)
        self.assertEqual(cp.get("late_why"), "stalled", cp)
        self.assertGreaterEqual(cp["late_why_ms"], (STOP_S - 2) * 1000, cp)
        pem = os.path.join(env.audit_dir(), "audit-key.pem")
        self.assertTrue(es256_verify(pem, signed_body(cp), cp["sig"]),
                        "the late checkpoint's signature does not cover its late members")
        # Members in the §5.1 order: late_* between interval_ms and sig.
        keys = list(cp.keys())
        self.assertEqual(keys[keys.index("interval_ms") + 1:keys.index("sig")],
                         ["late_ms", "late_why", "late_why_ms"])

        # jwt-audit: intact (exit 0), the stall and the largest gap reported.
        rc, out = verify(env)
        self.assertEqual(rc, 0, out)
        self.assertIn("OK: log intact", out)
        self.assertIn("signatures: checked", out)
        m = re.search(r"largest gap between checkpoints: (\d+) ms \(before checkpoint seq (\d+)\)",
                      out)
        self.assertIsNotNone(m, out)
        self.assertGreaterEqual(int(m.group(1)), (STOP_S - 0.5) * 1000, out)
        self.assertLessEqual(int(m.group(1)), (stopped_for + 3) * 1000, out)
        self.assertEqual(int(m.group(2)), cp["seq"], out)
        # At least the SIGSTOP (a loaded machine may add honest smaller ones).
        self.assertRegex(out, r"  stalls: [1-9]\d* \(")
        self.assertRegex(out, r"stall: checkpoints \d+ -> %d: gap \d+ ms, late_ms %d, "
                              r"late_why stalled \(\d+ ms\)" % (cp["seq"], cp["late_ms"]))

        # The tolerated gap is an option: a generous one sees no stall; one
        # below the ordinary 1 s spacing leaves on-time gaps unexplained.
        rc, out = verify(env, "--max-gap", "30s")
        self.assertEqual(rc, 0, out)
        self.assertNotIn("stalls:", out)
        rc, out = verify(env, "--max-gap", "500ms")
        self.assertEqual(rc, 1, out)
        self.assertIn("audit.gap", out)
        self.assertIn("UNEXPLAINED GAP", out)
        rc, out = verify(env, "--max-gap", "soon")
        self.assertEqual(rc, 2, out)


if __name__ == "__main__":
    unittest.main()
