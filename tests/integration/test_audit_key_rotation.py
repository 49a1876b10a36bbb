#!/usr/bin/python3
"""test_audit_key_rotation.py - audit key rotation through a running jwt-signerd
(audit/FORMAT.md §5.4).

A real signer on a SoftHSM token: sign, rotate the audit key with
`jwt-sign admin rotate-audit-key`, sign more, restart the signer (it must
come back with the new key, from STATE_DIR/audit-key.json), sign more, stop.
Then `jwt-audit verify --pubkey <the ORIGINAL key> --checkpoint
checkpoint.json AUDIT_DIR` passes across the rotation and the restart,
following the key chain through the audit-key-ID.pem files the writer keeps;
the announcing checkpoint is signed by the old key (checked with openssl
over its §5.2 body) and names the new key's SPKI hash; audit-key.pem is the
new key. Without the new key's file the chain cannot be followed
(audit.key_unknown); starting from the new key fails (the old key's
checkpoints do not verify with it). A non-admin gets PERMISSION_DENIED and
the refusal is an audit record.
"""

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

ADMIN = "spiffe://example.org/ops/admin"
ISSUER_A = harness.CALLER_URIS["issuer-a"]
EXIT_OK, EXIT_DENIED = 0, 3


def reason_of(stderr):
    """The reason from jwt-sign's "jwt-sign: STATUS: reason: message" line."""
    line = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    parts = line.split(": ")
    return parts[2] if len(parts) >= 3 else None


def key_id(pem_path):
    """FORMAT.md §5.4: base64url(SHA-256(SPKI DER)), no padding, via openssl."""
    der = subprocess.run(["openssl", "pkey", "-pubin", "-in", pem_path, "-outform", "DER"],
                         check=True, capture_output=True, timeout=30).stdout
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")


def cp_body(cp):
    """The §5.2 signed body of a checkpoint record."""
    lines = ["jwt-signer-audit-checkpoint/v1", "origin " + cp["origin"], "seq %d" % cp["seq"],
             "tree_size %d" % cp["tree_size"], "root " + cp["root"], "head " + cp["prev"],
             "prev_checkpoint " + cp["prev_checkpoint"], "time " + cp["time"],
             "reason " + cp["reason"], "heartbeat_ms %d" % cp["heartbeat_ms"],
             "interval_ms %d" % cp["interval_ms"]]
    if "late_ms" in cp:
        lines.append("late_ms %d" % cp["late_ms"])
    if "late_why" in cp:
        lines += ["late_why " + cp["late_why"], "late_why_ms %d" % cp["late_why_ms"]]
    if "next_key" in cp:
        lines.append("next_key " + cp["next_key"])
    return ("\n".join(lines) + "\n").encode("ascii")


