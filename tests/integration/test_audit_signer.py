#!/usr/bin/python3
"""test_audit_signer.py - the audit log through a running jwt-signerd.

End to end: every SignJwt decision and lifecycle event (start, policy load,
SIGHUP reload, SIGUSR1 incident switch, stop) has its record; a token's
record carries its jti, caller, sub, the response's audit_seq and the SHA-256
of the JWT, never the JWT itself; `jwt-audit verify` passes with the audit
public key and the checkpoint file.

Crash: kill -9 under concurrent load, many rounds on one log; after each
restart `jwt-audit verify` passes and every token a client received has its
jti (and token hash) in the log.

Fail-closed: an injected write/fdatasync failure (faultio.c, LD_PRELOAD)
mid-load makes signing fail UNAVAILABLE with a message naming the audit log;
no client holds a token whose record is missing; once the fault is gone the
log recovers by itself (a RECOVERY record) and signing resumes.

Start-up: a flipped byte inside a checkpointed record refuses start-up,
naming segment, offset and seq; a torn tail is cut aside to a .broken file
and noted by a RECOVERY record.

Programs: the harness's (JS_SIGNERD, JS_SIGN, JS_CLIENT_TEST), plus JS_AUDIT
(jwt-audit) and JS_FAULTIO (the LD_PRELOAD library). JS_AUDIT_CRASH_ROUNDS
overrides the number of crash rounds (default 20; 20 under ASan too).
"""

import hashlib
import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

SUB = harness.SAMPLE_SUB
AUD = harness.SAMPLE_AUD
ISSUER_A = harness.CALLER_URIS["issuer-a"]
INTRUDER = harness.CALLER_URIS["intruder"]
EXIT_DENIED, EXIT_UNAVAILABLE = 3, 5
CRASH_ROUNDS = int(os.environ.get("JS_AUDIT_CRASH_ROUNDS", "20"))


def sha256_hex(data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


# --- the log, read with jwt-audit and independently --------------------------------

def run_audit(env, *args, timeout_s=120):
    return env.run([harness.audit_path()] + list(args), timeout_s=timeout_s)


def verify(env):
    """`jwt-audit verify --pubkey --checkpoint SEGMENTS`: (rc, output)."""
    d = env.audit_dir()
    rc, out, err = run_audit(env, "verify", "--pubkey", os.path.join(d, "audit-key.pem"),
                             "--checkpoint", os.path.join(d, "checkpoint.json"),
                             *env.audit_segments())
    return rc, out + err


def show(env, *filters):
    """All records (or those matching filters) from `jwt-audit show --json`."""
    rc, out, err = run_audit(env, "show", "--json", *filters, *env.audit_segments())
    if rc != 0:
        raise AssertionError("jwt-audit show failed (%d): %s" % (rc, err))
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def frames(path):
    """[(offset, frame_length, payload_dict)] of a segment, parsed per FORMAT.md §2."""
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


def crc32c(data):
    """CRC-32C (Castagnoli, reflected 0x82F63B78), as FORMAT.md §2 specifies."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def read_tokens(path):
    """[(jti, jwt)] from a client_load --out file."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="ascii") as f:
        return [tuple(line.split()) for line in f if line.strip()]


def start_load(env, out_file, threads=8, requests=20000, timeout_ms=5000):
    ca, cert, key = env.caller_files("issuer-a")
    argv = [harness.client_test_path(), "--target", "localhost:%d" % env.port, "--ca", ca, "--cert", cert,
            "--key", key, "--threads", str(threads), "--requests", str(requests),
            "--timeout-ms", str(timeout_ms), "--claims",
            json.dumps({"sub": SUB, "aud": AUD}), "--out", out_file]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=env.env(), text=True)


def finish_load(load, timeout_s=60):
    """Waits for client_load; returns (summary dict or None, stderr)."""
    try:
        out, err = load.communicate(timeout=harness.timeout(timeout_s))
    except subprocess.TimeoutExpired:
        load.kill()
        out, err = load.communicate()
        raise AssertionError("client_load did not finish within %.0f s: %s" % (
            harness.timeout(timeout_s), err[-2000:]))
    lines = out.strip().splitlines()
    return (json.loads(lines[-1]) if lines else None), err


