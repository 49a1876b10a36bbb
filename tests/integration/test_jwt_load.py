#!/usr/bin/python3
"""test_jwt_load.py - jwt-load (client/jwt_load.c), the load generator users
run to size a deployment, against a real jwt-signerd (real SoftHSM token, real
PKI, loopback), one signer for the whole file:

- open loop, --rate 200 --duration 2s --json: the 400 scheduled calls all
  made and OK, none dropped, throughput within 10% of the target, latency
  percentiles > 0 and monotonic (p50 <= p90 <= p99 <= p99.9 <= max); exit 0;
  no progress line when stderr is a pipe;
- closed loop, --concurrency 4 --duration 2s: calls made, all OK, exit 0;
  the human table names the calls, the throughput and the percentiles;
- a caller the policy refuses (intruder): every call counted under
  PERMISSION_DENIED with the signer's message (policy.no_match), exit 1;
- bad arguments (rate 0, rate huge, duration garbage or too long, neither
  --rate nor --concurrency, concurrency 0) -> exit 2 and a message naming the
  option, before any connection;
- the progress line (\\r, calls/s, p99) appears when stderr is a terminal
  (a pty), and --no-progress silences it there;
- --introspect FILE: Status/Introspect of tokens signed just before, all
  active (OK), exit 0;
- SIGINT ends a 30 s run early and the summary of what was done is still
  printed (interrupted: true).

jwt-load comes from JS_LOAD (ctest sets it; by hand: build/jwt-load).
Standard library and python3-cryptography (harness) only; run with
/usr/bin/python3.
"""

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

ISSUER_A = harness.CALLER_IDS["issuer-a"]
CLAIMS = json.dumps({"sub": harness.SAMPLE_SUB, "aud": harness.SAMPLE_AUD})
EXIT_OK, EXIT_NOT_ALL_OK, EXIT_USAGE = 0, 1, 2


def load_path():
    path = os.path.abspath(os.environ.get("JS_LOAD") or
                           os.path.join(harness.source_dir(), "build", "jwt-load"))
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise harness.HarnessError("JS_LOAD: %s is not an executable" % path)
    return path


