"""test_hsm_fault.py - a running jwt-signerd heals from HSM faults without a restart.

The signer's hsm.module is tests/p11shim (a PKCS#11 module that forwards to the
real SoftHSM token and fails on command through a control file). A client signs
continuously with jwt-sign while, one after another:
  1. every session and object handle dies at once ("invalidate"),
  2. the token is gone for 2.5 s: every call fails with CKR_DEVICE_REMOVED,
  3. the SoftHSM token directory is moved away for 2.5 s and back (the issue's
     reproduction: SoftHSM 2.6.1 only sees the token again after C_Initialize).
Each time signing must come back within 5 s (scaled by JS_TIMEOUT_SCALE) of the
fault's end with the same key (every token verifies against the JWKS fetched at
the start), the audit log's checkpoints must resume (`jwt-audit verify` passes
after a clean stop), and /healthz (whose HSM probe signs with the audit key on
its own session) is 200 again. Recovery times are printed so they can be quoted.
"""

import json
import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

RECOVERY_LIMIT_S = 5.0  # scaled: backoff (<= 2 s), re-initialisation, one jwt-sign
FAULT_S = 2.5
SIGN_GAP_S = 0.02
PHASE_MAX_S = 20.0  # every wait below is bounded by this
# test_hung_hsm_is_unhealthy: /healthz turns 503 ~10-11 s after the probe's C_Sign is
# held (signer/daemon.h HEALTH_PROBE_STUCK_MS); it is polled for HUNG_LOOP_S, and every
# C_Sign is held HUNG_HOLD_S, 5 s longer, so the 503 cannot end before the polling does.
HUNG_LOOP_S = min(25.0, harness.timeout(14.5))
HUNG_HOLD_S = HUNG_LOOP_S + 5.0


def shim_path():
    p = os.environ.get("JS_P11SHIM")
    if not p:
        raise unittest.SkipTest("JS_P11SHIM not set (ctest sets it to the built p11shim)")
    return p


class Signer(threading.Thread):
    """Signs with jwt-sign in a loop (bounded) and records (start time, ok, token or error)."""

    def __init__(self, env):
        super().__init__(daemon=True)
        self.env = env
        self.results = []
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()

    def run(self):
        deadline = time.monotonic() + harness.timeout(300)
        while not self.stop_flag.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            rc, out, err = self.env.sign("issuer-a", self.env.sample_claims(), timeout_s=20)
            with self.lock:
                self.results.append((started, rc == 0, out.strip() if rc == 0 else err))
            time.sleep(SIGN_GAP_S)

    def snapshot(self):
        with self.lock:
            return list(self.results)

    def first_ok_after(self, t):
        """Start time of the first call that started after t and succeeded (bounded wait)."""
        end = time.monotonic() + harness.timeout(PHASE_MAX_S)
        while time.monotonic() < end:
            for when, ok, _ in self.snapshot():
                if ok and when > t:
                    return when
            time.sleep(0.05)
        return None