def processes_mentioning(text):
    """PIDs (not ours) whose command line contains text: leftovers of a test."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if text in cmd:
            found.append((int(pid), cmd))
    return found


def audit_conf(env, **extra):
    conf = {"dir": "audit", "key_label": env.audit_key_label}
    conf.update(extra)
    return conf


def wait_allowed(env, start=0, timeout_s=30):
    return env.wait_log(lambda o: o.get("event") == "request" and o.get("decision") == "allow",
                        timeout_s=timeout_s, start=start)


class AuditCase(unittest.TestCase):
    def setUp(self):
        self.env = harness.Env()

    def tearDown(self):
        if self._outcome_failed() and self.env.daemon is not None:
            sys.stderr.write(self.env.daemon.tail(60) + "\n")
        self.env.cleanup()

    def _outcome_failed(self):
        result = getattr(getattr(self, "_outcome", None), "result", None)
        for attr in ("errors", "failures"):
            for test, _ in getattr(result, attr, None) or []:
                if test is self:
                    return True
        return False

    def assertVerifies(self, what=""):
        rc, out = verify(self.env)
        self.assertEqual(rc, 0, "jwt-audit verify %s:\n%s" % (what, out))
        self.assertIn("OK: log intact", out)
        self.assertIn("signatures: checked", out)
        return out

    def assertTokensLogged(self, tokens, records, what=""):
        """Every (jti, jwt) a client holds has an allow record with the token's hash."""
        by_jti = {r["jti"]: r for r in records if r.get("type") == "sign" and "jti" in r}
        missing = [jti for jti, _ in tokens if jti not in by_jti]
        self.assertEqual(missing, [], "%s: %d of %d client tokens have no audit record" % (
            what, len(missing), len(tokens)))
        for jti, jwt in tokens:
            r = by_jti[jti]
            self.assertEqual(r.get("decision"), "allow", r)
            self.assertEqual(r.get("token_sha256"), sha256_hex(jwt), "%s: jti %s" % (what, jti))


# --- 1. end to end -------------------------------------------------------------------

