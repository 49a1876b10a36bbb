#!/usr/bin/python3
"""test_audit_recovery.py - start-up recovery against checkpoint.json and the
count of lost denials, through a real jwt-signerd.

1. A log whose last segment is cut with `truncate -s -100` (so the close
   checkpoint that checkpoint.json names is damaged): jwt-signerd refuses to
   start (exit 1, startup_failed naming the segment, offset, seq and the
   checkpoint) and every file of the audit directory is byte-identical
   afterwards (SHA-256 of each, before and after; no .broken, no new
   checkpoint.json). Started once with --accept-audit-loss REASON, it cuts
   the damage, writes an audit.loss_accepted record naming segment, offset,
   seq, the checkpoint and the reason, and `jwt-audit verify` passes.
2. A genuine torn tail after the record checkpoint.json names (a record
   written after the last checkpoint, then cut mid-frame) still heals by
   itself, as before.
3. --accept-audit-loss with an empty or control-character reason is a usage
   error; --help documents the option.
4. /metrics exports jwt_signer_audit_records_lost_total.
5. A denial flood while the audit disk fails (faultio.c, LD_PRELOAD): the
   denials dropped with the failing batches (no caller waits for them) are
   counted in the audit.io_recovered records' lost_records, and their sum
   equals the metric.

Programs: the harness's (JS_SIGNERD, JS_SIGN, JS_CLIENT_TEST), JS_AUDIT (jwt-audit) and
JS_FAULTIO.
"""

import hashlib
import json
import os
import re
import struct
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

SUB = harness.SAMPLE_SUB
AUD = harness.SAMPLE_AUD
EXIT_USAGE = 2


def run_audit(env, *args, timeout_s=120):
    return env.run([harness.audit_path()] + list(args), timeout_s=timeout_s)


def verify(env):
    d = env.audit_dir()
    rc, out, err = run_audit(env, "verify", "--pubkey", os.path.join(d, "audit-key.pem"),
                             "--checkpoint", os.path.join(d, "checkpoint.json"),
                             *env.audit_segments())
    return rc, out + err


def show(env):
    rc, out, err = run_audit(env, "show", "--json", *env.audit_segments())
    if rc != 0:
        raise AssertionError("jwt-audit show failed (%d): %s" % (rc, err))
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def frames(path):
    """[(offset, frame_length, payload_dict)] of a segment, per FORMAT.md §2."""
    with open(path, "rb") as f:
        data = f.read()
    out, off = [], 0
    while off + 8 <= len(data):
        length = struct.unpack_from("<I", data, off)[0]
        if length < 2 or off + 8 + length > len(data):
            break
        out.append((off, 8 + length, json.loads(data[off + 8:off + 8 + length])))
        off += 8 + length
    return out


def dir_hashes(path):
    """{file name: SHA-256 hex} of every file in path."""
    out = {}
    for name in sorted(os.listdir(path)):
        with open(os.path.join(path, name), "rb") as f:
            out[name] = hashlib.sha256(f.read()).hexdigest()
    return out


class RecoveryCase(unittest.TestCase):
    def setUp(self):
        self.env = harness.Env()

    def tearDown(self):
        self.env.cleanup()

    def _session(self, n=4, **audit):
        env = self.env
        conf = {"dir": "audit", "key_label": env.audit_key_label}
        conf.update(audit)
        env.setup(audit=conf)
        env.start()
        jtis = []
        for _ in range(n):
            rc, out, err = env.sign("issuer-a", {"sub": SUB, "aud": AUD}, "--json")
            self.assertEqual(rc, 0, err)
            jtis.append(json.loads(out)["jti"])
        return jtis

    def assertVerifies(self, what):
        rc, out = verify(self.env)
        self.assertEqual(rc, 0, "jwt-audit verify %s:\n%s" % (what, out))
        self.assertIn("OK: log intact", out)