def openssl_verify(pem_path, body, sig_b64):
    """ES256 r||s (RFC 7518 §3.4) checked with openssl: True if it verifies."""
    raw = harness.b64url_decode(sig_b64)
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")

    def der_int(v):
        b = v.to_bytes((v.bit_length() + 8) // 8 or 1, "big")
        return b"\x02" + bytes([len(b)]) + b
    seq = der_int(r) + der_int(s)
    der = b"\x30" + bytes([len(seq)]) + seq
    with tempfile.TemporaryDirectory() as t:
        bp, sp = os.path.join(t, "body"), os.path.join(t, "sig")
        with open(bp, "wb") as f:
            f.write(body)
        with open(sp, "wb") as f:
            f.write(der)
        p = subprocess.run(["openssl", "dgst", "-sha256", "-verify", pem_path, "-signature", sp,
                            bp], capture_output=True, timeout=30)
        return p.returncode == 0


class AuditKeyRotation(unittest.TestCase):
    def setUp(self):
        self.env = harness.Env()
        self.t0 = time.monotonic()

    def tearDown(self):
        self.env.cleanup()
        sys.stderr.write("[%s: %.1f s] " % (self._testMethodName, time.monotonic() - self.t0))

    def sign_ok(self, n):
        for _ in range(n):
            rc, out, err = self.env.sign("issuer-a", self.env.sample_claims(), "--json")
            self.assertEqual(rc, EXIT_OK, err)

    def destroy_private_key(self, label):
        env = self.env
        rc, out, err = env.run(["pkcs11-tool", "--module", env.module, "--token-label",
                                env.token_label, "--login", "--pin", env.pin, "--delete-object",
                                "--type", "privkey", "--label", label], timeout_s=60)
        self.assertEqual(rc, 0, out + err)

    def verify(self, *args):
        env = self.env
        d = env.audit_dir()
        return env.run([harness.audit_path(), "verify"] + list(args) + [d], timeout_s=120)

    def records(self):
        rc, out, err = self.env.run([harness.audit_path(), "show", "--json"]
                                    + self.env.audit_segments(), timeout_s=60)
        self.assertEqual(rc, 0, err)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def test_rotate_restart_verify(self):
        env = self.env
        env.setup(audit={"dir": "audit", "key_label": env.audit_key_label,
                         "checkpoint_interval": "1s", "heartbeat": "1s"})
        env.add_caller("admin", ADMIN)
        env.start()
        d = env.audit_dir()
        first = os.path.join(env.dir, "first-audit-key.pem")
        shutil.copyfile(os.path.join(d, "audit-key.pem"), first)
        old_id = key_id(first)
        self.sign_ok(3)

        # A non-admin is refused, and nothing rotates.
        rc, out, err = env.run_sign("issuer-a", "admin", "rotate-audit-key", "--reason", "no")
        self.assertEqual((rc, out), (EXIT_DENIED, ""), err)
        self.assertEqual(reason_of(err), "admin.not_admin", err)

        rc, out, err = env.run_sign("admin", "admin", "rotate-audit-key", "--reason", "drill")
        self.assertEqual(rc, EXIT_OK, err)
        res = json.loads(out)
        self.assertEqual(res["label"], env.audit_key_label + "-2", res)
        new_id = res["key_id"]
        self.assertNotEqual(new_id, old_id)
        # audit-key.pem is the new key; both are kept by id.
        self.assertEqual(key_id(os.path.join(d, "audit-key.pem")), new_id)
        self.assertTrue(os.path.exists(os.path.join(d, "audit-key-%s.pem" % old_id)))
        self.assertTrue(os.path.exists(os.path.join(d, "audit-key-%s.pem" % new_id)))
        self.sign_ok(3)
        time.sleep(1.5)  # a heartbeat signed by the new key

        # The rotated-out key destroyed in the HSM (what an operator does
        # with a key that leaked): /healthz's probe signs with the key in
        # force, so the HSM stays healthy (it called itself unhealthy for
        # good when the probe kept the start-up key).
        self.destroy_private_key(env.audit_key_label)
        end = time.monotonic() + harness.timeout(3.5)
        while time.monotonic() < end:
            status, _, body = env.http_get("/healthz")
            self.assertEqual(status, 200, body)
            time.sleep(0.25)
        self.sign_ok(1)

        env.stop()
        env.start()
        self.sign_ok(3)
        env.stop()
        with open(os.path.join(os.path.dirname(env.config_path), "state",
                               "audit-key.json")) as f:
            self.assertEqual(json.load(f)["label"], res["label"])

        rc, out, err = self.verify("--pubkey", first, "--checkpoint",
                                   os.path.join(d, "checkpoint.json"))
        self.assertEqual(rc, 0, out + err)
        self.assertIn("audit key rotations followed: 1", out)
        self.assertIn("1 writer restarts", out)

        # The announcing checkpoint: signed by the old key, naming the new one;
        # every checkpoint after it verifies with the new key only.
        recs = self.records()
        cps = [r for r in recs if r.get("type") == "checkpoint"]
        ann = [i for i, c in enumerate(cps) if "next_key" in c]
        self.assertEqual(len(ann), 1, cps)
        a = cps[ann[0]]
        self.assertEqual(a["next_key"], new_id)
        new_pem = os.path.join(d, "audit-key-%s.pem" % new_id)
        self.assertTrue(openssl_verify(first, cp_body(a), a["sig"]))
        self.assertFalse(openssl_verify(new_pem, cp_body(a), a["sig"]))
        after = cps[ann[0] + 1:]
        self.assertGreaterEqual(len(after), 2)
        self.assertTrue(any(c["reason"] == "open" for c in after))
        for c in after:
            self.assertTrue(openssl_verify(new_pem, cp_body(c), c["sig"]), c)
        # The rotation and the refusal are admin records.
        admins = [(r.get("caller"), r.get("decision")) for r in recs if r.get("type") == "admin"]
        self.assertIn((ADMIN, "allow"), admins)
        self.assertIn((ISSUER_A, "deny"), admins)

        # Without the new key's file the announced key is unknown; from the
        # new key, the old key's checkpoints fail.
        os.rename(new_pem, new_pem + ".moved")
        rc, out, err = self.verify("--pubkey", first)
        self.assertEqual(rc, 1, out + err)
        self.assertIn("audit.key_unknown", out)
        rc, out, err = self.verify("--pubkey", first, "--keys", new_pem + ".moved")
        self.assertEqual(rc, 0, out + err)
        rc, out, err = self.verify("--pubkey", new_pem + ".moved")
        self.assertEqual(rc, 1, out + err)
        self.assertIn("audit.bad_signature", out)

    def start_with_shim(self):
        """A signer on the p11shim (forwarding to SoftHSM), an admin caller, two
        tokens signed: (env, the daemon's shim environment, a copy of the first
        audit key, the path of state/audit-key.json)."""
        shim = os.environ.get("JS_P11SHIM")
        if not shim:
            raise unittest.SkipTest("JS_P11SHIM not set (ctest sets it to the built p11shim)")
        env = self.env
        self.ctl = env.path("p11shim.ctl")
        shim_env = {"JS_P11SHIM_MODULE": harness.softhsm_module(), "JS_P11SHIM_CONTROL": self.ctl}
        for k, v in shim_env.items():  # keygen in setup loads the shim too
            old = os.environ.get(k)
            self.addCleanup(lambda k=k, old=old: os.environ.pop(k, None) if old is None
                            else os.environ.__setitem__(k, old))
            os.environ[k] = v
        env.setup(module=shim, audit={"dir": "audit", "key_label": env.audit_key_label,
                                      "checkpoint_interval": "1s", "heartbeat": "1s"})
        env.add_caller("admin", ADMIN)
        env.start(env=shim_env)
        first = os.path.join(env.dir, "first-audit-key.pem")
        shutil.copyfile(os.path.join(env.audit_dir(), "audit-key.pem"), first)
        self.sign_ok(2)
        state = os.path.join(os.path.dirname(env.config_path), "state", "audit-key.json")
        self.assertFalse(os.path.exists(state))
        return env, shim_env, first, state

    def shim_control(self, text):
        with open(self.ctl + ".tmp", "w", encoding="ascii") as f:
            f.write(text)
        os.replace(self.ctl + ".tmp", self.ctl)  # a new inode: the shim re-reads it

    def rotate_pending(self):
        """rotate-audit-key while every C_Sign (checkpoints, the health probe)
        is held 11 s: UNAVAILABLE audit.rotate_pending; the hold is lifted at
        once (calls already held finish after their 11 s)."""
        self.shim_control("hang C_Sign 11000 1000\n")
        try:
            rc, out, err = self.env.run_sign("admin", "--timeout-ms", "60000", "admin",
                                             "rotate-audit-key", "--reason", "slow hsm",
                                             timeout_s=90)
        finally:
            self.shim_control("ok\n")
        self.assertEqual(rc, 5, out + err)  # UNAVAILABLE
        self.assertEqual(reason_of(err), "audit.rotate_pending", err)

    def test_state_save_retried(self):
        """state/audit-key.json cannot be written (a directory stands in its
        place, which even root cannot rename a file over): the rotation still
        answers OK with its label (the key is in force), audit_key_rotated
        says state_saved false, audit_key_state_failed is logged once, and
        the save is retried until it succeeds once the obstacle is gone."""
        env = self.env
        env.setup(audit={"dir": "audit", "key_label": env.audit_key_label,
                         "checkpoint_interval": "1s", "heartbeat": "1s"})
        env.add_caller("admin", ADMIN)
        env.start()
        state = os.path.join(os.path.dirname(env.config_path), "state", "audit-key.json")
        os.makedirs(os.path.join(state, "blocker"))
        rc, out, err = env.run_sign("admin", "admin", "rotate-audit-key", "--reason", "drill")
        self.assertEqual(rc, EXIT_OK, err)
        label = env.audit_key_label + "-2"
        self.assertEqual(json.loads(out)["label"], label)
        line = env.wait_log("audit_key_rotated")
        self.assertIs(line.get("state_saved"), False, line)
        failed = env.wait_log("audit_key_state_failed")
        self.assertEqual(failed.get("label"), label, failed)
        self.sign_ok(1)
        time.sleep(1.5)  # retries meanwhile: one error line, not one a second
        self.assertEqual(len(env.logs("audit_key_state_failed")), 1)
        shutil.rmtree(state)
        saved = env.wait_log("audit_key_state_saved", timeout_s=10)
        self.assertEqual(saved.get("label"), label, saved)
        with open(state) as f:
            self.assertEqual(json.load(f), {"label": label, "generation": 2})
        env.stop()
        env.start()  # with the new key
        self.sign_ok(1)

    def test_pending_rotation_at_stop(self):
        """A pending rotation made durable during the stop (SIGTERM right after
        the UNAVAILABLE answer, while the announcing checkpoint is still held)
        is finished at stop: state/audit-key.json names it and the restart
        comes up (before, it restarted with the old key and was refused)."""
        env, shim_env, first, state = self.start_with_shim()
        self.rotate_pending()
        env.stop()
        label = env.audit_key_label + "-2"
        lines = [o for o in env.logs("audit_key_rotated") if o.get("label") == label]
        self.assertEqual(len(lines), 1, env.logs("audit_key_rotated"))
        self.assertIs(lines[0].get("after_pending"), True, lines[0])
        with open(state) as f:
            self.assertEqual(json.load(f), {"label": label, "generation": 2})
        env.start(env=shim_env)
        self.sign_ok(1)
        env.stop()
        rc, out, err = self.verify("--pubkey", first, "--checkpoint",
                                   os.path.join(env.audit_dir(), "checkpoint.json"))
        self.assertEqual(rc, 0, out + err)
        self.assertIn("audit key rotations followed: 1", out)

    def test_pending_rotation_finishes(self):
        """A rotation whose announcing checkpoint is not durable within the
        Admin call's 10 s (the HSM holds C_Sign 11 s) answers UNAVAILABLE
        audit.rotate_pending; when the writer makes it durable later, the
        signer takes the new key as its own: state/audit-key.json names it
        (before, it kept the old label, so a restart was refused with "audit
        log damaged": the log's last checkpoint was signed by the new key),
        /healthz probes with it, and a restart comes up and verifies."""
        env, shim_env, first, state = self.start_with_shim()
        d = env.audit_dir()
        self.rotate_pending()
        label = env.audit_key_label + "-2"
        line = env.wait_log(lambda o: o.get("event") == "audit_key_rotated", timeout_s=60)
        self.assertEqual(line.get("label"), label, line)
        self.assertIs(line.get("after_pending"), True, line)
        self.assertEqual(line.get("by"), ADMIN, line)
        self.assertIs(line.get("state_saved"), True, line)
        with open(state) as f:
            self.assertEqual(json.load(f), {"label": label, "generation": 2})
        new_id = line["key_id"]
        self.assertEqual(key_id(os.path.join(d, "audit-key.pem")), new_id)
        # The probe signs with the new key: destroying the old one leaves the
        # HSM healthy once the held probe is over.
        self.destroy_private_key(env.audit_key_label)
        end = time.monotonic() + harness.timeout(30)
        status = None
        while time.monotonic() < end:
            status, _, body = env.http_get("/healthz")
            if status == 200:
                break
            time.sleep(0.25)
        self.assertEqual(status, 200, body)
        self.sign_ok(2)
        # A second rotation, on time, after the late one: counted in order.
        rc, out, err = env.run_sign("admin", "admin", "rotate-audit-key", "--reason", "again")
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(json.loads(out)["label"], env.audit_key_label + "-3")
        line = env.wait_log(lambda o: o.get("event") == "audit_key_rotated"
                            and o.get("label") == env.audit_key_label + "-3")
        self.assertIs(line.get("after_pending"), False, line)
        with open(state) as f:
            self.assertEqual(json.load(f)["generation"], 3)

        env.stop()
        env.start(env=shim_env)  # with the old label it was refused here
        self.sign_ok(1)
        env.stop()
        rc, out, err = self.verify("--pubkey", first, "--checkpoint",
                                   os.path.join(d, "checkpoint.json"))
        self.assertEqual(rc, 0, out + err)
        self.assertIn("audit key rotations followed: 2", out)


if __name__ == "__main__":
    unittest.main(verbosity=2)