class EndToEnd(AuditCase):
    def test_records_of_a_session(self):
        env = self.env
        env.setup()
        env.start()
        issued = []
        for i in range(3):
            rc, out, err = env.sign("issuer-a", {"sub": SUB, "aud": AUD, "scope": "read"},
                                    "--json", "--request-id", "e2e-%d" % i)
            self.assertEqual(rc, 0, err)
            issued.append(json.loads(out))
        rc, out, err = env.sign("issuer-a", {"sub": "not-a-uuid", "aud": AUD},
                                "--request-id", "e2e-deny")
        self.assertEqual(rc, EXIT_DENIED, err)
        self.assertIn("policy.subject", err)
        rc, out, err = env.sign("issuer-a", "not json", "--request-id", "e2e-syntax")
        self.assertEqual(rc, 4, err)  # INVALID_ARGUMENT
        self.assertIn("claims.syntax", err)

        mark = len(env.daemon.stderr_lines())
        os.kill(env.daemon.pid, signal.SIGHUP)
        env.wait_log("policy_reloaded", start=mark)
        os.kill(env.daemon.pid, signal.SIGUSR1)
        env.wait_log("incident_mode", start=mark)
        # One more token after the reload (its record names the same policy).
        rc, out, err = env.sign("issuer-a", {"sub": SUB, "aud": AUD}, "--json")
        self.assertEqual(rc, 0, err)
        issued.append(json.loads(out))
        self.assertEqual(env.stop(), 0)

        self.assertVerifies("after a clean session")
        recs = show(env)
        self.assertEqual([r["seq"] for r in recs], list(range(1, len(recs) + 1)))
        with open(env.path("policy.yaml"), "rb") as f:
            policy_hash = sha256_hex(f.read())

        # Allowed: one record per token, at the seq the response named.
        by_seq = {r["seq"]: r for r in recs}
        for resp in issued:
            r = by_seq.get(resp["audit_seq"])
            self.assertIsNotNone(r, "no record at audit_seq %r" % resp["audit_seq"])
            self.assertEqual(r["type"], "sign")
            self.assertEqual(r["decision"], "allow")
            self.assertEqual(r["reason"], "ok")
            self.assertEqual(r["jti"], resp["jti"])
            self.assertEqual(r["caller"], ISSUER_A)
            self.assertEqual(r["sub"], SUB)
            self.assertEqual(r["aud"], AUD)
            self.assertEqual(r["kid"], resp["kid"])
            self.assertEqual(r["alg"], "ES256")
            self.assertEqual(r["key"], harness.DEFAULT_KEY["name"])
            self.assertEqual(r["iat"], resp["issued_at"])
            self.assertEqual(r["exp"], resp["expires_at"])
            self.assertEqual(r["policy_hash"], policy_hash)
            self.assertEqual(r["token_sha256"], sha256_hex(resp["jwt"]))
            self.assertTrue(r.get("peer", "").startswith("ipv4:127.0.0.1:"), r)
            self.assertNotIn("jwt", r)
            self.assertEqual(len(show(env, "--jti", resp["jti"])), 1)
        for i in range(3):
            self.assertEqual(by_seq[issued[i]["audit_seq"]]["request_id"], "e2e-%d" % i)
            self.assertEqual(by_seq[issued[i]["audit_seq"]]["scopes"], "read")
        signs = [r for r in recs if r["type"] == "sign"]
        self.assertEqual(len([r for r in signs if r["decision"] == "allow"]), len(issued))

        # Denied: recorded with its reason, no token fields.
        denied = [r for r in signs if r["decision"] == "deny"]
        self.assertEqual(len(denied), 2, denied)
        d = denied[0]
        self.assertEqual((d["caller"], d["reason"], d["sub"], d.get("request_id")),
                         (ISSUER_A, "policy.subject", "not-a-uuid", "e2e-deny"))
        self.assertEqual((denied[1]["caller"], denied[1]["reason"], denied[1].get("request_id")),
                         (ISSUER_A, "claims.syntax", "e2e-syntax"))
        for rec in denied:
            for absent in ("jti", "token_sha256", "iat", "exp"):
                self.assertNotIn(absent, rec)
        self.assertEqual(env.daemon.logs("audit_record_lost"), [])

        # The token itself is nowhere in the log directory or the signer's log.
        for resp in issued:
            jwt = resp["jwt"].encode("ascii")
            sig = jwt.rsplit(b".", 1)[1]
            for name in os.listdir(env.audit_dir()):
                with open(os.path.join(env.audit_dir(), name), "rb") as f:
                    data = f.read()
                self.assertNotIn(jwt, data, name)
                self.assertNotIn(sig, data, name)
            for line in env.daemon.stderr_lines():
                self.assertNotIn(sig.decode(), line)

        # Lifecycle: open checkpoint, start, policy load ... reload, incident, stop, close.
        types = [r["type"] for r in recs]
        self.assertEqual(recs[0]["type"], "checkpoint")
        self.assertEqual(recs[0]["reason"], "open")
        self.assertEqual(recs[1]["type"], "start")
        self.assertEqual(recs[1]["detail"]["keys"][0]["kid"], issued[0]["kid"])
        self.assertEqual((recs[2]["type"], recs[2]["decision"]), ("policy", "load"))
        self.assertEqual(recs[2]["detail"]["sha256"], policy_hash)
        reloads = [r for r in recs if r["type"] == "policy" and r.get("decision") == "reload"]
        self.assertEqual(len(reloads), 1, reloads)
        self.assertEqual(reloads[0]["detail"]["sha256"], policy_hash)
        incidents = [r for r in recs if r["type"] == "incident"]
        self.assertEqual(len(incidents), 1, incidents)
        self.assertEqual(incidents[0]["decision"], "on")
        self.assertEqual(incidents[0]["detail"]["cause"], "SIGUSR1")
        self.assertLess(reloads[0]["seq"], incidents[0]["seq"])
        self.assertEqual(types.count("start"), 1)
        self.assertEqual(types.count("stop"), 1)
        self.assertEqual(recs[-2]["type"], "stop")
        self.assertEqual((recs[-1]["type"], recs[-1]["reason"]), ("checkpoint", "close"))
        self.assertEqual(recs[-1]["tree_size"], recs[-1]["seq"] - 1)
        with open(os.path.join(env.audit_dir(), "checkpoint.json"), encoding="utf-8") as f:
            self.assertEqual(json.loads(f.read()), recs[-1])

        # An auditor's inclusion proof for one token, checked without the log.
        rc, proof, err = run_audit(env, "prove", "--jti", issued[0]["jti"],
                                   *env.audit_segments())
        self.assertEqual(rc, 0, err)
        proof_file = env.path("proof.json")
        with open(proof_file, "w", encoding="utf-8") as f:
            f.write(proof)
        rc, out, err = run_audit(env, "check-proof", "--pubkey",
                                 os.path.join(env.audit_dir(), "audit-key.pem"), proof_file)
        self.assertEqual(rc, 0, out + err)

    def test_denial_before_claims_is_recorded(self):
        # Regression test for a product bug seen at commit c429e9f: signer/rpc/server.c
        # sign_event() passed ev->aud_json = res->aud, a char array that is ""
        # when the request was refused before its claims were parsed
        # (policy.no_match, policy.frozen, claims.syntax ...); audit/record.c
        # js_audit_event_body() rejects "" ("aud_json is not a JSON string or
        # array"), so handle_sign() dropped the denial's record and only logged
        # "audit_record_lost". Every SignJwt decision must have a record
        # (README "What is recorded"). test_records_of_a_session covers claims.syntax.
        env = self.env
        env.setup()
        env.start()
        rc, out, err = env.sign("intruder", {"sub": SUB, "aud": AUD}, "--request-id", "who-me")
        self.assertEqual(rc, EXIT_DENIED, err)
        self.assertIn("policy.no_match", err)
        self.assertEqual(env.stop(), 0)
        self.assertVerifies()
        denied = [r for r in show(env, "--caller", INTRUDER) if r["type"] == "sign"]
        self.assertEqual(env.daemon.logs("audit_record_lost"), [],
                         "the signer dropped a denial's audit record")
        self.assertEqual(len(denied), 1, denied)
        self.assertEqual((denied[0]["decision"], denied[0]["reason"]), ("deny", "policy.no_match"))
        self.assertEqual(denied[0].get("request_id"), "who-me")
        self.assertNotIn("jti", denied[0])


