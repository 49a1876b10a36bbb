"""test_fd_flood.py - an unauthenticated peer opens more idle TCP connections
to the gRPC port than the signer has file descriptors (the signer runs under
`prlimit --nofile=256:256`), holds them 3 s without sending a byte, and
closes them. gRPC 1.51 stops accepting for good after accept4 fails with
EMFILE; the signer must notice, re-create its listener and sign again within
5 s of the flood's end, without a restart, with its audit log intact.
"""

import json
import os
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import rawgrpc  # noqa: E402

NOFILE = 256
FLOOD = 400  # connections: well past the limit


class FdFlood(unittest.TestCase):
    def setUp(self):
        self.env = harness.Env()
        self.env.setup()

    def tearDown(self):
        self.env.cleanup()

    def _start_limited(self):
        env = self.env
        extra = env._pin_env_for(env.config_path)
        d = harness.Daemon(["prlimit", "--nofile=%d:%d" % (NOFILE, NOFILE), harness.signerd_path(),
                            "--config", env.config_path], env.env(extra), env.dir)
        env.daemon = d
        env.daemons.append(d)
        d.wait_listening(harness.timeout(20))
        return d

    def _sign_ok(self):
        rc, out, err = self.env.sign("issuer-a", self.env.sample_claims(), timeout_s=10)
        return rc == 0

    def test_idle_flood_beyond_fd_limit_recovers_without_restart(self):
        d = self._start_limited()
        pid = d.pid
        limit = d.logs("fd_limit")
        self.assertTrue(limit, "the fd limit in force is logged at start")
        self.assertEqual(limit[0]["soft"], NOFILE, limit[0])
        self.assertGreater(limit[0]["reserved"], 0, limit[0])
        self.assertTrue(self._sign_ok(), "signing before the flood")

        # A legitimate caller on an established connection signs 50/s
        # throughout: the connections accepted before the flood keep working.
        ca, cert, key = self.env.caller_files("issuer-a")
        ch = rawgrpc.channel(self.env.port, ca, cert, key)
        req = rawgrpc.sign_request(json.dumps(self.env.sample_claims()).encode())
        self.assertEqual(rawgrpc.call(ch, rawgrpc.SIGN, req)[0], "OK")
        results = []
        stop = threading.Event()

        def steady():
            while not stop.is_set():
                code, details, _ = rawgrpc.call(ch, rawgrpc.SIGN, req, timeout=5)
                results.append((code, details))
                time.sleep(0.02)

        t = threading.Thread(target=steady)
        t.start()
        socks = []
        for _ in range(FLOOD):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", self.env.port))
            except BlockingIOError:
                pass
            socks.append(s)
        time.sleep(3.0)
        for s in socks:
            s.close()
        flood_end = time.monotonic()

        recovered = None
        deadline = flood_end + harness.timeout(5)
        while time.monotonic() < deadline:
            if self._sign_ok():
                recovered = time.monotonic() - flood_end
                break
            time.sleep(0.2)
        time.sleep(1.0)
        stop.set()
        t.join()
        ch.close()
        failed = [r for r in results if r[0] != "OK"]
        sys.stderr.write("fd flood: established caller %d/%d OK during the flood; failures e.g. "
                         "%r\n" % (len(results) - len(failed), len(results), failed[:3]))
        if failed:
            with open(os.path.join(os.environ.get("TMPDIR", "/tmp"), "fd_flood_signer.log"), "w") as f:
                f.write("\n".join(d.stderr_lines()) + "\n")
        self.assertEqual(failed, [], "the established caller failed during the flood")
        lost = d.logs("grpc_listener_lost")
        sys.stderr.write("fd flood: %d idle connections at nofile=%d; listener lost: %s; signing "
                         "again %.2f s after the flood ended\n"
                         % (FLOOD, NOFILE, json.dumps(lost), recovered if recovered else -1))
        self.assertIsNotNone(recovered, "signing did not resume within 5 s of the flood's end: "
                             + d.tail(30))
        self.assertEqual(d.pid, pid)
        self.assertTrue(d.running())
        if lost:
            # The listener died of EMFILE and was re-created on the same port.
            self.env.wait_log(lambda o: o.get("event") == "grpc_listener_recreated",
                              timeout_s=10)
        st, _, body = self.env.http_get("/healthz")
        self.assertEqual(st, 200, body)
        # Several more in a row: the HSM sessions and audit log are fine.
        for _ in range(5):
            self.assertTrue(self._sign_ok())
        self.assertEqual(self.env.stop(), 0)
        self.assertTrue(d.logs("stopped"))
        rc, out, err = self.env.run([harness.audit_path(), "verify", self.env.audit_dir()])
        self.assertEqual(rc, 0, out + err)


class HandshakeFlood(unittest.TestCase):
    """Failed TLS handshakes cost an unauthenticated peer nothing; each makes
    gRPC log a line. Those lines are kept within a per-second budget and the
    rest are counted in grpc_log_folded lines, so log bytes stay bounded."""

    def setUp(self):
        self.env = harness.Env()
        self.env.setup()

    def tearDown(self):
        self.env.cleanup()

    def test_failed_handshake_log_lines_are_bounded(self):
        import ssl
        env = self.env
        env.start()
        ctx = ssl.create_default_context(cafile=env.path("pki", "ca.crt"))
        ctx.check_hostname = False
        n = 300
        t0 = time.monotonic()
        for _ in range(n):  # no client certificate: the server refuses each one
            try:
                with socket.create_connection(("127.0.0.1", env.port), timeout=5) as raw:
                    with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                        tls.settimeout(5)
                        tls.recv(1)
            except (OSError, ssl.SSLError):
                pass
        elapsed = time.monotonic() - t0
        time.sleep(1.5)  # the main loop writes the last folded count
        lines = env.logs("grpc")
        folded = sum(o.get("count", 0) for o in env.logs("grpc_log_folded"))
        seconds = int(elapsed) + 2
        sys.stderr.write("handshake flood: %d failed handshakes in %.1f s -> %d gRPC log lines, "
                         "%d folded\n" % (n, elapsed, len(lines), folded))
        self.assertLessEqual(len(lines), 20 * seconds, "gRPC log lines over the budget")
        self.assertGreater(folded, 0, "nothing was folded: the flood was not over the budget?")
        # The signer still works for a real caller.
        rc, out, err = env.sign("issuer-a", env.sample_claims())
        self.assertEqual(rc, 0, err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