class HsmFaultTest(unittest.TestCase):
    def setUp(self):
        self.env = harness.Env()
        env = self.env
        self.ctl = env.path("p11shim.ctl")
        # keygen and the daemon both load the shim; it forwards to the harness's SoftHSM.
        os.environ["JS_P11SHIM_MODULE"] = harness.softhsm_module()
        os.environ["JS_P11SHIM_CONTROL"] = self.ctl
        env.setup(module=shim_path(),
                  audit={"dir": "audit", "key_label": harness.AUDIT_KEY_LABEL,
                         "checkpoint_interval": "1s", "heartbeat": "2s"})
        env.start(env={"JS_P11SHIM_MODULE": harness.softhsm_module(),
                       "JS_P11SHIM_CONTROL": self.ctl})

    def tearDown(self):
        self.env.cleanup()

    def control(self, text):
        tmp = self.ctl + ".tmp"
        with open(tmp, "w", encoding="ascii") as f:
            f.write(text)
        os.replace(tmp, self.ctl)  # a new inode: the shim re-reads it on its next call

    def healthz_ok_within(self, seconds, extra_s=0.0):
        """/healthz 200 within `seconds` (scaled) plus extra_s (not scaled)."""
        end = time.monotonic() + harness.timeout(seconds) + extra_s
        status = None
        while time.monotonic() < end:
            status, _, body = self.env.http_get("/healthz")
            if status == 200:
                return True
            time.sleep(0.2)
        print("healthz still %s: %s" % (status, body), flush=True)
        return False

    def test_hung_hsm_is_unhealthy(self):
        """An HSM that stops answering (a call held, not failed) shows in /healthz:
        the probe runs on its own thread, so /healthz answers at once, and a probe
        held over 10 s makes it 503 with the reason; when the HSM answers again,
        200 again."""
        env = self.env
        self.assertTrue(self.healthz_ok_within(5), "/healthz not ok at start")
        # Every C_Sign (the probe's, the audit checkpoints') is held HUNG_HOLD_S.
        self.control("hang C_Sign %d\n" % int(HUNG_HOLD_S * 1000))
        t0 = time.monotonic()
        seen = None
        while time.monotonic() - t0 < HUNG_LOOP_S:
            t_req = time.monotonic()
            status, _, body = env.http_get("/healthz")
            # Scaled, and still far below the hold: an answer that waited for the HSM
            # would take HUNG_HOLD_S.
            self.assertLess(time.monotonic() - t_req, harness.timeout(2.0),
                            "/healthz waited for the HSM")
            if status == 503 and b"has not answered the health probe" in body:
                seen = time.monotonic() - t0
                break
            time.sleep(0.25)
        self.assertIsNotNone(seen, "/healthz never reported the hung HSM")
        self.assertGreaterEqual(seen, 9.0, "reported before the 10 s bound")
        self.control("ok\n")
        # The held calls return HUNG_HOLD_S after they began (after t0); new ones are not held.
        held_left = max(0.0, t0 + HUNG_HOLD_S - time.monotonic())
        self.assertTrue(self.healthz_ok_within(20, held_left),
                        "/healthz not ok once the HSM answered")

    def test_signing_heals_without_restart(self):
        env = self.env
        rc, jwks, err = env.jwks("issuer-a")
        self.assertEqual(rc, 0, err)
        signer = Signer(env)
        signer.start()
        try:
            t0 = time.monotonic()
            self.assertIsNotNone(signer.first_ok_after(t0), "no signature before any fault")
            pid = env.daemon.pid
            recoveries = {}

            # 1. Every handle dies at once.
            time.sleep(0.5)
            t_fault = time.monotonic()
            self.control("invalidate\n")
            back = signer.first_ok_after(t_fault)
            self.assertIsNotNone(back, "signing did not resume after invalidate")
            recoveries["invalidate"] = back - t_fault

            # 2. The token is gone for FAULT_S: every call fails with CKR_DEVICE_REMOVED.
            time.sleep(1.0)
            self.control("invalidate\nfail * CKR_DEVICE_REMOVED\n")
            time.sleep(FAULT_S)
            t_end = time.monotonic()
            self.control("ok\n")
            back = signer.first_ok_after(t_end)
            self.assertIsNotNone(back, "signing did not resume after CKR_DEVICE_REMOVED")
            recoveries["device_removed"] = back - t_end
            during = [r for r in signer.snapshot() if t_end - FAULT_S + 0.3 < r[0] < t_end]
            self.assertTrue(during, "the client made no call during the fault")
            self.assertFalse(any(ok for _, ok, _ in during), "a token was issued while the "
                             "token was gone")
            self.assertTrue(self.healthz_ok_within(RECOVERY_LIMIT_S), "/healthz not ok again")
            # The loss and the recovery were logged with the CKR that revealed it.
            lost = env.logs("hsm_session_lost")
            self.assertTrue(lost, "no hsm_session_lost log line")
            self.assertTrue(any(o.get("ckr") == "CKR_DEVICE_REMOVED" for o in lost), lost)
            rec = env.wait_log(lambda o: o.get("event") == "hsm_recovered", timeout_s=10)
            self.assertGreaterEqual(rec.get("duration_ms", -1), 0, rec)

            # 3. The reproduction: the token directory away for FAULT_S and back.
            time.sleep(1.0)
            away = env.token_dir + ".away"
            os.rename(env.token_dir, away)
            time.sleep(FAULT_S)
            os.rename(away, env.token_dir)
            t_end = time.monotonic()
            back = signer.first_ok_after(t_end)
            self.assertIsNotNone(back, "signing did not resume after the token directory "
                                 "came back")
            recoveries["token_dir_moved"] = back - t_end
            self.assertTrue(self.healthz_ok_within(RECOVERY_LIMIT_S), "/healthz not ok again")
            time.sleep(2.5)  # a checkpoint interval and a heartbeat after recovery
        finally:
            signer.stop_flag.set()
            signer.join(harness.timeout(60))

        self.assertEqual(env.daemon.pid, pid, "the signer was restarted")
        for name, took in recoveries.items():
            print("HSM fault %-16s recovered in %.2f s" % (name, took), flush=True)
            self.assertLessEqual(took, harness.timeout(RECOVERY_LIMIT_S), name)
        results = signer.snapshot()
        ok = [tok for _, good, tok in results if good]
        failed = [e for _, good, e in results if not good]
        print("signatures: %d ok, %d refused during faults" % (len(ok), len(failed)), flush=True)
        # Refusals say UNAVAILABLE (the HSM), never something a client would not retry.
        for e in failed:
            self.assertIn("UNAVAILABLE", e.upper(), e)
        # Every token is signed by the one key published at the start: never another key.
        for tok in ok:
            harness.verify_es256(tok, jwks)
        self.assertEqual(env.stop(), 0)
        d = env.audit_dir()
        rc, out, err = env.run([harness.audit_path(), "verify", "--pubkey",
                                os.path.join(d, "audit-key.pem"), "--checkpoint",
                                os.path.join(d, "checkpoint.json")] + env.audit_segments(),
                               timeout_s=120)
        self.assertEqual(rc, 0, out + err)
        # ... and audited: "hsm" records for the loss and the recovery.
        rc, out, err = env.run([harness.audit_path(), "show", "--json"] + env.audit_segments())
        self.assertEqual(rc, 0, err)
        hsm = [json.loads(line) for line in out.splitlines() if '"type":"hsm"' in line]
        decisions = {r.get("decision") for r in hsm}
        self.assertIn("hsm_session_lost", decisions, hsm)
        self.assertIn("hsm_recovered", decisions, hsm)


if __name__ == "__main__":
    unittest.main(verbosity=2)
