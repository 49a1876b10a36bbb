#!/usr/bin/python3
"""test_http_hostile.py - the HTTP endpoint of a real jwt-signerd under hostile
clients ("Slowloris on the HTTP endpoint" and the HTTP defects).

1. Slowloris: 200 connections from 8 loopback addresses (127.0.0.2-.9, 25
   each) send `GET /.well-known/jwks.json HTTP/1.1` and Host, then one header
   line every 2 s; every connection that closes is reopened (at most twice a
   second per slot), for ATTACK_S seconds. Meanwhile a normal client on
   127.0.0.1 fetches the JWKS every 200 ms. Asserts: every normal fetch
   succeeds, quickly (latencies printed); each address holds at most
   JS_HTTP_PER_IP_LIMIT connections; every held slow connection is closed by
   the total header deadline (about 5 s after it was opened, although it kept
   sending), the close times are printed; and afterwards the signer serves
   JWKS, healthz and signing, its descriptor count is back to where it was,
   and it stops cleanly (no sanitizer report).
2. End to end: a 304 carries the 200's Content-Length or none (never 0); a NUL
   in the request path, raw or as %00, is 400 and never the /healthz answer;
   an HTTP/1.1 request without Host (or with two) is 400; HTTP/1.0 without
   Host is served.

Loopback only; every loop is bounded in count and time (the attack runs
ATTACK_S seconds, the whole file well under a minute).
"""

import http.client
import json
import os
import selectors
import socket
import statistics
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

