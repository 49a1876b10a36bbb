#!/usr/bin/python3
"""test_soak.py - the hostile soak test: a legitimate caller signs at
a steady rate while the signer is attacked and broken, one attack after
another and then all together, and the signer must keep serving it, keep
serving the JWKS, heal by itself and keep its audit log complete and small.

Set-up: a SoftHSM token behind the fault-injecting PKCS#11 shim
(tests/p11shim, JS_P11SHIM), the audit directory on a small tmpfs mounted
here (needs root, as CI runs; unmounted in a finally), and jwt-signerd started
under `prlimit --nofile=256:256`. Callers: issuer-a (the legitimate caller),
issuer-b (frozen in phase d), issuer-c (the rapid-reset attacker), intruder
(matches no policy entry) and the admin.

Running throughout: issuer-a signs RATE times a second on one long-lived
channel (python3-grpcio; every token kept with its jti and audit_seq), and
JWKS is fetched from 127.0.0.1 every JWKS_INTERVAL s on a new connection.

Phases, each a function, run in this order:
  a  idle TCP connections to the gRPC port beyond the fd limit, held 3 s
  b  slow HTTP clients (one header line every 2 s) from 127.0.0.2-.9 against
     the JWKS endpoint, reconnecting when cut, 200 open at a time
  c  a denied-caller flood (intruder: SignJwt with client_load, and Admin
     GetStatus, which it may not call)
  d  a frozen-caller flood (issuer-b frozen through the Admin API)
  e  HTTP/2 rapid reset: HEADERS+RST_STREAM on one mTLS connection (h2reset.py)
  f  an HSM fault through the shim
  g  a full audit disk (the tmpfs filled, then freed)
  together  a-e at once, with f and then g injected while they run
JS_SOAK_PHASES=a,c,together (say) runs a subset to diagnose one fix; the
committed test runs all of them.

Asserted, per phase and at the end:
  - the legitimate caller's success rate outside the deliberate HSM-fault and
    audit-full windows (each from the fault's start to its measured recovery)
    is >= 99%;
  - every JWKS fetch succeeded (200, a JWK Set) within JWKS_TIMEOUT;
  - after each phase the signer signs again through a new connection and
    /healthz is 200 within RECOVERY_LIMIT s (5 s; scaled in sanitizer builds),
    with the same PID;
  - the audit bytes each flood caused (its records, framing included) stay
    within the budget, and so do its log lines;
  - at the end `jwt-audit verify` passes (with the audit public key and an
    off-host copy of a checkpoint taken mid-run), and every token the caller
    received has its record: same jti, seq = audit_seq, token_sha256.
A table of figures (success rate, recovery time per phase, audit bytes per
flood, JWKS latency) is printed for quoting.

Programs: the harness's, JS_AUDIT, JS_P11SHIM; prlimit (util-linux).
Run with /usr/bin/python3 (python3-grpcio, python3-cryptography).
"""

import errno
import hashlib
import http.client
import json
import math
import os
import re
import resource
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
import unittest
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import h2reset  # noqa: E402
import rawgrpc  # noqa: E402

import grpc  # noqa: E402

LEGIT = harness.CALLER_URIS["issuer-a"]
INTRUDER = harness.CALLER_URIS["intruder"]
FROZEN = "spiffe://example.org/issuer-b"
RESETTER = "spiffe://example.org/issuer-c"
ADMIN = "spiffe://example.org/ops/admin"
JWKS_PATH = "/.well-known/jwks.json"
# Status codes only the signer's own denials carry (a refused connection is
# UNAVAILABLE and never reached it; a deadline may or may not have).
SERVER_DENIALS = ("PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "INVALID_ARGUMENT",
                  "UNAUTHENTICATED", "FAILED_PRECONDITION")
URI_OF = {"issuer-a": LEGIT, "intruder": INTRUDER, "issuer-b": FROZEN, "issuer-c": RESETTER}
ADMIN_STATUS = "/jwtsigner.v1.Admin/GetStatus"

def _header_define(path, name, default):
    """A #define'd integer from a header of the source tree (the documented limit)."""
    try:
        with open(os.path.join(harness.source_dir(), path), encoding="utf-8") as f:
            m = re.search(r"#define\s+%s\s+(\d+)" % re.escape(name), f.read())
    except OSError:
        m = None
    return int(m.group(1)) if m else default


ALL_PHASES = ["a", "b", "c", "d", "e", "f", "g", "together"]
FAULT_PHASES = ("f", "g")  # deliberate outages: excluded from the success rate

SCALE = harness.timeout(1.0)
FD_LIMIT = 256
RATE = 50                              # legitimate calls per second
CALL_DEADLINE = harness.timeout(2.0)   # per legitimate call
JWKS_INTERVAL = 0.2
JWKS_TIMEOUT = harness.timeout(2.0)
RECOVERY_LIMIT = harness.timeout(5.0)  # within 5 s of each fault's end
STABLE = 1.0                           # recovered: no steady failure for this long
SETTLE = 1.5                           # after a flood: folded records are per second
SUCCESS_TARGET = 0.99

IDLE_CONNS = FD_LIMIT + 144            # a: well past the fd limit
IDLE_HOLD = 3.0
SLOW_ADDRS = ["127.0.0.%d" % i for i in range(2, 10)]  # b: 8 addresses
SLOW_CONNS = 200
SLOW_HOLD = 8.0
SLOW_LINE_EVERY = 2.0
SLOW_MAX_OPENS = SLOW_CONNS * 12
FLOOD_THREADS = 4                      # c, d: client_load threads
FLOOD_REQUESTS = int(3000 / SCALE)
ADMIN_FLOOD = int(600 / SCALE)
RESET_STREAMS = int(20000 / SCALE)     # e
RESET_TIME = 10.0
TOGETHER_MAX_RUNS = 20                 # together: flood rounds until f and g are done
TOGETHER_RESET_RATE = 5000 / SCALE     # together: HEADERS+RST_STREAM pairs per second
HSM_FAULT_HOLD = 2.0                   # f
DISK_FULL_HOLD = 2.0                   # g
TMPFS_SIZE = 48 * 1024 * 1024
WATERMARK = 8 * 1024 * 1024            # audit.min_free_bytes: /healthz degraded below it

# The documented denial budget (audit/FORMAT.md section 3.1, signer/core/denials.h):
# per identity (or peer address without one) at most BURST full denial records,
# then RATE a second; over all keys GLOBAL_BURST, then GLOBAL_RATE a second; at
# most one folded record per (type, caller, reason) per second. A denial
# refused before its claims are read (no match, frozen, not an admin) is at
# most about 2.5 KiB, a folded record at most about 1.4 KiB; a peer without
# a certificate causes no audit record at all.
DENIAL_RATE = _header_define("signer/core/denials.h", "JS_DENIALS_RATE", 5)
DENIAL_BURST = _header_define("signer/core/denials.h", "JS_DENIALS_BURST", 10)
DENIAL_GLOBAL_RATE = _header_define("signer/core/denials.h", "JS_DENIALS_GLOBAL_RATE", 50)
DENIAL_GLOBAL_BURST = _header_define("signer/core/denials.h", "JS_DENIALS_GLOBAL_BURST", 100)
FULL_DENIAL_MAX = 2560
FOLDED_MAX = 1434
# Without an identity (idle TCP, slow HTTP): lifecycle records the flood may
# cause (the gRPC listener lost and re-created) and log lines per second.
LIFECYCLE_MAX = 8
NOIDENT_LOG_LPS = 10
NOIDENT_LOG_BURST = 20