class JwtLoad(unittest.TestCase):
    env = None

    @classmethod
    def setUpClass(cls):
        cls.t0 = time.monotonic()
        env = harness.Env()
        cls.env = env
        try:
            policy = env.default_policy()
            policy["introspectors"] = [{"id": ISSUER_A}]
            # Every token signed here enters the issued-token index for its 5 min
            # lifetime: room for all of them (a full index fails SignJwt closed).
            env.setup(policy=policy, introspection={"max_tokens": 500000, "leeway": "5s"})
            env.start()
        except BaseException:
            env.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        env = cls.env
        try:
            if env.daemon is not None and env.daemon.running():
                rc = env.stop()
                if rc != 0:
                    sys.stderr.write(env.daemon.tail(80) + "\n")
                    raise AssertionError("jwt-signerd exited %d" % rc)
        finally:
            env.cleanup()
            sys.stderr.write("[test_jwt_load: %.1f s]\n" % (time.monotonic() - cls.t0))

    def argv(self, *args, caller="issuer-a", claims=True):
        ca, cert, key = self.env.caller_files(caller)
        argv = [load_path(), "--target", "localhost:%d" % self.env.port, "--ca", ca,
                "--cert", cert, "--key", key]
        if claims:
            argv += ["--claims", CLAIMS]
        return argv + [str(a) for a in args]

    def run_load(self, *args, timeout_s=30, **kw):
        return self.env.run(self.argv(*args, **kw), timeout_s=timeout_s)

    def run_json(self, *args, rc_want=EXIT_OK, **kw):
        rc, out, err = self.run_load("--json", *args, **kw)
        self.assertEqual(rc, rc_want, "jwt-load %s: rc %d\n%s%s" % (args, rc, out, err))
        lines = out.strip().splitlines()
        self.assertEqual(len(lines), 1, out)
        return json.loads(lines[0]), err

    def assert_latency(self, s):
        lat = s["latency_ms"]
        values = [lat[k] for k in ("p50", "p90", "p99", "p999", "max")]
        self.assertGreater(values[0], 0, lat)
        self.assertEqual(values, sorted(values), "percentiles not monotonic: %r" % lat)

    # --- open loop ------------------------------------------------------------------
    def test_open_loop(self):
        s, err = self.run_json("--rate", 200, "--duration", "2s")
        self.assertEqual((s["mode"], s["call"], s["target_per_second"]), ("open", "SignJwt", 200))
        self.assertEqual(s["concurrency"], 64, s)
        # 200/s for 2 s: slots 0..399 are due; every one made and answered OK.
        self.assertEqual((s["due"], s["calls"], s["dropped"]), (400, 400, 0), s)
        self.assertEqual((s["ok"], s["errors"], s["by_status"]), (400, 0, {"OK": 400}), s)
        self.assertEqual(s["first_error"], {}, s)
        self.assertFalse(s["interrupted"], s)
        self.assertLessEqual(abs(s["per_second"] - 200) / 200, 0.10, s)
        self.assertLessEqual(s["max_in_flight"], 64, s)
        self.assert_latency(s)
        self.assertEqual(s["ok_latency_ms"], s["latency_ms"], s)  # every call was OK
        # stderr is a pipe here: no progress line.
        self.assertNotIn("\r", err)
        self.assertNotIn("calls/s", err)

    def test_closed_loop_table(self):
        rc, out, err = self.run_load("--concurrency", 4, "--duration", "2s")
        self.assertEqual(rc, EXIT_OK, out + err)
        self.assertIn("closed loop: 4 workers", out)
        for word in ("calls ", "throughput", "p50", "p90", "p99 ", "p99.9", "max", "OK"):
            self.assertIn(word, out)
        s, _ = self.run_json("--concurrency", 4, "--duration", "2s")
        self.assertEqual((s["mode"], s["target_per_second"], s["concurrency"]),
                         ("closed", None, 4), s)
        self.assertGreater(s["calls"], 20, s)
        self.assertEqual(s["ok"], s["calls"], s)
        self.assertLessEqual(s["max_in_flight"], 4, s)
        self.assertNotIn("dropped", s)
        self.assert_latency(s)

    # --- refusals and usage errors ---------------------------------------------------
    def test_refused_caller(self):
        s, _ = self.run_json("--rate", 50, "--duration", "1s", caller="intruder",
                             rc_want=EXIT_NOT_ALL_OK)
        self.assertEqual(s["calls"], 50, s)
        self.assertEqual((s["ok"], s["errors"]), (0, 50), s)
        self.assertEqual(s["by_status"], {"PERMISSION_DENIED": 50}, s)
        self.assertIn("policy.no_match", s["first_error"]["PERMISSION_DENIED"], s)
        self.assert_latency(s)
        self.assertIsNone(s["ok_latency_ms"], s)
        # The table says the same, with the message.
        rc, out, err = self.run_load("--rate", 20, "--duration", "1s", caller="intruder")
        self.assertEqual(rc, EXIT_NOT_ALL_OK, out + err)
        line = [x for x in out.splitlines() if "PERMISSION_DENIED" in x]
        self.assertEqual(len(line), 1, out)
        self.assertIn("policy.no_match", line[0])

    def test_usage_errors(self):
        cases = [
            (("--rate", "0"), "--rate"),
            (("--rate", "100000000000"), "--rate"),
            (("--rate", "-5"), "--rate"),
            (("--rate", "10x"), "--rate"),
            (("--concurrency", "0"), "--concurrency"),
            (("--concurrency", "100000"), "--concurrency"),
            (("--rate", "10", "--duration", "garbage"), "--duration"),
            (("--rate", "10", "--duration", "10"), "--duration"),
            (("--rate", "10", "--duration", "25h"), "--duration"),
            (("--rate", "10", "--warmup", "2h"), "--warmup"),
            (("--rate", "10", "--timeout-ms", "0"), "--timeout-ms"),
            ((), "--rate"),  # neither --rate nor --concurrency
        ]
        for args, option in cases:
            rc, out, err = self.run_load(*args, timeout_s=10)
            self.assertEqual(rc, EXIT_USAGE, "%s: rc %d %s%s" % (args, rc, out, err))
            self.assertIn(option, err, args)
            self.assertEqual(out, "", args)
        rc, out, err = self.env.run([load_path(), "--rate", "5"], timeout_s=10)
        self.assertEqual(rc, EXIT_USAGE, err)
        self.assertIn("--target", err)
        rc, out, _ = self.env.run([load_path(), "--help"], timeout_s=10)
        self.assertEqual(rc, EXIT_OK)
        self.assertIn("Exit status", out)

    # --- the progress line -----------------------------------------------------------
    def run_pty(self, *args):
        """Runs jwt-load with stderr on a pty: (rc, stdout, what the terminal got)."""
        master, slave = os.openpty()
        try:
            p = subprocess.Popen(self.argv(*args), stdout=subprocess.PIPE, stderr=slave,
                                 stdin=subprocess.DEVNULL, env=self.env.env())
        finally:
            os.close(slave)
        tty = b""
        deadline = time.monotonic() + harness.timeout(30)
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([master], [], [], 0.2)
                if ready:
                    try:
                        chunk = os.read(master, 65536)
                    except OSError:  # EIO: every slave end is closed
                        break
                    if not chunk:
                        break
                    tty += chunk
                elif p.poll() is not None:
                    break
            out, _ = p.communicate(timeout=harness.timeout(30))
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            os.close(master)
        return p.returncode, out.decode(), tty.decode(errors="replace")

    def test_progress_on_a_terminal(self):
        rc, out, tty = self.run_pty("--rate", 50, "--duration", "3s", "--json")
        self.assertEqual(rc, EXIT_OK, out + tty)
        self.assertIn("\r", tty)
        self.assertIn("calls/s", tty)
        self.assertIn("p99", tty)
        self.assertGreaterEqual(tty.count("\r"), 2, repr(tty))
        self.assertEqual(json.loads(out)["calls"], 150)
        rc, out, tty = self.run_pty("--rate", 50, "--duration", "2s", "--json", "--no-progress")
        self.assertEqual(rc, EXIT_OK, out + tty)
        self.assertNotIn("calls/s", tty)

    # --- introspection ---------------------------------------------------------------
    def test_introspect_tokens_from_a_file(self):
        tokens = []
        for _ in range(3):
            rc, out, err = self.env.sign("issuer-a", self.env.sample_claims())
            self.assertEqual(rc, 0, err)
            tokens.append(out.strip())
        path = self.env.path("tokens.txt")
        with open(path, "w", encoding="ascii") as f:
            f.write("\n".join(tokens) + "\n")
        s, _ = self.run_json("--rate", 50, "--duration", "1s", "--introspect", path, claims=False)
        self.assertEqual((s["call"], s["calls"], s["ok"]), ("Introspect", 50, 50), s)
        self.assert_latency(s)

    # --- Ctrl-C ----------------------------------------------------------------------
    def test_sigint_prints_the_summary(self):
        p = subprocess.Popen(self.argv("--json", "--concurrency", 2, "--duration", "30s"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL, env=self.env.env(), text=True)
        try:
            time.sleep(1.5)
            p.send_signal(signal.SIGINT)
            out, err = p.communicate(timeout=harness.timeout(15))
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.assertEqual(p.returncode, EXIT_OK, out + err)
        s = json.loads(out)
        self.assertTrue(s["interrupted"], s)
        self.assertGreater(s["calls"], 0, s)
        self.assertEqual(s["ok"], s["calls"], s)
        self.assertLess(s["elapsed_s"], 10, s)


if __name__ == "__main__":
    unittest.main(verbosity=2)