JWKS_PATH = "/.well-known/jwks.json"
ATTACK_ADDRS = ["127.0.0.%d" % i for i in range(2, 10)]
PER_ADDR = 25                 # 8 x 25 = 200 slow connections
DRIP_S = 2.0                  # one header line every 2 s
ATTACK_S = 14.0               # the attack's length (bounded)
NORMAL_EVERY_S = 0.2
# From signer/http/http.h.
HEADER_TIMEOUT_S = 5.0
PER_IP_LIMIT = 16
EXIT_OK = 0


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def raw_request(port, data, timeout_s=5):
    """Sends data verbatim on a fresh connection, reads to EOF: (status, head, body)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=harness.timeout(timeout_s))
    try:
        s.sendall(data)
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    finally:
        s.close()
    head, _, body = buf.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
    return status, head.decode("latin-1"), body


def header_of(head, name):
    for line in head.split("\r\n")[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == name.lower():
            return v.strip()
    return None


class Slot:
    """One slowloris connection slot: reopened whenever the server closes it."""

    def __init__(self, src):
        self.src = src
        self.sock = None
        self.opened = 0.0
        self.next_drip = 0.0
        self.reopen_at = 0.0


class HttpHostile(unittest.TestCase):
    def setUp(self):
        self.env = harness.Env()
        self.t0 = time.monotonic()

    def tearDown(self):
        self.env.cleanup()
        sys.stderr.write("[%s: %.1f s] " % (self._testMethodName, time.monotonic() - self.t0))

    # --- 1. slowloris -----------------------------------------------------------------
    def test_slowloris_200_from_8_addresses(self):
        env = self.env
        env.setup()
        env.start()
        port = env.http_port
        pid = env.daemon.pid
        status, _, jwks_body = env.http_get(JWKS_PATH)
        self.assertEqual(status, 200)
        fds_before = fd_count(pid)

        # The normal client, on its own thread.
        latencies, failures = [], []
        stop = threading.Event()

        def normal_client():
            while not stop.is_set():
                t = time.monotonic()
                try:
                    st, _, body = env.http_get(JWKS_PATH, timeout_s=5)
                    if st != 200 or body != jwks_body:
                        failures.append("status %d" % st)
                except OSError as e:
                    failures.append("%s after %.2f s" % (e, time.monotonic() - t))
                latencies.append(time.monotonic() - t)
                stop.wait(NORMAL_EVERY_S)

        sel = selectors.DefaultSelector()
        slots = [Slot(a) for a in ATTACK_ADDRS for _ in range(PER_ADDR)]
        held_times = []        # seconds a connection lived, if it lived > 1 s
        refused = 0            # closed within 1 s (over the per-address limit)
        opened = 0
        max_alive = {a: 0 for a in ATTACK_ADDRS}
        head = b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\n"

        def open_slot(slot, now):
            nonlocal opened
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((slot.src, 0))
            s.settimeout(2)
            s.connect(("127.0.0.1", port))
            s.setblocking(False)
            try:
                s.send(head)
            except OSError:
                pass
            slot.sock, slot.opened, slot.next_drip = s, now, now + DRIP_S
            sel.register(s, selectors.EVENT_READ, slot)
            opened += 1

        def close_slot(slot, now):
            nonlocal refused
            lived = now - slot.opened
            if lived < 1.0:
                refused += 1
            else:
                held_times.append(lived)
            sel.unregister(slot.sock)
            slot.sock.close()
            slot.sock = None
            slot.reopen_at = slot.opened + 0.5 if lived < 0.5 else now

        worker = threading.Thread(target=normal_client, daemon=True)
        start = time.monotonic()
        for slot in slots:
            open_slot(slot, time.monotonic())
        worker.start()
        open_all_s = time.monotonic() - start
        while time.monotonic() - start < ATTACK_S:
            for key, _ in sel.select(timeout=0.05):
                slot = key.data
                try:
                    data = slot.sock.recv(4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    close_slot(slot, time.monotonic())
            now = time.monotonic()
            alive = {a: 0 for a in ATTACK_ADDRS}
            for slot in slots:
                if slot.sock is None:
                    if now >= slot.reopen_at:
                        open_slot(slot, now)
                    continue
                alive[slot.src] += 1
                if now >= slot.next_drip:
                    try:
                        slot.sock.send(b"X-Drip: 1\r\n")
                    except OSError:
                        pass
                    slot.next_drip = now + DRIP_S
            # A slot counts as held by the server once it has lived a second.
            for a in ATTACK_ADDRS:
                n = sum(1 for s in slots if s.src == a and s.sock is not None
                        and now - s.opened >= 1.0)
                max_alive[a] = max(max_alive[a], n)
        stop.set()
        worker.join(10)
        for slot in slots:
            if slot.sock is not None:
                sel.unregister(slot.sock)
                slot.sock.close()
        sel.close()
        attack_s = time.monotonic() - start

        # Figures.
        lat_ms = sorted(x * 1000 for x in latencies)
        p95 = lat_ms[int(0.95 * (len(lat_ms) - 1))] if lat_ms else 0
        print("\nslowloris: %d connections opened from %d addresses over %.1f s "
              "(first 200 in %.2f s)" % (opened, len(ATTACK_ADDRS), attack_s, open_all_s))
        print("slowloris: most held at once per address: %s (limit %d)"
              % (sorted(set(max_alive.values())), PER_IP_LIMIT))
        print("slowloris: %d refused at once (over the per-address limit), %d closed by the "
              "server after %.2f-%.2f s (median %.2f s)"
              % (refused, len(held_times), min(held_times or [0]), max(held_times or [0]),
                 statistics.median(held_times or [0])))
        print("normal client: %d JWKS fetches, %d failed, latency median %.1f ms, p95 %.1f ms, "
              "max %.1f ms" % (len(lat_ms), len(failures), statistics.median(lat_ms or [0]),
                               p95, max(lat_ms or [0])))

        self.assertEqual(failures, [])
        self.assertGreaterEqual(len(latencies), int(ATTACK_S / (NORMAL_EVERY_S + 0.1)))
        self.assertLess(max(lat_ms), 1000.0, "a normal JWKS fetch took over a second")
        self.assertLess(p95, 250.0)
        for a, n in max_alive.items():
            self.assertLessEqual(n, PER_IP_LIMIT, a)
        self.assertGreater(refused, 0)
        # Every held connection was closed by the total deadline, although it kept
        # sending a header line every 2 s (an idle timer would never have fired).
        self.assertGreaterEqual(len(held_times), len(ATTACK_ADDRS) * PER_IP_LIMIT)
        self.assertGreaterEqual(min(held_times), HEADER_TIMEOUT_S - 0.2)
        self.assertLessEqual(max(held_times), HEADER_TIMEOUT_S + 1.5)

        # The signer is fine afterwards: JWKS, healthz, signing; descriptors back.
        status, _, body = env.http_get(JWKS_PATH)
        self.assertEqual((status, body), (200, jwks_body))
        status, _, body = env.http_get("/healthz")
        self.assertEqual(status, 200, body)
        rc, out, err = env.sign("issuer-a", env.sample_claims(), "--json")
        self.assertEqual(rc, EXIT_OK, err)
        self.assertIn("jwt", json.loads(out))
        deadline = time.monotonic() + harness.timeout(5)
        while fd_count(pid) > fds_before + 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        fds_after = fd_count(pid)
        print("signer descriptors: %d before the attack, %d after" % (fds_before, fds_after))
        self.assertLessEqual(fds_after, fds_before + 2)
        self.assertEqual(env.stop(), 0)

    # --- 2. the HTTP defects, end to end ---------------------------------------------
    def test_304_nul_host_end_to_end(self):
        env = self.env
        env.setup()
        env.start()
        port = env.http_port
        status, headers, body = env.http_get(JWKS_PATH)
        self.assertEqual(status, 200)
        etag = headers["etag"]

        # RFC 9110 section 8.6: the 200's length or none, never Content-Length: 0.
        req = ("GET %s HTTP/1.1\r\nHost: x\r\nIf-None-Match: %s\r\nConnection: close\r\n\r\n"
               % (JWKS_PATH, etag)).encode()
        status, head, b304 = raw_request(port, req)
        self.assertEqual(status, 304, head)
        self.assertEqual(b304, b"")
        cl = header_of(head, "Content-Length")
        self.assertIn(cl, (None, str(len(body))), head)
        print("\n304: Content-Length %s (200 body: %d bytes)" % (cl, len(body)))

        # A NUL in the path is 400, never the /healthz answer.
        for path in (b"/healthz\x00/x", b"/healthz\x00", b"/healthz%00", b"/healthz%00.json",
                     b"/.well-known/jwks.json%00"):
            status, head, b = raw_request(
                port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            self.assertEqual(status, 400, (path, head, b))
            self.assertNotIn(b"status", b)
            self.assertNotIn(b"keys", b)

        # Host: required on HTTP/1.1 (RFC 9112 section 3.2), once.
        status, head, _ = raw_request(
            port, b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
        self.assertEqual(status, 400, head)
        status, head, _ = raw_request(
            port, b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n")
        self.assertEqual(status, 400, head)
        status, head, _ = raw_request(port, b"GET /healthz HTTP/1.0\r\n\r\n")
        self.assertEqual(status, 200, head)

        # And the ordinary client still gets everything.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=harness.timeout(5))
        try:
            conn.request("GET", JWKS_PATH)
            r = conn.getresponse()
            self.assertEqual((r.status, r.read()), (200, body))
            conn.request("GET", JWKS_PATH, headers={"If-None-Match": etag})
            r = conn.getresponse()
            self.assertEqual((r.status, r.read()), (304, b""))
            conn.request("GET", "/healthz")
            r = conn.getresponse()
            self.assertEqual(r.status, 200)
            r.read()
        finally:
            conn.close()
        self.assertEqual(env.stop(), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