class NamedCheckpointDamage(RecoveryCase):
    def test_truncated_close_checkpoint_refuses_then_accept(self):
        env = self.env
        jtis = self._session()
        self.assertEqual(env.stop(), 0)
        adir = env.audit_dir()
        seg = env.audit_segments()[-1]
        with open(os.path.join(adir, "checkpoint.json"), encoding="utf-8") as f:
            named = json.loads(f.read())
        fr = frames(seg)
        self.assertEqual(fr[-1][2], named, "checkpoint.json names the last record (close)")
        size = os.path.getsize(seg)
        # truncate -s -100
        with open(seg, "r+b") as f:
            f.truncate(size - 100)
        damaged = [(o, n, p) for o, n, p in fr if o + n > size - 100][0]
        bad_off, _, bad_payload = damaged
        self.assertLessEqual(bad_payload["seq"], named["seq"])
        before = dir_hashes(adir)

        d = env.start(wait=False)
        rc = d.wait(timeout_s=30)
        self.assertEqual(rc, 1, d.tail())
        self.assertFalse(d.logs("listening"))
        fails = d.logs("startup_failed")
        self.assertEqual(len(fails), 1, d.tail())
        self.assertEqual(fails[0].get("reason"), "audit.anchor_lost", fails[0])
        msg = fails[0].get("message", "")
        self.assertIn(os.path.basename(seg), msg)
        self.assertRegex(msg, r"\boffset %d\b" % bad_off)
        self.assertRegex(msg, r"\bseq %d\b" % bad_payload["seq"])
        self.assertIn("checkpoint.json names the checkpoint seq %d" % named["seq"], msg)
        self.assertIn("--accept-audit-loss", msg)
        self.assertEqual(dir_hashes(adir), before, "a refused start changed the audit directory")
        self.assertFalse([f for f in os.listdir(adir) if ".broken" in f])

        # The operator investigated and accepts the loss, once.
        reason = "INC-4711: controller fault, loss accepted by alice@example.org"
        env.start(args=["--accept-audit-loss", reason])
        self.assertTrue(env.logs("audit_accept_loss"))
        rc, out, err = env.sign("issuer-a", {"sub": SUB, "aud": AUD}, "--json")
        self.assertEqual(rc, 0, err)
        self.assertEqual(env.stop(), 0)
        self.assertVerifies("after an accepted loss")
        recs = show(env)
        acc = [r for r in recs if r["type"] == "recovery" and r["reason"] == "audit.loss_accepted"]
        self.assertEqual(len(acc), 1, acc)
        det = acc[0]["detail"]
        self.assertEqual(det["segment"], os.path.basename(seg))
        self.assertEqual(det["offset"], bad_off)
        self.assertEqual(det["seq"], bad_payload["seq"])
        self.assertEqual(det["checkpoint_seq"], named["seq"])
        self.assertEqual(det["checkpoint"], named)
        self.assertEqual(det["operator_reason"], reason)
        torn = [r for r in recs if r["type"] == "recovery" and r["reason"] == "audit.torn_tail"]
        self.assertEqual(len(torn), 1, torn)
        self.assertEqual(torn[0]["detail"]["offset"], bad_off)
        # Records before the damage are still there.
        logged = {r.get("jti") for r in recs}
        self.assertTrue(set(jtis) <= logged)

        # Restarting without the option on the healed log just works.
        env.start()
        self.assertEqual(env.stop(), 0)
        self.assertVerifies("after a plain restart")

    def test_log_rolled_back_before_named_record_refuses(self):
        # Cut cleanly at a frame boundary before the named checkpoint: no torn
        # frame at all, but the named record is missing.
        env = self.env
        self._session(n=2)
        self.assertEqual(env.stop(), 0)
        adir = env.audit_dir()
        seg = env.audit_segments()[-1]
        fr = frames(seg)
        cut_off = fr[-3][0]
        with open(seg, "r+b") as f:
            f.truncate(cut_off)
        before = dir_hashes(adir)
        d = env.start(wait=False)
        self.assertEqual(d.wait(timeout_s=30), 1, d.tail())
        fails = d.logs("startup_failed")
        self.assertEqual(len(fails), 1, d.tail())
        msg = fails[0].get("message", "")
        self.assertRegex(msg, r"\boffset %d seq %d is missing\b" % (cut_off, fr[-3][2]["seq"]))
        self.assertEqual(dir_hashes(adir), before)


class GenuineTornTail(RecoveryCase):
    def test_torn_tail_after_named_record_heals(self):
        env = self.env
        # No checkpoint during the session: checkpoint.json names the open
        # checkpoint; the records after it are the unsigned tail.
        jtis = self._session(checkpoint_interval="60s", heartbeat="60s")
        env.daemon.proc.kill()
        env.daemon.wait()
        adir = env.audit_dir()
        with open(os.path.join(adir, "checkpoint.json"), encoding="utf-8") as f:
            named = json.loads(f.read())
        seg = env.audit_segments()[-1]
        fr = frames(seg)
        off, n, payload = fr[-1]
        self.assertEqual(payload.get("jti"), jtis[-1])
        self.assertGreater(payload["seq"], named["seq"])
        with open(seg, "r+b") as f:
            f.truncate(off + n - 5)
        env.start()
        self.assertFalse(env.logs("startup_failed"))
        self.assertEqual(env.stop(), 0)
        self.assertVerifies("after a genuine torn tail")
        recs = show(env)
        rec = [r for r in recs if r["type"] == "recovery"]
        self.assertEqual([r["reason"] for r in rec], ["audit.torn_tail"], rec)
        self.assertEqual(rec[0]["detail"]["offset"], off)
        self.assertEqual([f for f in os.listdir(adir) if ".broken" in f],
                         [os.path.basename(seg) + ".broken"])