HTTP_HEADER_TIMEOUT = _header_define("signer/http/http.h", "JS_HTTP_HEADER_TIMEOUT_MS", 10000) / 1000.0


def p11shim_path():
    path = os.environ.get("JS_P11SHIM") or os.path.join(harness.source_dir(), "build", "tests",
                                                        "libp11shim.so")
    if not os.path.isfile(path):
        raise harness.HarnessError("JS_P11SHIM: %s not found (build the p11shim target)" % path)
    return os.path.abspath(path)


def selected_phases():
    raw = os.environ.get("JS_SOAK_PHASES", "").strip()
    if not raw:
        return list(ALL_PHASES)
    want = [p.strip() for p in raw.split(",") if p.strip()]
    bad = [p for p in want if p not in ALL_PHASES]
    if bad:
        raise harness.HarnessError("JS_SOAK_PHASES: unknown phase(s) %s; known: %s"
                                   % (bad, ",".join(ALL_PHASES)))
    return [p for p in ALL_PHASES if p in want]


# --- protobuf (hand-decoded, as rawgrpc.py encodes) ---------------------------------

def _varint(buf, i):
    shift = value = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("bad varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def pb_fields(buf):
    """{field number: value} of a message with varint and length-delimited fields."""
    out, i = {}, 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            out[num], i = _varint(buf, i)
        elif wire == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise ValueError("truncated field %d" % num)
            out[num] = bytes(buf[i:i + n])
            i += n
        else:
            raise ValueError("unexpected wire type %d" % wire)
    return out


def _creds(files):
    ca, cert, key = files
    with open(ca, "rb") as f:
        root = f.read()
    with open(cert, "rb") as f:
        chain = f.read()
    with open(key, "rb") as f:
        pkey = f.read()
    return grpc.ssl_channel_credentials(root_certificates=root, private_key=pkey,
                                        certificate_chain=chain)


def _wall(text):
    """RFC 3339 UTC with milliseconds (FORMAT.md) -> Unix seconds."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=timezone.utc).timestamp()


def _pct(values, q):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


# --- the legitimate caller and the JWKS poller --------------------------------------

class SteadyCaller:
    """Signs RATE times a second on one long-lived channel; keeps every outcome."""

    def __init__(self, port, files, rate):
        self.channel = grpc.secure_channel("localhost:%d" % port, _creds(files))
        self.sign = self.channel.unary_unary(rawgrpc.SIGN)
        self.claims = json.dumps(harness.Env.sample_claims(), separators=(",", ":")).encode()
        self.rate = rate
        self.calls = []  # dicts: i, t0, t1, code, details, jti, seq, jwt
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()

    def _run(self):
        period = 1.0 / self.rate
        nxt = time.monotonic()
        i = 0
        while not self.stop_ev.is_set():
            delay = nxt - time.monotonic()
            if delay > 0 and self.stop_ev.wait(delay):
                break
            rec = {"i": i, "t0": time.monotonic(), "t1": None, "code": None}
            with self.lock:
                self.calls.append(rec)
            payload = rawgrpc.sign_request(self.claims, request_id=b"soak-%d" % i)
            try:
                fut = self.sign.future(payload, timeout=CALL_DEADLINE)
                fut.add_done_callback(lambda f, r=rec: self._done(r, f))
            except Exception as e:  # pylint: disable=broad-except
                rec.update(t1=time.monotonic(), code="CLIENT_ERROR", details=str(e))
            i += 1
            nxt += period
            if nxt < time.monotonic() - 1.0:  # never burst to catch up after a stall
                nxt = time.monotonic()

    def _done(self, rec, fut):
        t1 = time.monotonic()
        exc = fut.exception()
        if exc is not None:
            code = exc.code().name if hasattr(exc, "code") else "CLIENT_ERROR"
            details = exc.details() if hasattr(exc, "details") else str(exc)
            with self.lock:
                rec.update(t1=t1, code=code, details=details or "")
            return
        try:
            f = pb_fields(fut.result())
            tok = {"jwt": f[1].decode("ascii"), "jti": f[3].decode("ascii"), "seq": f.get(6, 0)}
        except (KeyError, ValueError, UnicodeDecodeError) as e:
            with self.lock:
                rec.update(t1=t1, code="BAD_RESPONSE", details=str(e))
            return
        with self.lock:
            rec.update(t1=t1, code="OK", **tok)

    def first_ok_after(self, t):
        with self.lock:
            oks = [c["t1"] for c in self.calls if c["code"] == "OK" and c["t0"] >= t]
        return min(oks) if oks else None

    def failures_between(self, t0, t1):
        with self.lock:
            return [c for c in self.calls if t0 <= c["t0"] <= t1 and c["code"] not in (None, "OK")]

    def finish(self):
        self.stop_ev.set()
        self.thread.join(5)
        end = time.monotonic() + CALL_DEADLINE + 5
        while time.monotonic() < end:
            with self.lock:
                if all(c["code"] is not None for c in self.calls):
                    break
            time.sleep(0.05)
        self.channel.close()


class JwksPoller:
    """Fetches the JWKS from 127.0.0.1 on a new connection every JWKS_INTERVAL s."""

    def __init__(self, port):
        self.port = port
        self.fetches = []  # (t0, latency, ok, error)
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()

    def _run(self):
        while not self.stop_ev.is_set():
            t0 = time.monotonic()
            ok, error = False, ""
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=JWKS_TIMEOUT)
            try:
                conn.request("GET", JWKS_PATH)
                r = conn.getresponse()
                body = r.read()
                if r.status != 200:
                    error = "status %d" % r.status
                elif not isinstance(json.loads(body).get("keys"), list) or not json.loads(body)["keys"]:
                    error = "no keys"
                else:
                    ok = True
            except (OSError, http.client.HTTPException, ValueError) as e:
                error = "%s: %s" % (type(e).__name__, e)
            finally:
                conn.close()
            lat = time.monotonic() - t0
            if lat > JWKS_TIMEOUT and ok:
                ok, error = False, "took %.2f s" % lat
            with self.lock:
                self.fetches.append((t0, lat, ok, error))
            self.stop_ev.wait(max(0.0, JWKS_INTERVAL - lat))

    def between(self, t0, t1):
        with self.lock:
            return [f for f in self.fetches if t0 <= f[0] <= t1]

    def finish(self):
        self.stop_ev.set()
        self.thread.join(JWKS_TIMEOUT + 5)


# --- one phase's record ---------------------------------------------------------------

class Phase:
    def __init__(self, name, label):
        self.name = name
        self.label = label
        self.t0 = self.t1 = None        # monotonic: attack/fault start and end
        self.w0 = self.w1 = None        # wall clock of the same
        self.line0 = self.line1 = 0     # daemon stderr line indexes
        self.audit_size0 = self.audit_size1 = 0
        self.recovery = None            # seconds from t1 to recovered, None: not within bound
        self.figures = {}               # free-form numbers for the table
        self.identities = {}            # attributed identity -> label (for audit/log budgets)
        self.noident = False            # attribute records without a caller too
        self.fault_windows = []         # (t0, t1) monotonic: excluded from the success rate
        self.hsm_windows = []           # wall clock of HSM faults (recovery audited after)
        self.disk_faults = 0            # audit disk filled (watermark logged after)
        self.audit = {}                 # identity label -> (records, bytes)
        self.loglines = {}              # identity label -> lines
        self.errors = []
        self.sent = {}                  # attacker identity -> denials it was sent
        self.lock = threading.Lock()

    def add_sent(self, identity, n):
        with self.lock:
            self.sent[identity] = self.sent.get(identity, 0) + n


# --- the run ---------------------------------------------------------------------------

class SoakRun:
    def __init__(self, phases):
        self.phases = phases
        self.env = harness.Env(prefix="jwt-signer-soak-")
        self.mounted = False
        self.daemon = None
        self.pid = None
        self.caller = None
        self.poller = None
        self.results = []
        self.failures = []
        self.tokens_extra = []          # tokens received by recovery probes
        self.offhost_checkpoint = None
        self.shim_control = self.env.path("p11shim.control")
        self.filler = None
        self.final_jwks = None

    # --- checks ------------------------------------------------------------------------
    def check(self, ph, cond, msg):
        if not cond:
            text = "[%s] %s" % (ph.name if ph else "run", msg)
            self.failures.append(text)
            if ph is not None:
                ph.errors.append(msg)
            sys.stderr.write("SOAK FAIL " + text + "\n")
        return cond

    # --- set-up ------------------------------------------------------------------------
    def setup(self):
        env = self.env
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = IDLE_CONNS + SLOW_CONNS + 512
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
        env.init_token()
        env.make_pki({"issuer-b": FROZEN, "issuer-c": RESETTER, "admin": ADMIN})
        callers = [{"id": LEGIT}, {"id": FROZEN}, {"id": RESETTER}]
        env.write_policy(env.default_policy(callers=callers))
        audit_dir = env.path("audit")
        os.makedirs(audit_dir, mode=0o700)
        if "g" in self.phases or "together" in self.phases:
            if os.geteuid() != 0:
                raise harness.HarnessError("phase g mounts a tmpfs and needs root (CI runs as "
                                           "root); leave g and together out with JS_SOAK_PHASES")
            rc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d,mode=0700" % TMPFS_SIZE,
                                 "jwt-signer-soak", audit_dir], capture_output=True, text=True,
                                timeout=30, check=False)
            if rc.returncode != 0:
                raise harness.HarnessError("mount tmpfs on %s failed: %s" % (audit_dir, rc.stderr))
            self.mounted = True
        overrides = {}
        if "f" in self.phases or "together" in self.phases:
            overrides["module"] = p11shim_path()
        audit = {"dir": "audit", "key_label": harness.AUDIT_KEY_LABEL,
                 "min_free_bytes": WATERMARK}
        overrides["audit"] = audit
        cfg = env.write_config(**overrides)
        env.keygen(harness.DEFAULT_KEY["name"], cfg)
        env.keygen_audit(cfg)

    def daemon_env(self):
        return {"JS_P11SHIM_CONTROL": self.shim_control,
                "JS_P11SHIM_MODULE": self.env.module or harness.softhsm_module()}

    def start(self):
        env = self.env
        with open(self.shim_control, "w", encoding="ascii") as f:
            f.write("")
        extra = env._pin_env_for(env.config_path)  # pylint: disable=protected-access
        extra.update(self.daemon_env())
        argv = ["prlimit", "--nofile=%d:%d" % (FD_LIMIT, FD_LIMIT), "--",
                harness.signerd_path(), "--config", env.config_path]
        d = harness.Daemon(argv, env.env(extra), env.dir)
        env.daemon = d
        env.daemons.append(d)
        d.wait_listening(20)
        self.daemon = d
        self.pid = d.pid
        lim = d.logs("fd_limit")
        self.check(None, lim and lim[0].get("soft") == FD_LIMIT,
                   "the fd limit in force is logged at start (event fd_limit, soft %d): %s"
                   % (FD_LIMIT, lim))
        self.caller = SteadyCaller(d.port, env.caller_files("issuer-a"), RATE)
        self.poller = JwksPoller(d.http_port)
        self.caller.start()
        self.poller.start()
        time.sleep(1.0)  # a baseline second of normal traffic
        oks = [c for c in self.caller.calls if c["code"] == "OK"]
        if not oks:
            raise harness.HarnessError("the legitimate caller cannot sign before any attack:\n%s"
                                       % self.caller.calls[:3])

    # --- helpers -----------------------------------------------------------------------
    def alive(self):
        return self.daemon.running() and self.daemon.pid == self.pid

    def audit_bytes(self):
        total = 0
        d = self.env.audit_dir()
        for name in os.listdir(d):
            if name.startswith("audit-") and name.endswith(".log"):
                try:
                    total += os.path.getsize(os.path.join(d, name))
                except OSError:
                    pass
        return total

    def probe(self):
        """A SignJwt through a NEW connection and /healthz: (ok, what failed)."""
        ch = grpc.secure_channel("localhost:%d" % self.daemon.port,
                                 _creds(self.env.caller_files("issuer-a")),
                                 options=[("grpc.use_local_subchannel_pool", 1)])
        try:
            payload = rawgrpc.sign_request(self.caller.claims, request_id=b"soak-probe")
            resp = ch.unary_unary(rawgrpc.SIGN)(payload, timeout=harness.timeout(1.0))
            f = pb_fields(resp)
            self.tokens_extra.append({"jwt": f[1].decode("ascii"), "jti": f[3].decode("ascii"),
                                      "seq": f.get(6, 0)})
        except grpc.RpcError as e:  # pylint: disable=no-member
            return False, "sign: %s %s" % (e.code().name, e.details())
        finally:
            ch.close()
        st, body = self.healthz()
        if st != 200:
            return False, "healthz %d %s" % (st, body[:200])
        return True, ""

    def recover(self, ph, since, steady=False):
        """Seconds from `since` until the signer serves again: a NEW connection signs and
        /healthz is 200, and with steady, the long-lived caller signs again and keeps
        signing: its last failure (of a call started after `since`) is part of the
        recovery. None if not recovered within 3 * RECOVERY_LIMIT (so a slow
        recovery is still measured)."""
        end = since + 3 * RECOVERY_LIMIT
        last = ""
        while time.monotonic() < end:
            if not self.daemon.running():
                last = "jwt-signerd exited"
                break
            ok, last = self.probe()
            t = time.monotonic() - since
            if ok and steady:
                first = self.caller.first_ok_after(since)
                if first is None:
                    ok, last = False, "the steady caller has not signed since the fault's end"
            if ok and steady:
                # Stable: no failure of a call started in the last STABLE seconds.
                now = time.monotonic()
                if now - since < STABLE or self.caller.failures_between(now - STABLE, now):
                    ok, last = False, "the steady caller still fails: %s" % (
                        self.caller.failures_between(since, now)[-1:],)
                else:
                    fails = [c for c in self.caller.failures_between(since, now) if c["t1"]]
                    t = max([t] + [c["t1"] - since for c in fails])
                    t = max(t, first - since)
            if ok:
                return t
            time.sleep(0.1)
        ph.figures["recovery_error"] = last
        return None

    def begin(self, ph):
        ph.t0, ph.w0 = time.monotonic(), time.time()
        ph.line0 = len(self.daemon.stderr_lines())
        ph.audit_size0 = self.audit_bytes()

    def end(self, ph):
        ph.t1, ph.w1 = time.monotonic(), time.time()

    def close_phase(self, ph, steady=False):
        """Recovery after ph.t1, then SETTLE, then the phase's audit size and log lines."""
        ph.recovery = self.recover(ph, ph.t1, steady=steady)
        self.check(ph, ph.recovery is not None and ph.recovery <= RECOVERY_LIMIT,
                   "recovered in %s s after the end (limit %.1f s): %s"
                   % ("%.2f" % ph.recovery if ph.recovery is not None else "never",
                      RECOVERY_LIMIT, ph.figures.get("recovery_error", "")))
        self.check(ph, self.alive(), "jwt-signerd is still the same process (pid %d)" % self.pid)
        time.sleep(SETTLE)
        ph.line1 = len(self.daemon.stderr_lines())
        ph.audit_size1 = self.audit_bytes()
        self.results.append(ph)

    # --- attacks (each returns figures; usable alone or together) ----------------------
    def attack_idle(self, ph):
        """a: IDLE_CONNS plain TCP connections to the gRPC port, nothing sent, held."""
        socks, connected, cut = [], 0, 0
        try:
            for _ in range(IDLE_CONNS):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", self.daemon.port))
                socks.append(s)
            end = time.monotonic() + IDLE_HOLD
            pending = list(socks)
            while pending and time.monotonic() < end:
                _, w, _ = select.select([], pending, [], max(0.0, min(0.5, end - time.monotonic())))
                for s in w:
                    if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                        connected += 1
                    pending.remove(s)
            time.sleep(max(0.0, end - time.monotonic()))
            # Connections the server has already dropped read EOF (or a reset).
            r, _, _ = select.select(socks, [], [], 0)
            for s in r:
                try:
                    if s.recv(1) == b"":
                        cut += 1
                except OSError:
                    cut += 1
        finally:
            for s in socks:
                s.close()
        ph.figures.update(idle_conns=IDLE_CONNS, idle_connected=connected, idle_cut_by_server=cut)

    def attack_slowloris(self, ph, hold=SLOW_HOLD):
        """b: SLOW_CONNS slow JWKS requests from 8 addresses, reopened when cut."""
        port = self.daemon.http_port
        opened, refused, lifetimes = 0, 0, []
        conns = {}  # socket -> (opened at, next line at)

        def open_one(i):
            nonlocal opened, refused
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((SLOW_ADDRS[i % len(SLOW_ADDRS)], 0))
                s.settimeout(1.0)
                s.connect(("127.0.0.1", port))
                s.sendall(b"GET " + JWKS_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\n")
                s.setblocking(False)
            except OSError:
                s.close()
                refused += 1
                return
            opened += 1
            now = time.monotonic()
            conns[s] = (now, now + SLOW_LINE_EVERY)

        start = time.monotonic()
        end = start + hold
        k = 0
        try:
            while time.monotonic() < end:
                while len(conns) < SLOW_CONNS and opened + refused < SLOW_MAX_OPENS \
                        and time.monotonic() < end:
                    open_one(k)
                    k += 1
                now = time.monotonic()
                r, _, _ = select.select(list(conns), [], [], 0.05) if conns else ([], [], [])
                for s in r:  # the server answered (408/431/...) or closed: it cut us off
                    lifetimes.append(now - conns.pop(s)[0])
                    s.close()
                for s, (t_open, t_next) in list(conns.items()):
                    if now >= t_next:
                        try:
                            s.send(b"X-Slow-%d: x\r\n" % k)
                            conns[s] = (t_open, now + SLOW_LINE_EVERY)
                        except OSError:
                            lifetimes.append(now - conns.pop(s)[0])
                            s.close()
                if not conns and opened + refused >= SLOW_MAX_OPENS:
                    time.sleep(0.05)
        finally:
            still_open = len(conns)
            oldest = max((time.monotonic() - t for t, _ in conns.values()), default=0.0)
            for s in conns:
                s.close()
        ph.figures.update(slow_opened=opened, slow_refused=refused, slow_cut=len(lifetimes),
                          slow_open_at_end=still_open, slow_oldest_at_end=oldest,
                          slow_life_max=max(lifetimes, default=0.0))
        # A total deadline on the request header (not an idle timer) cuts every slow
        # client JS_HTTP_HEADER_TIMEOUT_MS after it connected, whatever it sends.
        limit = HTTP_HEADER_TIMEOUT + harness.timeout(1.0)
        self.check(ph, oldest <= limit and max(lifetimes, default=0.0) <= limit,
                   "every slow HTTP client is cut within the header deadline (%.1f s + 1 s): "
                   "longest life %.1f s, oldest still open %.1f s"
                   % (HTTP_HEADER_TIMEOUT, max(lifetimes, default=0.0), oldest))

    def client_flood(self, ph, caller, requests, key):
        """c, d: client_load with caller's certificate; the summary goes into figures."""
        ca, cert, pkey = self.env.caller_files(caller)
        claims = json.dumps(harness.Env.sample_claims(), separators=(",", ":"))
        argv = [harness.client_test_path(), "--target", "localhost:%d" % self.daemon.port,
                "--ca", ca, "--cert", cert, "--key", pkey, "--threads", str(FLOOD_THREADS),
                "--requests", str(requests), "--claims", claims, "--timeout-ms", "5000"]
        t0 = time.monotonic()
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=harness.timeout(60),
                               env=self.env.env(), check=False)
            out = p.stdout
        except subprocess.TimeoutExpired as e:
            out = e.stdout or ""
        try:
            summary = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            summary = {"error": out[-300:]}
        elapsed = time.monotonic() - t0
        ph.figures[key] = summary
        ph.add_sent(URI_OF[caller], sum(n for c, n in (summary.get("by_code") or {}).items()
                                        if c in SERVER_DENIALS))
        ph.figures[key + "_rate"] = summary.get("total", 0) / elapsed if elapsed else 0
        ph.figures[key + "_runs"] = ph.figures.get(key + "_runs", 0) + 1
        self.check(ph, summary.get("ok") == 0 and summary.get("total") == requests,
                   "%s flood: all %d requests made, none signed: %s" % (caller, requests, summary))

    def admin_flood(self, ph, caller, calls):
        """c: Admin/GetStatus by a caller that is not an admin, CONCURRENCY in flight."""
        ch = grpc.secure_channel("localhost:%d" % self.daemon.port,
                                 _creds(self.env.caller_files(caller)),
                                 options=[("grpc.use_local_subchannel_pool", 1)])
        codes = {}
        sem = threading.Semaphore(32)
        lock = threading.Lock()

        def done(fut):
            exc = fut.exception()
            name = exc.code().name if exc is not None else "OK"
            with lock:
                codes[name] = codes.get(name, 0) + 1
            sem.release()

        fn = ch.unary_unary(ADMIN_STATUS)
        t0 = time.monotonic()
        try:
            for _ in range(calls):
                if not sem.acquire(timeout=harness.timeout(10)):
                    break
                fn.future(b"", timeout=harness.timeout(5)).add_done_callback(done)
            for _ in range(32):
                sem.acquire(timeout=harness.timeout(10))
        finally:
            ch.close()
        ph.figures["admin_flood"] = codes
        ph.add_sent(URI_OF[caller], sum(n for c, n in codes.items() if c in SERVER_DENIALS))
        ph.figures["admin_flood_rate"] = calls / max(1e-9, time.monotonic() - t0)
        self.check(ph, codes.get("OK", 0) == 0 and sum(codes.values()) == calls,
                   "Admin flood by %s: %d calls, none allowed: %s" % (caller, calls, codes))

    def attack_reset(self, ph, time_limit=RESET_TIME, rate=None, stop=None):
        """e: rapid reset on an mTLS HTTP/2 connection with issuer-c's certificate."""
        ca, cert, key = self.env.caller_files("issuer-c")
        st = h2reset.rapid_reset(self.daemon.port, ca, cert, key, RESET_STREAMS, time_limit,
                                 rate=rate, stop=stop)
        ph.figures.update(reset_streams=st["streams"], reset_conns=st["connections"],
                          reset_goaways=st["goaways"], reset_closes=st["server_closes"],
                          reset_rate=st["streams"] / max(1e-9, st["elapsed_s"]))
        ph.reset_ports = st["local_ports"]

    def freeze(self, ph, on):
        args = ("freeze" if on else "unfreeze", FROZEN, "--reason", "soak test")
        rc, out, err = self.env.run_sign("admin", "admin", *args, timeout_s=20)
        self.check(ph, rc == 0, "admin %s %s: rc %d %s%s" % (args[0], FROZEN, rc, out, err))

    def hsm_fault(self, ph, hold=HSM_FAULT_HOLD):
        """f: the token is pulled out for `hold` seconds: every session and object
        handle the signer holds dies and every PKCS#11 call fails with
        CKR_DEVICE_REMOVED (tests/p11shim); then the shim forwards again, and the
        signer must re-open, log in and find its keys by itself."""
        t0 = time.monotonic()
        self.shim_set("invalidate\nfail * CKR_DEVICE_REMOVED")
        seen, unanswered = None, 0
        end = t0 + hold
        while time.monotonic() < end:
            st, body = self.healthz()
            if st == 0:
                unanswered += 1
            elif st != 200 and seen is None:
                seen = (st, body, time.monotonic() - t0)
            time.sleep(0.1)
        if unanswered:
            ph.figures["healthz_unanswered"] = ph.figures.get("healthz_unanswered", 0) + unanswered
        self.shim_set("ok")
        t1 = time.monotonic()
        ph.fault_windows.append([t0, t1])
        ph.hsm_windows.append((time.time() - (t1 - t0), None))
        ph.figures["hsm_unhealthy_after"] = seen[2] if seen else None
        self.check(ph, seen is not None and "hsm" in seen[1],
                   "/healthz reports the lost HSM while the token is out: %s" % (seen,))
        return t0, t1

    def healthz(self):
        """(status, body text) of /healthz; (0, error) if it cannot be fetched."""
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.daemon.http_port,
                                              timeout=harness.timeout(1.0))
            try:
                conn.request("GET", "/healthz")
                r = conn.getresponse()
                return r.status, r.read().decode("utf-8", "replace")
            finally:
                conn.close()
        except (OSError, http.client.HTTPException) as e:
            return 0, str(e)

    def shim_set(self, text):
        tmp = self.shim_control + ".tmp"
        with open(tmp, "w", encoding="ascii") as f:
            f.write(text + ("\n" if text else ""))
        os.replace(tmp, self.shim_control)

    def disk_full(self, ph, hold=DISK_FULL_HOLD):
        """g: fills the audit tmpfs below the watermark (the signer must say so and go on
        signing), then until ENOSPC (it must fail closed), holds, and frees it."""
        audit_dir = self.env.audit_dir()
        path = os.path.join(audit_dir, "zz-filler")
        t0 = time.monotonic()
        written = 0
        chunk = b"\0" * (1 << 20)

        def fill(f, limit):
            nonlocal written
            for size in (1 << 20, 4096, 512):
                while written + size <= limit:
                    try:
                        n = f.write(chunk[:size])
                    except OSError as e:
                        if e.errno != errno.ENOSPC:
                            raise
                        return
                    written += n or 0
                    if not n:
                        return

        with open(path, "wb", buffering=0) as f:
            self.filler = path
            # 1. Below the watermark: /healthz "degraded" (still 200), a log line, and
            #    signing goes on (the fail-closed rule is unchanged).
            st = os.statvfs(audit_dir)
            fill(f, max(0, st.f_bavail * st.f_frsize - WATERMARK // 2))
            low_at = time.monotonic()
            degraded = None
            while time.monotonic() < low_at + harness.timeout(4):
                code, body = self.healthz()
                if code == 200 and '"degraded"' in body:
                    degraded = time.monotonic() - low_at
                    break
                time.sleep(0.1)
            ph.figures["watermark_degraded_after"] = degraded
            self.check(ph, degraded is not None, "/healthz says degraded (200) within %.1f s of "
                       "the free space falling under the watermark: %s"
                       % (harness.timeout(4), self.healthz()))
            ph.disk_faults += 1
            ok, why = self.probe()
            self.check(ph, ok, "signing goes on under the watermark: %s" % why)
            # 2. Full: signing fails closed; wait until a call shows it.
            fill(f, 1 << 62)
            full_at = time.monotonic()
            seen = None
            while time.monotonic() < full_at + harness.timeout(5):
                fails = self.caller.failures_between(full_at, time.monotonic())
                if fails:
                    seen = fails[0]
                    break
                time.sleep(0.05)
            time.sleep(max(0.0, hold - (time.monotonic() - full_at)))
        os.remove(path)
        self.filler = None
        t1 = time.monotonic()
        ph.fault_windows.append([full_at, t1])
        ph.figures["filler_bytes"] = written
        self.check(ph, seen is not None and seen["code"] == "UNAVAILABLE"
                   and "audit" in (seen.get("details") or ""),
                   "signing fails closed (UNAVAILABLE, audit) while the audit disk is full: %s"
                   % (seen,))
        return t0, t1

    # --- phases ------------------------------------------------------------------------
    def phase_a(self):
        ph = Phase("a", "idle TCP conns > fd limit")
        ph.noident = True
        self.begin(ph)
        self.attack_idle(ph)
        self.end(ph)
        self.close_phase(ph)

    def phase_b(self):
        ph = Phase("b", "slow HTTP clients, 8 addrs")
        ph.noident = True
        self.begin(ph)
        self.attack_slowloris(ph)
        self.end(ph)
        self.close_phase(ph)

    def phase_c(self):
        ph = Phase("c", "denied-caller flood")
        ph.identities = {INTRUDER: "intruder"}
        self.begin(ph)
        t = threading.Thread(target=self.admin_flood, args=(ph, "intruder", ADMIN_FLOOD))
        t.start()
        self.client_flood(ph, "intruder", FLOOD_REQUESTS, "denied_flood")
        t.join(harness.timeout(60))
        self.end(ph)
        self.close_phase(ph)
        # An off-host copy of a checkpoint, for `jwt-audit verify --checkpoint` at the end.
        self.offhost_checkpoint = self.env.path("checkpoint-offhost.json")
        shutil.copyfile(os.path.join(self.env.audit_dir(), "checkpoint.json"),
                        self.offhost_checkpoint)

    def phase_d(self):
        ph = Phase("d", "frozen-caller flood")
        ph.identities = {FROZEN: "frozen"}
        self.freeze(ph, True)
        self.begin(ph)
        self.client_flood(ph, "issuer-b", FLOOD_REQUESTS, "frozen_flood")
        self.end(ph)
        self.freeze(ph, False)
        self.close_phase(ph)

    def phase_e(self):
        ph = Phase("e", "HTTP/2 rapid reset")
        ph.identities = {RESETTER: "resetter"}
        self.begin(ph)
        self.attack_reset(ph)
        self.end(ph)
        self.close_phase(ph)

    def phase_f(self):
        ph = Phase("f", "HSM fault (shim)")
        self.begin(ph)
        self.hsm_fault(ph)
        self.end(ph)
        self.close_phase(ph, steady=True)
        ph.fault_windows[-1][1] = ph.t1 + (ph.recovery if ph.recovery is not None else 1e9)

    def phase_g(self):
        ph = Phase("g", "audit disk full (tmpfs)")
        self.begin(ph)
        self.disk_full(ph)
        self.end(ph)
        self.close_phase(ph, steady=True)
        ph.fault_windows[-1][1] = ph.t1 + (ph.recovery if ph.recovery is not None else 1e9)

    def phase_together(self):
        """c, d and e flood from the start; a and b join; f, then g, are injected while
        they all run; the floods stop once g has recovered."""
        ph = Phase("together", "a-e at once, f then g")
        ph.noident = True
        ph.identities = {INTRUDER: "intruder", FROZEN: "frozen", RESETTER: "resetter"}
        self.freeze(ph, True)
        stop = threading.Event()
        stop_by = time.monotonic() + harness.timeout(40)

        def repeat(fn, *args):
            for _ in range(TOGETHER_MAX_RUNS):
                if stop.is_set() or time.monotonic() > stop_by:
                    return
                fn(*args)

        self.begin(ph)
        first = [
            threading.Thread(target=repeat, args=(self.client_flood, ph, "intruder",
                                                  FLOOD_REQUESTS, "denied_flood")),
            threading.Thread(target=repeat, args=(self.admin_flood, ph, "intruder", ADMIN_FLOOD)),
            threading.Thread(target=repeat, args=(self.client_flood, ph, "issuer-b",
                                                  FLOOD_REQUESTS, "frozen_flood")),
            threading.Thread(target=self.attack_reset,
                             args=(ph, harness.timeout(40), TOGETHER_RESET_RATE, stop)),
        ]
        second = [
            threading.Thread(target=self.attack_idle, args=(ph,)),
            threading.Thread(target=self.attack_slowloris, args=(ph,)),
        ]
        for t in first:
            t.start()
        time.sleep(0.5)
        for t in second:
            t.start()
        time.sleep(0.5)
        try:
            # f while the floods run; its recovery is measured on the steady caller.
            _, f1 = self.hsm_fault(ph)
            rec_f = self.recover(ph, f1, steady=True)
            ph.figures["recovery_f"] = rec_f
            ph.fault_windows[-1][1] = f1 + (rec_f if rec_f is not None else 1e9)
            self.check(ph, rec_f is not None and rec_f <= RECOVERY_LIMIT,
                       "HSM fault under flood: recovered in %s s (limit %.1f s)"
                       % (rec_f, RECOVERY_LIMIT))
            _, g1 = self.disk_full(ph)
            rec_g = self.recover(ph, g1, steady=True)
            ph.figures["recovery_g"] = rec_g
            ph.fault_windows[-1][1] = g1 + (rec_g if rec_g is not None else 1e9)
            self.check(ph, rec_g is not None and rec_g <= RECOVERY_LIMIT,
                       "audit disk full under flood: recovered in %s s (limit %.1f s)"
                       % (rec_g, RECOVERY_LIMIT))
        finally:
            stop.set()
            for t in first + second:
                t.join(harness.timeout(60))
        self.end(ph)
        self.freeze(ph, False)
        self.close_phase(ph)

    # --- after the run -----------------------------------------------------------------
    def records(self):
        """Every record of the log, parsed, with its framed size (payload + 8)."""
        rc, out, err = self.env.run([harness.audit_path(), "show", "--json",
                                     self.env.audit_dir()], timeout_s=120)
        if rc != 0:
            raise AssertionError("jwt-audit show failed (%d): %s" % (rc, err[-2000:]))
        recs = []
        for line in out.splitlines():
            if line.strip():
                r = json.loads(line)
                r["_bytes"] = len(line.encode("utf-8")) + 8
                recs.append(r)
        return recs

    def attribute(self, recs):
        """Audit records, bytes and log lines each phase's attackers caused, against the
        documented denial budget (audit/FORMAT.md section 3.1, signer/core/denials.h)."""
        legit = {LEGIT, ADMIN}
        attackers = (INTRUDER, FROZEN, RESETTER)
        lines = self.daemon.stderr_lines()
        for ph in self.results:
            w0, w1 = ph.w0 - 0.05, ph.w1 + SETTLE
            secs = math.ceil(w1 - w0)
            mine = {}  # label -> list of records
            for r in recs:
                if r.get("type") == "checkpoint" or not w0 <= _wall(r["time"]) <= w1:
                    continue
                caller = r.get("caller") or ""
                if caller in ph.identities:
                    mine.setdefault(ph.identities[caller], []).append(r)
                elif ph.noident and caller not in legit and caller not in attackers:
                    # Records of the deliberate faults (the HSM pulled out, the
                    # disk full) are not the flood's doing.
                    if r.get("type") in ("hsm", "recovery"):
                        continue
                    deny = r.get("decision") == "deny" or r.get("type") == "denials"
                    mine.setdefault("no identity" if deny else "lifecycle", []).append(r)
            ph.audit = {k: (len(v), sum(r["_bytes"] for r in v)) for k, v in mine.items()}
            logs = {}
            noident_events = {}
            objs = {label: [] for label in ph.identities.values()}
            ports = ["127.0.0.1:%d" % p for p in getattr(ph, "reset_ports", [])]
            for raw in lines[ph.line0:ph.line1]:
                obj = harness._parse_log(raw) or {}  # pylint: disable=protected-access
                caller = obj.get("caller", "")
                if caller in ph.identities:
                    objs[ph.identities[caller]].append(obj)
                if caller in legit:
                    continue
                if caller in ph.identities:
                    label = ph.identities[caller]
                elif any(p in raw for p in ports):
                    label = "resetter"
                elif ph.noident and caller not in attackers:
                    label = "no identity"
                    ev = obj.get("event", "?")
                    noident_events[ev] = noident_events.get(ev, 0) + 1
                else:
                    continue
                logs[label] = logs.get(label, 0) + 1
            ph.loglines = logs
            if ph.disk_faults:
                events = [(harness._parse_log(l) or {}).get("event")  # pylint: disable=W0212
                          for l in lines[ph.line0:ph.line1]]
                self.check(ph, "audit_disk_low" in events and "audit_disk_ok" in events,
                           "the audit disk watermark is logged when crossed, both ways "
                           "(audit_disk_low, audit_disk_ok)")
            if ph.hsm_windows:
                events = [(harness._parse_log(l) or {}).get("event")  # pylint: disable=W0212
                          for l in lines[ph.line0:ph.line1]]
                self.check(ph, "hsm_recovered" in events, "the HSM recovery is logged "
                           "(hsm_recovered); HSM events seen: %s"
                           % sorted({e for e in events if e and e.startswith("hsm")}))
                # The records are written by the main loop once the audit log can
                # take them again (after the HSM that signs its checkpoints is
                # back), so they may come after the phase's window: any time later.
                hsm_recs = [r for r in recs if w0 <= _wall(r["time"]) and r.get("type") == "hsm"]
                kinds = {r.get("decision") for r in hsm_recs}
                ph.figures["hsm_audit_records"] = sorted(kinds, key=str)
                self.check(ph, {"hsm_session_lost", "hsm_recovered"} <= kinds,
                           "the HSM loss and recovery are audited: %s" % sorted(kinds, key=str))

            # Per identity: <= burst + rate * T full records, <= 1 folded record per
            # second per (type, reason), each of the documented maximum size.
            total_full = 0
            for ident, label in ph.identities.items():
                rs = mine.get(label, [])
                full = [r for r in rs if "count" not in r]
                folded = [r for r in rs if "count" in r]
                total_full += len(full)
                triples = {}
                for r in folded:
                    key = (r.get("type"), r.get("reason"))
                    triples[key] = triples.get(key, 0) + 1
                max_full = DENIAL_BURST + DENIAL_RATE * secs
                max_folded = (secs + 1) * len(triples)
                budget = max_full * FULL_DENIAL_MAX + max_folded * FOLDED_MAX
                nbytes = sum(r["_bytes"] for r in rs)
                ph.figures["budget_" + label] = budget
                self.check(ph, len(full) <= max_full,
                           "full denial records of %s: %d, documented budget %d (%d + %d/s, "
                           "%d s)" % (label, len(full), max_full, DENIAL_BURST, DENIAL_RATE, secs))
                for key, n in triples.items():
                    self.check(ph, n <= secs + 1, "folded records of %s for %s: %d in %d s "
                               "(at most one per second)" % (label, key, n, secs))
                self.check(ph, nbytes <= budget,
                           "audit bytes caused by %s: %d in %d records, documented budget %d"
                           % (label, nbytes, len(rs), budget))
                self.check(ph, logs.get(label, 0) <= max_full + max_folded,
                           "log lines caused by %s: %d, at most one per full or folded record "
                           "(%d)" % (label, logs.get(label, 0), max_full + max_folded))
                sent = ph.sent.get(ident)
                if sent is not None:
                    # One decision per denial drives its log line and its record:
                    # the log accounts for every denial the signer answered ...
                    denied_lines = [o for o in objs[label]
                                    if o.get("event") == "request" and o.get("decision") == "deny"]
                    folds = [o for o in objs[label] if o.get("event") == "denials_folded"]
                    logged = len(denied_lines) + sum(o.get("count", 0) for o in folds)
                    self.check(ph, logged == sent,
                               "every denial of %s is in the log once: %d answered, %d logged "
                               "(%d lines + %d folded)" % (label, sent, logged,
                                                           len(denied_lines), logged - len(denied_lines)))
                    # ... and the audit log too, except what a full disk made it lose.
                    counted = len(full) + sum(r["count"] for r in folded)
                    if ph.disk_faults:
                        lost = sum(o.get("count", 0) for o in folds if o.get("audit_lost"))
                        self.check(ph, sent - lost - len(denied_lines) <= counted <= sent,
                                   "denials of %s in the audit log: %d full + %d folded of %d "
                                   "answered (%d folded lost to the full disk)"
                                   % (label, len(full), counted - len(full), sent, lost))
                    else:
                        self.check(ph, counted == sent,
                                   "every denial of %s is in the audit log once: %d answered, "
                                   "%d full + %d folded" % (label, sent, len(full),
                                                            counted - len(full)))
            if ph.identities:
                gmax = DENIAL_GLOBAL_BURST + DENIAL_GLOBAL_RATE * secs
                self.check(ph, total_full <= gmax, "full denial records of all attackers: %d, "
                           "documented global budget %d" % (total_full, gmax))
            if "resetter" in ph.identities.values():
                n = len(mine.get("resetter", []))
                self.check(ph, n == 0, "a reset stream costs no audit record: %d records" % n)
            if ph.noident:
                # FORMAT.md 3.1: an attacker without a certificate reaches no audit record.
                n = len(mine.get("no identity", []))
                self.check(ph, n == 0, "denial records without an identity: %d (documented: 0 "
                           "for a peer without a certificate)" % n)
                life = ph.audit.get("lifecycle", (0, 0))
                kinds = {}
                for r in mine.get("lifecycle", []):
                    k = "%s/%s" % (r.get("type"), r.get("decision"))
                    kinds[k] = kinds.get(k, 0) + 1
                self.check(ph, life[0] <= LIFECYCLE_MAX, "lifecycle records during the flood: "
                           "%d (at most %d): %r" % (life[0], LIFECYCLE_MAX, kinds))
                lbudget = NOIDENT_LOG_LPS * secs + NOIDENT_LOG_BURST
                self.check(ph, logs.get("no identity", 0) <= lbudget,
                           "log lines without an identity: %d, at most %d; by event %r"
                           % (logs.get("no identity", 0), lbudget, noident_events))

    def check_tokens(self, recs):
        by_jti = {r["jti"]: r for r in recs if r.get("type") == "sign" and r.get("jti")
                  and r.get("decision") == "allow"}
        toks = [c for c in self.caller.calls if c["code"] == "OK"] + self.tokens_extra
        missing = [t for t in toks if t["jti"] not in by_jti]
        self.check(None, not missing, "%d of %d tokens have no audit record, e.g. %s"
                   % (len(missing), len(toks), missing[:2]))
        bad = []
        for t in toks:
            r = by_jti.get(t["jti"])
            if r is None:
                continue
            if r.get("seq") != t["seq"] or r.get("caller") != LEGIT or \
                    r.get("token_sha256") != hashlib.sha256(t["jwt"].encode()).hexdigest():
                bad.append((t["jti"], t["seq"], r.get("seq"), r.get("caller")))
        self.check(None, not bad, "%d tokens whose record differs (seq, caller, token_sha256): %s"
                   % (len(bad), bad[:3]))
        # The CLI query by jti, for a few of them (first, middle, last).
        for t in [toks[0], toks[len(toks) // 2], toks[-1]] if toks else []:
            rc, out, err = self.env.run([harness.audit_path(), "show", "--json", "--jti",
                                         t["jti"], self.env.audit_dir()], timeout_s=60)
            found = [json.loads(line) for line in out.splitlines() if line.strip()]
            self.check(None, rc == 0 and len(found) == 1 and found[0].get("seq") == t["seq"],
                       "jwt-audit show --jti %s: rc %d, %s %s" % (t["jti"], rc, found, err))
        # Signatures: a sample against the JWKS served at the end.
        body = self.final_jwks
        for t in toks[::max(1, len(toks) // 50)]:
            try:
                harness.verify_es256(t["jwt"], body)
            except Exception as e:  # pylint: disable=broad-except
                self.check(None, False, "token %s does not verify: %s" % (t["jti"], e))
                break
        return len(toks)

    def finish(self):
        self.caller.finish()
        self.poller.finish()
        _, _, self.final_jwks = self.env.http_get(JWKS_PATH)
        self.check(None, self.alive(), "jwt-signerd still running as pid %d at the end" % self.pid)
        rc = self.env.stop()
        self.check(None, rc == 0, "jwt-signerd exits 0 on SIGTERM, not %s" % rc)
        self.check(None, bool(self.daemon.logs("stopped")), "the stop is logged")
        audit_dir = self.env.audit_dir()
        argv = [harness.audit_path(), "verify", "--pubkey", os.path.join(audit_dir, "audit-key.pem")]
        if self.offhost_checkpoint:
            argv += ["--checkpoint", self.offhost_checkpoint]
        rc, out, err = self.env.run(argv + [audit_dir], timeout_s=120)
        self.check(None, rc == 0, "jwt-audit verify: rc %d\n%s%s" % (rc, out[-1500:], err[-1500:]))
        recs = self.records()
        self.attribute(recs)
        ntok = self.check_tokens(recs)
        return ntok, len(recs)

    def phase_at(self, t):
        """"name+seconds" of the phase running at monotonic time t (for messages)."""
        best = None
        for ph in self.results:
            if ph.w0 <= t:
                best = ph
        return "%s+%.2f" % (best.name, t - best.w0) if best else "before+0"

    def success_rate(self):
        windows = [w for ph in self.results for w in ph.fault_windows]
        calls = [c for c in self.caller.calls if c["code"] is not None]
        # Excluded: calls started inside a fault window, and calls in flight when it
        # began that failed the way the fault makes them fail (UNAVAILABLE). A call
        # that timed out for any other reason counts.
        outside = [c for c in calls
                   if not any(w0 <= c["t0"] <= w1 or (c["t0"] < w0 <= c["t1"]
                                                      and c["code"] == "UNAVAILABLE")
                              for w0, w1 in windows)]
        ok = sum(1 for c in outside if c["code"] == "OK")
        self.outside_failures = [c for c in outside if c["code"] != "OK"]
        return ok, len(outside), sum(1 for c in calls if c["code"] == "OK"), len(calls)

    def cleanup(self):
        if self.caller is not None:
            self.caller.stop_ev.set()
        if self.poller is not None:
            self.poller.stop_ev.set()
        for d in self.env.daemons:
            d.kill()
        if self.filler:
            try:
                os.remove(self.filler)
            except OSError:
                pass
        if self.mounted:
            subprocess.run(["umount", self.env.audit_dir()], capture_output=True, timeout=30,
                           check=False)
            self.mounted = False
        self.env.cleanup()

    # --- the table ---------------------------------------------------------------------
    def table(self, ntok, nrec, started):
        ok, n, ok_all, n_all = self.success_rate()
        out = []
        out.append("soak: jwt-signerd under prlimit --nofile=%d, caller %d/s, timeout scale %.1f,"
                   " %.0f s" % (FD_LIMIT, RATE, SCALE, time.monotonic() - started))
        out.append("%-9s %-28s %6s %9s %12s %10s %7s %12s %s" % (
            "phase", "attack", "dur s", "recover s", "audit B/rec", "budget B", "log ln",
            "jwks p50/max", "caller ok"))
        for ph in self.results:
            dur = ph.t1 - ph.t0
            ab = sum(b for _, b in ph.audit.values())
            an = sum(n for n, _ in ph.audit.values())
            ll = sum(ph.loglines.values())
            fetch = self.poller.between(ph.t0, ph.t1 + SETTLE)
            lat = [f[1] * 1000 for f in fetch]
            calls = [c for c in self.caller.calls if ph.t0 <= c["t0"] <= ph.t1 + SETTLE
                     and c["code"] is not None]
            cok = sum(1 for c in calls if c["code"] == "OK")
            fails = {}
            for c in calls:
                if c["code"] != "OK":
                    fails[c["code"]] = fails.get(c["code"], 0) + 1
            if fails:
                ph.figures["caller_failures"] = fails
                ph.figures["caller_failure_e.g."] = next(
                    (c.get("details") or "")[:160] for c in calls if c["code"] != "OK")
            out.append("%-9s %-28s %6.1f %9s %12s %10.0f %7d %12s %s" % (
                ph.name, ph.label, dur,
                "%.2f" % ph.recovery if ph.recovery is not None else "NEVER",
                "%d/%d" % (ab, an),
                sum(v for k, v in ph.figures.items() if k.startswith("budget_")), ll,
                "%.0f/%.0f ms" % (_pct(lat, 0.5), max(lat, default=float("nan"))),
                "%d/%d" % (cok, len(calls))))
            out.append("%-9s   dir growth %d B; %s" % (
                "", ph.audit_size1 - ph.audit_size0,
                "; ".join("%s=%s" % (k, ("%.1f" % v) if isinstance(v, float) else v)
                          for k, v in ph.figures.items())))
            if ph.audit or ph.loglines:
                out.append("%-9s   audit by attacker %s; log lines by attacker %s"
                           % ("", ph.audit, ph.loglines))
        allf = self.poller.fetches
        lat = [f[1] * 1000 for f in allf]
        out.append("legitimate caller: %d/%d OK outside the fault windows = %.2f%% (target %.0f%%);"
                   " %d/%d overall" % (ok, n, 100.0 * ok / n if n else 0, 100 * SUCCESS_TARGET,
                                       ok_all, n_all))
        out.append("JWKS from 127.0.0.1: %d/%d OK, latency p50 %.0f ms, p99 %.0f ms, max %.0f ms"
                   % (sum(1 for f in allf if f[2]), len(allf), _pct(lat, 0.5), _pct(lat, 0.99),
                      max(lat, default=float("nan"))))
        out.append("tokens received %d, all checked against the log (%d records); pid %d "
                   "throughout" % (ntok, nrec, self.pid))
        return "\n".join(out)

    def final_checks(self):
        ok, n, _, _ = self.success_rate()
        self.check(None, n > 0 and ok / n >= SUCCESS_TARGET,
                   "legitimate caller success rate outside the fault windows %d/%d = %.2f%% "
                   "(target %.0f%%); failures outside the windows (phase: seconds after its start; "
                   "code; details) e.g. %s"
                   % (ok, n, 100.0 * ok / n if n else 0, 100 * SUCCESS_TARGET,
                      [(self.phase_at(c["t0"]), c["code"], (c.get("details") or "")[:160])
                       for c in self.outside_failures][:6]))
        bad = [f for f in self.poller.fetches if not f[2]]
        self.check(None, self.poller.fetches and not bad,
                   "every JWKS fetch succeeded: %d of %d failed, e.g. %s"
                   % (len(bad), len(self.poller.fetches), bad[:3]))


def interesting_tail(daemon, n):
    """The last n stderr lines that are not the legitimate caller's request lines."""
    keep = [l for l in daemon.stderr_lines()
            if not ('"event":"request"' in l and '"caller":"%s"' % LEGIT in l)]
    return "jwt-signerd stderr (last %d lines, without %s's requests):\n%s" % (
        n, LEGIT, "\n".join(l[:400] for l in keep[-n:]))


class Soak(unittest.TestCase):
    def test_soak(self):
        phases = selected_phases()
        started = time.monotonic()
        run = SoakRun(phases)
        table = ""
        try:
            run.setup()
            run.start()
            for name in phases:
                if not run.alive():
                    run.check(None, False, "jwt-signerd died before phase %s:\n%s"
                              % (name, run.daemon.tail(40)))
                    break
                t = time.monotonic()
                getattr(run, "phase_" + name)()
                sys.stderr.write("soak: phase %s done in %.1f s\n" % (name, time.monotonic() - t))
            ntok, nrec = run.finish()
            run.final_checks()
            table = run.table(ntok, nrec, started)
            sys.stdout.write("\n" + table + "\n")
            sys.stdout.flush()
        except BaseException:
            if run.daemon is not None:
                sys.stderr.write(interesting_tail(run.daemon, 60) + "\n")
            raise
        finally:
            run.cleanup()
        if run.failures:
            if run.daemon is not None:
                sys.stderr.write(interesting_tail(run.daemon, 30) + "\n")
        self.assertEqual(run.failures, [], "\n".join(run.failures))


if __name__ == "__main__":
    unittest.main(verbosity=2)
