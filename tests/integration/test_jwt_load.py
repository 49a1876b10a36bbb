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
  printed (interrupted: true), exit 130; SIGTERM likewise, exit 143;
- late and dropped calls, the signer paused with SIGSTOP one second into an
  open-loop run at 50/s with 4 workers: a 1 s pause mid-run makes calls start
  late (every worker stuck), none dropped, and the p99 shows the pause; a 2 s
  pause past the end of a 2 s run drops calls (exit 1) and the dropped calls
  count in the percentiles at their lower bound, so p90 and p99 show it too
  (left out, p90 read a few ms);
- --warmup 0s means no warm-up.

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
EXIT_SIGINT, EXIT_SIGTERM = 130, 143  # 128 + the signal, as a shell says


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
        s, err = self.run_json("--rate", 200, "--duration", "2s", "--warmup", "0s")
        self.assertEqual((s["mode"], s["call"], s["target_per_second"]), ("open", "SignJwt", 200))
        self.assertEqual((s["warmup_s"], s["warmup_calls"]), (0, 0), s)
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
            (("--rate", "10", "--warmup", "0"), "--warmup"),  # a unit still needed
            (("--rate", "10", "--warmup", "-0s"), "--warmup"),
            (("--rate", "10", "--duration", "0s"), "--duration"),  # only warm-up may be 0
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
        rc, out, _ = self.env.run([load_path(), "--version"], timeout_s=10)
        self.assertEqual(rc, EXIT_OK)
        self.assertRegex(out, r"^jwt-load [0-9]+\.[0-9]+\.[0-9]+\n$")

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
    def test_interrupt_prints_the_summary(self):
        # Every call OK, yet the run was cut short: 128 + the signal, not 0, so
        # `timeout 60 jwt-load ...` in CI does not look like a complete run.
        for sig, rc_want, wait_s in ((signal.SIGINT, EXIT_SIGINT, 1.5),
                                     (signal.SIGTERM, EXIT_SIGTERM, 1.0)):
            p = subprocess.Popen(self.argv("--json", "--concurrency", 2, "--duration", "30s"),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 stdin=subprocess.DEVNULL, env=self.env.env(), text=True)
            try:
                time.sleep(wait_s)
                p.send_signal(sig)
                out, err = p.communicate(timeout=harness.timeout(15))
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            self.assertEqual(p.returncode, rc_want, "%s: %s%s" % (sig.name, out, err))
            s = json.loads(out)
            self.assertTrue(s["interrupted"], s)
            self.assertGreater(s["calls"], 0, s)
            self.assertEqual(s["ok"], s["calls"], s)
            self.assertLess(s["elapsed_s"], 10, s)

    # --- late and dropped calls: the signer paused -----------------------------------
    def run_with_pause(self, pause_s, *args):
        """Runs jwt-load --json --progress ARGS and, when its first progress line
        shows (1 s after the start of the run), stops the signer (SIGSTOP) for
        pause_s, then lets it go on (SIGCONT). Returns (rc, summary, stderr,
        the pause as measured here: from after the SIGSTOP to before the
        SIGCONT, so at least as long as the signer saw nothing happen)."""
        pid = self.env.daemon.pid
        p = subprocess.Popen(self.argv("--json", "--progress", *args), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=self.env.env())
        err = b""
        stopped = False
        try:
            fd = p.stderr.fileno()
            deadline = time.monotonic() + harness.timeout(30)
            while b"calls/s" not in err:
                self.assertLess(time.monotonic(), deadline, "no progress line: %r" % err)
                self.assertIsNone(p.poll(), "jwt-load ended before its first progress line: %r"
                                  % err)
                ready, _, _ = select.select([fd], [], [], 0.2)
                if ready:
                    err += os.read(fd, 65536)
            os.kill(pid, signal.SIGSTOP)
            stopped = True
            t_stop = time.monotonic()
            time.sleep(pause_s)
            t_cont = time.monotonic()
        finally:
            if stopped:
                os.kill(pid, signal.SIGCONT)
            if p.poll() is None and not stopped:
                p.kill()
        try:
            out, rest = p.communicate(timeout=harness.timeout(30))
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        err = (err + rest).decode(errors="replace")
        lines = out.decode().strip().splitlines()
        self.assertEqual(len(lines), 1, "rc %d: %r %s" % (p.returncode, out, err))
        return p.returncode, json.loads(lines[0]), err, t_cont - t_stop

    def test_pause_mid_run_makes_calls_late(self):
        # 50/s for 3 s, paused from 1 s to 2 s in: the 4 workers are stuck on
        # the first calls due in the pause, the ones due after them start late
        # when it ends; none is dropped and every one is answered OK.
        rc, s, err, pause = self.run_with_pause(1.0, "--rate", 50, "--concurrency", 4,
                                                "--duration", "3s")
        self.assertEqual(rc, EXIT_OK, "%r\n%s" % (s, err))
        self.assertGreaterEqual(pause, 1.0)
        self.assertEqual((s["due"], s["calls"], s["ok"], s["dropped"]), (150, 150, 150, 0), s)
        self.assertGreater(s["late"], 0, s)
        # The first two calls due in the pause (within 40 ms of its start, a
        # slot every 20 ms) wait for its end: at least 2 of the 150 took about
        # 1 s, so p99 (nearest rank 149, the second slowest) does too.
        self.assertGreaterEqual(s["latency_ms"]["p99"], 900, s)
        self.assertGreaterEqual(s["latency_ms"]["max"], 900, s)

    def test_pause_past_the_end_drops_calls(self):
        # 50/s for 2 s, paused from 1 s in to 3 s in: the calls due in the
        # second half are stuck (4) or never made (dropped), and the run fails.
        rc, s, err, pause = self.run_with_pause(2.0, "--rate", 50, "--concurrency", 4,
                                                "--duration", "2s")
        self.assertEqual(rc, EXIT_NOT_ALL_OK, "%r\n%s" % (s, err))
        self.assertEqual(s["due"], 100, s)
        self.assertGreater(s["dropped"], 0, s)
        self.assertEqual(s["calls"] + s["dropped"], s["due"], s)
        # The lower bound: the pause began at least 1 s after the start (the
        # first progress line), so the run's end came at most 1 s into it,
        # and every call due from the pause to the end waited at least from
        # the end to the pause's end: one made answered no sooner, one dropped
        # is counted from its slot to when the first worker came free, no
        # sooner. That is every call due in the second half of the run less
        # what it took here to see the progress line and stop the signer:
        # about half of the 100, so p90 and p99 are at least pause - 1 s
        # (less 5% for the histogram's 0.4% and the time the stop takes to
        # land). Without the dropped calls counted, p90 read a few ms.
        bound_ms = (pause - 1.0) * 1000 * 0.95
        self.assertGreater(bound_ms, 900)
        for q in ("p90", "p99", "max"):
            self.assertGreaterEqual(s["latency_ms"][q], bound_ms, s)
        # The OK column is the calls made: most were quick.
        self.assertLess(s["ok_latency_ms"]["p50"], bound_ms, s)


if __name__ == "__main__":
    unittest.main(verbosity=2)