class LostDenials(RecoveryCase):
    def test_failed_batches_count_lost_denials(self):
        """Denials flood in while the audit disk fails (faultio): the denials
        queued in failing batches have no waiting caller and are dropped; the
        recovery records count them (lost_records) and the metric agrees."""
        env = self.env
        env.setup(http={"listen": "127.0.0.1:0"})
        trigger = env.path("fault-trigger")
        extra = {"LD_PRELOAD": harness.faultio_path(), "JS_FAULT_TRIGGER": trigger,
                 "JS_FAULT_MATCH": os.path.join(env.audit_dir(), "audit-")}
        if os.environ.get("ASAN_OPTIONS") is not None:
            extra["ASAN_OPTIONS"] = os.environ["ASAN_OPTIONS"] + ":verify_asan_link_order=0"
        env.start(env=extra)
        ca, cert, key = env.caller_files("issuer-a")
        argv = [harness.client_test_path(), "--target", "localhost:%d" % env.port, "--ca", ca,
                "--cert", cert, "--key", key, "--threads", "4", "--requests", "100000",
                "--timeout-ms", "5000", "--claims",
                json.dumps({"sub": "not-a-uuid", "aud": AUD})]
        load = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, env=env.env(), text=True)
        try:
            env.wait_log(lambda o: o.get("event") == "request" and o.get("decision") == "deny",
                         timeout_s=30)
            with open(trigger, "w", encoding="ascii"):
                pass
            # The log failed: denials can no longer be queued.
            env.wait_log("audit_record_lost", timeout_s=30)
            time.sleep(0.3)
            os.unlink(trigger)
        finally:
            if load.poll() is None:
                load.kill()
            load.communicate()
        # Recovered by itself (retry_ms is 1 s): /healthz is 200 again.
        status, body = 0, b""
        for _ in range(100):
            status, _, body = env.http_get("/healthz")
            if status == 200:
                break
            time.sleep(0.2)
        self.assertEqual(status, 200, body)
        status, _, body = env.http_get("/metrics")
        self.assertEqual(status, 200)
        m = re.search(r"^jwt_signer_audit_records_lost_total (\d+)$", body.decode("utf-8"), re.M)
        self.assertIsNotNone(m)
        metric = int(m.group(1))
        self.assertEqual(env.stop(), 0)
        self.assertVerifies("after an I/O failure under a denial flood")
        recs = show(env)
        rec = [r for r in recs if r["type"] == "recovery"]
        self.assertGreaterEqual(len(rec), 1, "no recovery record")
        for r in rec:
            self.assertEqual(r["reason"], "audit.io_recovered", r)
            self.assertIn("lost_records", r["detail"])
            self.assertGreaterEqual(r["detail"]["lost_denials"], r["detail"]["lost_records"])
        self.assertEqual(sum(r["detail"]["lost_records"] for r in rec), metric)
        sys.stderr.write("lost denials: %d records in %d recoveries\n" % (metric, len(rec)))


class Options(RecoveryCase):
    def test_help_and_bad_reasons(self):
        env = self.env
        rc, out, err = env.run([harness.signerd_path(), "--help"])
        self.assertEqual(rc, 0, err)
        self.assertIn("--accept-audit-loss REASON", out)
        self.assertIn("audit.loss_accepted", out)
        env.setup()
        for bad in ("", "tab\there", "bell\x07"):
            p = subprocess.run([harness.signerd_path(), "--config", env.config_path,
                                "--accept-audit-loss", bad], capture_output=True, text=True,
                               env=env.env(), timeout=harness.timeout(30))
            self.assertEqual(p.returncode, EXIT_USAGE, (bad, p.stderr))
            self.assertIn("--accept-audit-loss", p.stderr)
        # keygen takes no such option.
        rc, out, err = env.run([harness.signerd_path(), "keygen", "--config", env.config_path,
                                "--audit-key", "--accept-audit-loss", "x"])
        self.assertEqual(rc, EXIT_USAGE, err)

    def test_metric_exported(self):
        env = self.env
        env.setup(http={"listen": "127.0.0.1:0"})
        env.start()
        status, _, body = env.http_get("/metrics")
        self.assertEqual(status, 200)
        text = body.decode("utf-8")
        self.assertIn("# TYPE jwt_signer_audit_records_lost_total counter", text)
        self.assertRegex(text, re.compile(r"^jwt_signer_audit_records_lost_total 0$", re.M))
        self.assertEqual(env.stop(), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