# --- 2. crash: kill -9 under load -------------------------------------------------------

class Crash(AuditCase):
    def test_kill9_under_load(self):
        env = self.env
        # Small segments so that rotation happens under load, across crashes too.
        env.setup(audit=audit_conf(env, segment_bytes=65536))
        rng = random.Random(os.environ.get("JS_AUDIT_SEED") or time.time_ns())
        total_tokens, torn, rounds_with_tokens, t0 = 0, 0, 0, time.monotonic()
        for rnd in range(CRASH_ROUNDS):
            what = "round %d" % rnd
            d = env.start()
            self.assertFalse(d.logs("startup_failed"), what)
            out_file = env.path("tokens-%02d.txt" % rnd)
            load = start_load(env, out_file)
            try:
                wait_allowed(env)
                time.sleep(rng.uniform(0.05, 0.8))
                d.proc.kill()  # SIGKILL
                d.wait(timeout_s=20)
                self.assertEqual(d.proc.returncode, -signal.SIGKILL, what)
                summary, err = finish_load(load)
            finally:
                if load.poll() is None:
                    load.kill()
                    load.communicate()
            self.assertIsNotNone(summary, "%s: client_load printed no summary: %s" % (what, err))
            self.assertEqual(set(summary["by_code"]) - {"OK", "UNAVAILABLE", "CANCELLED"}, set(),
                             "%s: %r %s" % (what, summary, err))
            tokens = read_tokens(out_file)
            self.assertEqual(len(tokens), summary["ok"], what)
            rounds_with_tokens += 1 if tokens else 0
            total_tokens += len(tokens)

            # Restart on the same log: crash recovery, then a clean stop.
            d = env.start()
            self.assertFalse(d.logs("startup_failed"), what)
            self.assertEqual(env.stop(), 0, what)
            self.assertVerifies(what)
            recs = show(env)
            self.assertTokensLogged(tokens, recs, what)
            recoveries = [r for r in recs if r["type"] == "recovery"]
            broken = [f for f in os.listdir(env.audit_dir()) if ".broken" in f]
            self.assertEqual(len(recoveries), len(broken), (what, broken))
            for r in recoveries:
                self.assertEqual(r["reason"], "audit.torn_tail", r)
            torn = len(recoveries)
            self.assertEqual(processes_mentioning(env.dir), [], what)
        elapsed = time.monotonic() - t0
        segs = env.audit_segments()
        sys.stderr.write("crash: %d rounds, %d tokens, %d torn tails, %d segments, %.1f s\n" % (
            CRASH_ROUNDS, total_tokens, torn, len(segs), elapsed))
        # The kill comes 50-800 ms after the first token: nearly every round
        # must have killed the signer while clients held fresh tokens.
        self.assertGreaterEqual(rounds_with_tokens, CRASH_ROUNDS * 3 // 4)
        starts = [r for r in show(env) if r["type"] == "start"]
        self.assertEqual(len(starts), 2 * CRASH_ROUNDS)


# --- 3. fail closed -----------------------------------------------------------------

class FailClosed(AuditCase):
    def test_write_failure_mid_load(self):
        env = self.env
        env.setup()
        trigger = env.path("fault-trigger")
        extra = {"LD_PRELOAD": harness.faultio_path(), "JS_FAULT_TRIGGER": trigger,
                 "JS_FAULT_MATCH": os.path.join(env.audit_dir(), "audit-")}
        if os.environ.get("ASAN_OPTIONS") is not None:
            extra["ASAN_OPTIONS"] = os.environ["ASAN_OPTIONS"] + ":verify_asan_link_order=0"
        env.start(env=extra)
        out_file = env.path("tokens.txt")
        load = start_load(env, out_file, threads=8, requests=20000)
        try:
            wait_allowed(env)
            time.sleep(0.3)
            mark = len(env.daemon.stderr_lines())
            with open(trigger, "w", encoding="ascii"):
                pass
            summary, load_err = finish_load(load)
        finally:
            if load.poll() is None:
                load.kill()
                load.communicate()
        self.assertIsNotNone(summary, load_err)
        self.assertGreater(summary["ok"], 0, summary)
        self.assertGreater(summary["by_code"].get("UNAVAILABLE", 0), 0, (summary, load_err))
        self.assertEqual(set(summary["by_code"]) - {"OK", "UNAVAILABLE"}, set(),
                         (summary, load_err))
        self.assertIn("audit", load_err.lower(), load_err)
        self.assertTrue(env.daemon.running(), "the signer must stay up")
        env.wait_log(lambda o: o.get("event") == "request" and o.get("status") == "UNAVAILABLE",
                     start=mark)

        # While the fault lasts: UNAVAILABLE, saying the audit log is the cause.
        rc, out, err = env.sign("issuer-a", {"sub": SUB, "aud": AUD})
        self.assertEqual(rc, EXIT_UNAVAILABLE, err)
        self.assertEqual(out, "")
        self.assertIn("UNAVAILABLE", err)
        self.assertIn("audit", err.lower())
        self.assertIn("audit.unavailable", err)

        # Fault fixed: recovery within a few seconds (retry_ms is 1 s).
        os.unlink(trigger)
        deadline = time.monotonic() + harness.timeout(10)
        while True:
            rc, out, err = env.sign("issuer-a", {"sub": SUB, "aud": AUD}, "--json")
            if rc == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(rc, 0, "signing did not resume after the fault was removed: " + err)
        after = json.loads(out)
        self.assertEqual(env.stop(), 0)

        self.assertVerifies("after an I/O failure and recovery")
        recs = show(env)
        tokens = read_tokens(out_file)
        self.assertEqual(len(tokens), summary["ok"])
        self.assertTokensLogged(tokens + [(after["jti"], after["jwt"])], recs, "fail-closed")
        self.assertEqual([r["seq"] for r in recs], list(range(1, len(recs) + 1)))
        recovery = [r for r in recs if r["type"] == "recovery"]
        self.assertGreaterEqual(len(recovery), 1, "no recovery record")
        self.assertEqual(recovery[0]["reason"], "audit.io_recovered", recovery[0])
        self.assertIn("segment", recovery[0].get("detail", {}))
        self.assertIn("durable_offset", recovery[0].get("detail", {}))
        cps = [r for r in recs if r["type"] == "checkpoint" and r["reason"] == "recovery"]
        self.assertTrue(cps, "no recovery checkpoint")
        self.assertLess(recovery[0]["seq"], by_jti_seq(recs, after["jti"]))


def by_jti_seq(recs, jti):
    for r in recs:
        if r.get("jti") == jti:
            return r["seq"]
    raise AssertionError("jti %s not in the log" % jti)


# --- 4. start-up checks ---------------------------------------------------------------

class StartupChecks(AuditCase):
    def _session(self, **audit):
        env = self.env
        env.setup(audit=audit_conf(env, **audit))
        env.start()
        jtis = []
        for _ in range(5):
            rc, out, err = env.sign("issuer-a", {"sub": SUB, "aud": AUD}, "--json")
            self.assertEqual(rc, 0, err)
            jtis.append(json.loads(out)["jti"])
        return jtis

    def _tamper_and_start(self, fix_crc):
        """Flips one byte inside an early, checkpointed record (re-sealing its
        CRC like an attacker would if fix_crc); start-up must refuse, naming
        segment, offset and seq."""
        env = self.env
        jtis = self._session()
        self.assertEqual(env.stop(), 0)
        seg = env.audit_segments()[0]
        fr = frames(seg)
        # The third token's record: early, well before the last (close) checkpoint.
        target = [(off, n, p) for off, n, p in fr if p.get("jti") == jtis[2]]
        self.assertEqual(len(target), 1)
        off, n, payload = target[0]
        last_cp = max(o for o, _, p in fr if p["type"] == "checkpoint")
        self.assertLess(off, last_cp)
        with open(seg, "r+b") as f:
            f.seek(off)
            frame = bytearray(f.read(n))
            i = frame.index(jtis[2].encode("ascii"), 8) + 3  # inside the jti's value
            frame[i] = ord("A") if frame[i] != ord("A") else ord("B")
            if fix_crc:
                struct.pack_into("<I", frame, 4, crc32c(bytes(frame[0:4]) + bytes(frame[8:])))
            f.seek(off)
            f.write(bytes(frame))
        if fix_crc:
            # The record itself is well-formed now; the chain breaks at the next
            # one, whose "prev" no longer matches: that is what must be named.
            off, n, payload = fr[fr.index(target[0]) + 1]
        d = env.start(wait=False)
        rc = d.wait(timeout_s=30)
        self.assertNotEqual(rc, 0, "the signer started on a tampered log")
        self.assertFalse(d.logs("listening"))
        fails = d.logs("startup_failed")
        self.assertEqual(len(fails), 1, d.tail())
        msg = fails[0].get("message", "")
        self.assertIn(os.path.basename(seg), msg)
        self.assertRegex(msg, r"\boffset %d\b" % off)
        self.assertRegex(msg, r"\bseq %d\b" % payload["seq"])
        rc, out = verify(env)
        self.assertEqual(rc, 1, out)
        self.assertIn("TAMPERING", out)
        self.assertIn("first bad record seq %d" % payload["seq"], out)
        return msg

    def test_tampered_record_refuses_start(self):
        self._tamper_and_start(fix_crc=False)

    def test_tampered_record_with_valid_crc_refuses_start(self):
        self._tamper_and_start(fix_crc=True)

    def _check_torn_recovery(self, seg, cut, cut_offset):
        env = self.env
        before = set(os.listdir(env.audit_dir()))
        env.start()
        self.assertEqual(env.stop(), 0)
        broken = sorted(set(os.listdir(env.audit_dir())) - before)
        self.assertEqual(broken, [os.path.basename(seg) + ".broken"])
        with open(os.path.join(env.audit_dir(), broken[0]), "rb") as f:
            self.assertEqual(f.read(), cut)
        self.assertVerifies("after torn-tail recovery")
        recs = show(env)
        rec = [r for r in recs if r["type"] == "recovery"]
        self.assertEqual(len(rec), 1, rec)
        det = rec[0]["detail"]
        self.assertEqual(rec[0]["reason"], "audit.torn_tail")
        self.assertEqual(det["segment"], os.path.basename(seg))
        self.assertEqual(det["offset"], cut_offset)
        self.assertEqual(det["length"], len(cut))
        self.assertEqual(det["sha256"], sha256_hex(cut))
        self.assertEqual(os.path.basename(det["saved_as"]), broken[0])
        return recs

    def test_torn_tail_garbage_appended(self):
        env = self.env
        jtis = self._session()
        self.assertEqual(env.stop(), 0)
        seg = env.audit_segments()[-1]
        size = os.path.getsize(seg)
        garbage = b"\x37\x00\x00\x00\xde\xad"  # a length, a partial CRC, nothing more
        with open(seg, "ab") as f:
            f.write(garbage)
        recs = self._check_torn_recovery(seg, garbage, size)
        logged = {r.get("jti") for r in recs}
        self.assertTrue(set(jtis) <= logged)

    def test_torn_tail_truncated_mid_record(self):
        env = self.env
        # No checkpoint during the session: the tail after the open checkpoint is unsigned.
        jtis = self._session(checkpoint_interval="60s", heartbeat="60s")
        env.daemon.proc.kill()
        env.daemon.wait()
        seg = env.audit_segments()[-1]
        fr = frames(seg)
        off, n, payload = fr[-1]
        self.assertEqual(payload.get("jti"), jtis[-1])
        with open(seg, "rb") as f:
            data = f.read()
        self.assertEqual(off + n, len(data))
        cut = data[off:off + n - 5]
        with open(seg, "r+b") as f:
            f.truncate(off + n - 5)
        recs = self._check_torn_recovery(seg, cut, off)
        logged = {r.get("jti") for r in recs}
        self.assertTrue(set(jtis[:-1]) <= logged)
        self.assertNotIn(jtis[-1], logged)


if __name__ == "__main__":
    unittest.main(verbosity=2)
