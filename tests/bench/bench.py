"""bench.py - signing throughput, CPU, latency, memory and start-up benchmark (make bench).

Measures, in one run on one SoftHSM token (issue 11 names the goals):
  1. the raw HSM: C_Sign throughput through lib/hsm/hsm.c with 1 and 2
     threads (bench_hsm), the ceiling, and its CPU per signature (1 thread);
  2. end to end: jwt-signerd with the durable audit log (fdatasync per
     group-commit batch), driven at full load by client_load over mTLS, and
     the signer's own CPU per token (utime+stime from /proc/PID/stat over the
     measured run) as a ratio of the raw HSM's CPU per signature;
  3. the same with the audit log's fsync disabled (audit.fsync: false, a
     test-only switch): the durable-vs-no-fsync loss is the number the audit
     log issue names (goal: under 10%);
  4. paced (open-loop) latency with client_paced: calls sent on a fixed
     schedule and timed from their scheduled send time, so a stall counts
     against every call it delays (no coordinated omission), at 200/s and at
     50% and 80% of the closed-loop maximum measured in step 2, durable and
     fsync off;
  5. the signer's RSS high-water (VmHWM) after 1,000 concurrent calls;
  6. start-up time, from spawning the process to its "listening" log line;
  7. token introspection (issue 13): a signer with `introspection:` on signs
     --introspect-tokens tokens, then jwtsigner.v1.Status/Introspect of them
     closed-loop (client_load --introspect: introspections/s, and the
     signer's CPU per introspection) and paced (client_paced --introspect:
     p50/p99). The signer rate-limits each introspector to
     JS_INTROSPECT_RATE (2,000/s, signer/core/status.h), so the closed loop
     runs one client_load per introspector identity (--introspectors of
     them, each its own certificate) at once and adds them up, and the
     paced runs stay under one introspector's rate. Introspection verifies
     the signature with OpenSSL, not the HSM, so the figures are printed
     absolute as well as as a ratio of the raw HSM rate;
  8. the issued-token index at start: audit_gen --tokens writes an audit log
     of --index-tokens live "sign" records (1,000,000 by default) with a
     checkpoint key imported into the SoftHSM token as the signer's audit
     key; the signer is started on it and on an empty log (same config
     otherwise): its token_index_loaded line (tokens, ms) and VmRSS once
     listening, empty vs full -> bytes per token and rebuild time.
Each configuration runs several rounds (alternating durable and fsync off,
so drift over the run hits both alike); medians are reported with their
spread (min..max over the rounds). The last line, prefixed BENCH_SUMMARY, is
one JSON object with every figure and the git commit, for comparing runs.

The machine's cores are shared by the signer and the load generator (and
anyone else's work): figures are only comparable between runs on the same,
otherwise idle, machine.

  /usr/bin/python3 tests/bench/bench.py [--quick] [--rounds N] [--requests N] [--threads N]
      [--latency-rounds N] [--latency-seconds S] [--startup-runs N] [--index-tokens N] ...
"""

import argparse
import json
import math
import os
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import harness  # noqa: E402

# Issue 11's goals, printed next to the figures they judge.
GOAL_CPU_RATIO = 2.0          # signer CPU per token / raw HSM CPU per signature
GOAL_LIGHT_P50_MS = 0.6       # 200/s, durable
GOAL_LIGHT_P99_MS = 1.5
GOAL_HALF_P99_MS = 2.0        # 50% of max, durable
GOAL_HALF_P999_MS = 5.0
GOAL_RSS_MIB = 64.0
GOAL_STARTUP_MS = 300.0
GOAL_AUDIT_LOSS_PCT = 10.0
GOAL_E2E_RATIO = 0.45         # end to end (durable) / raw 2-thread C_Sign

# The signer allows this many calls in flight per connection
# (JS_GRPC_MAX_CONCURRENT_STREAMS in signer/rpc/server.h); more calls on one
# connection wait in the client, so the RSS run spreads its calls over enough
# connections to have them all in flight at the signer.
STREAMS_PER_CONNECTION = 64

PERCENTILES = ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms")

# Full run (~5-6 minutes on 2 cores) and --quick (~1 minute, for iterating).
DEFAULTS = {"rounds": 5, "requests": 20000, "hsm_seconds": 3.0, "latency_rounds": 3,
            "latency_seconds": 5.0, "startup_runs": 5, "introspect_rounds": 3,
            "index_tokens": 1000000}
QUICK = {"rounds": 1, "requests": 5000, "hsm_seconds": 1.0, "latency_rounds": 1,
         "latency_seconds": 2.0, "startup_runs": 3, "introspect_rounds": 1,
         "index_tokens": 100000}


def build_dir():
    return os.path.dirname(harness.signerd_path())


def bench_hsm_path():
    return os.environ.get("JS_BENCH_HSM") or os.path.join(build_dir(), "tests", "bench_hsm")


def client_paced_path():
    return os.environ.get("JS_CLIENT_PACED") or os.path.join(build_dir(), "tests", "client_paced")


def audit_gen_path():
    return os.environ.get("JS_AUDIT_GEN") or os.path.join(build_dir(), "tests", "audit_gen")


def raw_hsm(env, threads, seconds):
    rc, out, err = env.run([bench_hsm_path(), env.module, "pkcs11:token=" + env.token_label,
                            env.pin_file, harness.DEFAULT_KEY["label"], threads, seconds],
                           timeout_s=seconds + 60)
    if rc != 0:
        raise SystemExit("bench_hsm failed: " + err)
    return json.loads(out.strip().splitlines()[-1])


def cpu_seconds(pid):
    """utime + stime of a whole process (all its threads, live and ended), in
    seconds, from /proc/PID/stat: fields 14 and 15, counted after the ')'
    that closes the command name, since the name may hold spaces."""
    with open("/proc/%d/stat" % pid, "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds():
    """utime + stime of this script's waited-for children: around one
    env.run, the load generator's own CPU, which shares the cores with the
    signer (the signer itself is waited for only when it stops)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def proc_status_kib(pid, field):
    """A 'kB' line of /proc/PID/status (VmHWM, VmRSS), in KiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise SystemExit("no %s in /proc/%d/status" % (field, pid))


def start_signer(env, cfg, log_path, timeout_s=30):
    """jwt-signerd with its log lines going to a file, not through a Python
    pipe: on a 2-core machine, pumping ~10k lines/s through the harness
    would take CPU from the very thing being measured."""
    log = open(log_path, "wb")
    proc = subprocess.Popen([harness.signerd_path(), "--config", cfg], stdout=subprocess.DEVNULL,
                            stderr=log, env=env.env(), cwd=env.dir)
    log.close()
    deadline = time.monotonic() + harness.timeout(timeout_s)
    while time.monotonic() < deadline:
        with open(log_path, "rb") as f:
            for line in f:
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if obj.get("event") == "listening":
                    return proc, obj["port"]
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("jwt-signerd did not start: see " + log_path)


def stop_signer(proc):
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=harness.timeout(60))


def signer_config(env, fsync, tag):
    return env.write_config("bench-%s.yaml" % tag,
                            audit={"dir": "audit-" + tag, "key_label": env.audit_key_label,
                                   "fsync": fsync},
                            workers=2)


def client_args(env, port, caller="issuer-a"):
    ca, cert, key = env.caller_files(caller)
    return ["--target", "localhost:%d" % port, "--ca", ca, "--cert", cert, "--key", key,
            "--claims", json.dumps(env.sample_claims())]


def warm_up(env, port, threads):
    """Connections, TLS sessions, page cache, the signer's first allocations."""
    rc, _, err = env.run([harness.client_test_path()] + client_args(env, port) +
                         ["--threads", threads, "--requests", 1000], timeout_s=120)
    if rc != 0:
        raise SystemExit("warm-up failed: " + err)


def end_to_end(env, fsync, threads, requests, tag):
    """Closed-loop maximum (tokens/s) and the signer's CPU per token (µs),
    both over the measured run only (after the warm-up)."""
    settle_disk()
    proc, port = start_signer(env, signer_config(env, fsync, tag),
                              env.path("signer-%s.log" % tag))
    load = [harness.client_test_path()] + client_args(env, port) + ["--threads", threads]
    try:
        warm_up(env, port, threads)
        cpu0, client0 = cpu_seconds(proc.pid), children_cpu_seconds()
        rc, out, err = env.run(load + ["--requests", requests], timeout_s=600)
        cpu1, client1 = cpu_seconds(proc.pid), children_cpu_seconds()
    finally:
        stop_rc = stop_signer(proc)
    if rc != 0 or stop_rc != 0:
        raise SystemExit("end-to-end run failed (client %d, signer %d): %s" % (rc, stop_rc, err))
    summary = json.loads(out.strip().splitlines()[-1])
    if summary["ok"] != requests:
        raise SystemExit("not every request succeeded: %r" % summary)
    return {"per_second": summary["ok_per_second"], "cpu_us": (cpu1 - cpu0) * 1e6 / requests,
            "client_cpu_us": (client1 - client0) * 1e6 / requests}


def paced(env, port, rate, seconds, threads, connections=1, warmup=200, requests=None,
          extra=()):
    """One client_paced run; its JSON summary. Fails the benchmark if any call failed."""
    argv = [client_paced_path()] + client_args(env, port) + list(extra) + [
        "--rate", "%.1f" % rate, "--threads", threads, "--connections", connections,
        "--warmup", warmup]
    argv += ["--requests", requests] if requests else ["--duration", seconds]
    rc, out, err = env.run(argv, timeout_s=120 + (seconds or 0) * 4)
    if rc != 0:
        raise SystemExit("client_paced failed (%d): %s%s" % (rc, out, err))
    return json.loads(out.strip().splitlines()[-1])


def settle_disk():
    """Writes back what earlier runs left dirty -- above all their signers'
    log files, tens of MB of request lines -- before a measurement starts:
    otherwise the kernel's writeback of them lands inside the next run and
    its fdatasyncs queue behind it (seen as ~30 ms stalls at 200/s)."""
    os.sync()


def latency_round(env, fsync, rates, seconds, threads, tag):
    """Paced runs at each rate, in order, against one signer (after a closed-loop warm-up)."""
    settle_disk()
    proc, port = start_signer(env, signer_config(env, fsync, tag),
                              env.path("signer-%s.log" % tag))
    try:
        warm_up(env, port, 64)
        return [paced(env, port, r, seconds, threads) for r in rates]
    finally:
        if stop_signer(proc) != 0:
            raise SystemExit("jwt-signerd (%s) did not stop cleanly" % tag)


def established_connections(port):
    """ESTABLISHED TCP connections whose local port is the signer's
    (/proc/net/tcp and tcp6, the machine's network namespace)."""
    n = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == "01":
                        n += 1
        except OSError:
            continue
    return n


def rss_after_concurrent(env, calls):
    """VmHWM of a fresh durable signer after `calls` calls held in flight at
    once: client_paced with a pool of `calls` threads at a rate no signer
    meets, so every thread has a call outstanding all the time, spread over
    enough connections that the signer takes them all (not just 64 per
    connection). A sampler counts the signer's connections meanwhile, to show
    they were really there."""
    connections = max(1, math.ceil(calls / STREAMS_PER_CONNECTION))
    proc, port = start_signer(env, signer_config(env, True, "rss"), env.path("signer-rss.log"))
    peak_conns = [0]
    done = threading.Event()

    def sample():
        while not done.wait(0.05):
            peak_conns[0] = max(peak_conns[0], established_connections(port))

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        start_kib = proc_status_kib(proc.pid, "VmRSS")
        sampler.start()
        run = paced(env, port, 1e6, None, calls, connections=connections, warmup=calls,
                    requests=calls * 5)
        done.set()
        sampler.join()
        hwm = proc_status_kib(proc.pid, "VmHWM")
        rss = proc_status_kib(proc.pid, "VmRSS")
    finally:
        done.set()
        if stop_signer(proc) != 0:
            raise SystemExit("jwt-signerd (rss) did not stop cleanly")
    return {"hwm_mib": hwm / 1024.0, "rss_mib": rss / 1024.0, "start_rss_mib": start_kib / 1024.0,
            "calls": calls, "client_max_in_flight": run["max_in_flight"],
            "connections": connections, "signer_connections_seen": peak_conns[0],
            "p50_ms": run["p50_ms"], "max_ms": run["max_ms"]}


def startup_once(env, cfg):
    """Milliseconds from just before spawning jwt-signerd to reading its
    "listening" line. Here stderr is a pipe read line by line (a blocking
    read wakes as soon as the line is written), not the polled file of
    start_signer: start-up takes tens of ms, so a 50 ms poll would swamp it,
    and the line's own "time" has only millisecond, wall-clock resolution."""
    t0 = time.monotonic()
    proc = subprocess.Popen([harness.signerd_path(), "--config", cfg], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env.env(), cwd=env.dir)
    watchdog = threading.Timer(harness.timeout(30), proc.kill)
    watchdog.start()
    elapsed = None
    try:
        for line in proc.stderr:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if obj.get("event") == "listening":
                elapsed = (time.monotonic() - t0) * 1000.0
                break
    finally:
        watchdog.cancel()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=harness.timeout(60))
    if elapsed is None or proc.returncode != 0:
        raise SystemExit("jwt-signerd start-up run failed (exit %r)" % proc.returncode)
    return elapsed


# --- token introspection (issue 13) ------------------------------------------------------

INTROSPECTOR_PREFIX = "spiffe://example.org/bench-introspector-"


def introspection_policy(env, introspectors):
    """The bench policy with the bench caller (issuer-a) and the extra
    introspector identities in `introspectors`."""
    policy = env.default_policy(rate={"per_second": 1000000, "burst": 1000000})
    policy["introspectors"] = [{"id": harness.CALLER_IDS["issuer-a"]}] + [
        {"id": INTROSPECTOR_PREFIX + str(i)} for i in range(introspectors)]
    return policy


def add_introspector_certs(env, introspectors):
    """One client certificate per extra introspector identity; their names."""
    names = []
    for i in range(introspectors):
        name = "bench-introspector-%d" % i
        env.add_cert(name, uris=(INTROSPECTOR_PREFIX + str(i),))
        names.append(name)
    return names


def introspection_config(env, tag, max_tokens):
    return env.write_config("bench-%s.yaml" % tag,
                            audit={"dir": "audit-" + tag, "key_label": env.audit_key_label,
                                   "fsync": True},
                            introspection={"max_tokens": max_tokens}, workers=2)


def introspect_closed_loop(env, port, callers, tokens_file, threads, requests):
    """One client_load --introspect per introspector identity, all at once,
    `requests` calls and `threads` threads split between them: the sum of
    their calls over the longest one's elapsed time."""
    procs = []
    per = max(1, requests // len(callers))
    per_threads = max(1, threads // len(callers))
    for c in callers:
        argv = [harness.client_test_path()] + client_args(env, port, c) + [
            "--introspect", tokens_file, "--threads", str(per_threads), "--requests", str(per)]
        procs.append(subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=env.env(),
                                      cwd=env.dir))
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=harness.timeout(600))
        lines = out.strip().splitlines()
        if not lines:
            raise SystemExit("client_load --introspect failed (%d): %s" % (p.returncode, err))
        outs.append(json.loads(lines[-1]))
        if p.returncode != 0:
            sys.stderr.write("client_load --introspect: %s" % err)
    ok = sum(o["ok"] for o in outs)
    if ok == 0:
        raise SystemExit("no introspection succeeded: %r" % outs)
    # Anything but OK+active (RESOURCE_EXHAUSTED: an introspector over its
    # rate; INACTIVE) is counted and printed, not hidden.
    refused = {}
    for o in outs:
        for code, n in o["by_code"].items():
            if code != "OK":
                refused[code] = refused.get(code, 0) + n
    elapsed = max(o["elapsed_s"] for o in outs)
    return {"calls": per * len(callers), "ok": ok, "refused": refused,
            "per_second": ok / elapsed if elapsed > 0 else 0.0}


def introspection(env, args, callers):
    """Sign args.introspect_tokens tokens, then introspect them: closed-loop
    rounds (introspections/s, the signer's CPU per introspection) and paced
    runs at args.introspect_rates (p50/p99), on one signer."""
    settle_disk()
    tag = "intro"
    proc, port = start_signer(env, introspection_config(env, tag, 1000000),
                              env.path("signer-%s.log" % tag))
    tokens_file = env.path("introspect-tokens.txt")
    try:
        rc, out, err = env.run([harness.client_test_path()] + client_args(env, port) + [
            "--threads", args.threads, "--requests", args.introspect_tokens, "--out",
            tokens_file], timeout_s=600)
        if rc != 0:
            raise SystemExit("signing the tokens to introspect failed: " + err)
        # Warm-up: connections, TLS sessions, every introspector's first calls.
        introspect_closed_loop(env, port, callers, tokens_file, args.threads,
                               min(1000 * len(callers), 5000))
        rounds = []
        for _ in range(args.introspect_rounds):
            cpu0, client0 = cpu_seconds(proc.pid), children_cpu_seconds()
            r = introspect_closed_loop(env, port, callers, tokens_file, args.threads,
                                       args.requests)
            cpu1 = cpu_seconds(proc.pid)
            r["cpu_us"] = (cpu1 - cpu0) * 1e6 / r["ok"]
            rounds.append(r)
            # The per-introspector buckets refill before the next round.
            time.sleep(2.5)
        lat = []
        for rate in args.introspect_rates:
            runs = []
            for _ in range(args.latency_rounds):
                runs.append(paced(env, port, rate, args.latency_seconds, args.latency_threads,
                                  extra=["--introspect", tokens_file]))
                time.sleep(2.5)
            lat.append((rate, runs))
    finally:
        if stop_signer(proc) != 0:
            raise SystemExit("jwt-signerd (%s) did not stop cleanly" % tag)
    return rounds, lat


# --- the issued-token index at start (issue 13) ---------------------------------------

INDEX_AUDIT_LABEL = "jwt-signer-bench-index-audit"


def import_audit_key(env, key_pem, pub_pem, label):
    """The generator's checkpoint key into the SoftHSM token (private key
    CKA_SIGN, public key), under `label`: the signer verifies the log's
    last checkpoint with its audit key at start and signs the next ones with
    it."""
    base = ["pkcs11-tool", "--module", env.module, "--token-label", env.token_label, "--login",
            "--pin", env.pin, "--label", label, "--id", "b13d"]
    for path, kind in ((key_pem, "privkey"), (pub_pem, "pubkey")):
        argv = base + ["--write-object", path, "--type", kind]
        if kind == "privkey":
            argv.append("--usage-sign")
        rc, out, err = env.run(argv, timeout_s=60)
        if rc != 0:
            raise SystemExit("pkcs11-tool --write-object %s failed: %s%s" % (kind, out, err))


def logged_event(log_path, event):
    with open(log_path, "rb") as f:
        for line in f:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if obj.get("event") == event:
                return obj
    raise SystemExit("no %s line in %s" % (event, log_path))


def index_start(env, tag, audit_dir, max_tokens):
    """Start a signer with introspection on over audit_dir (the imported audit
    key): its token_index_loaded line, VmRSS once listening, spawn to
    listening; then stop it."""
    settle_disk()
    cfg = env.write_config("bench-%s.yaml" % tag,
                           audit={"dir": audit_dir, "key_label": INDEX_AUDIT_LABEL, "fsync": True},
                           introspection={"max_tokens": max_tokens}, workers=2)
    log_path = env.path("signer-%s.log" % tag)
    t0 = time.monotonic()
    proc, _ = start_signer(env, cfg, log_path, timeout_s=900)
    listening_s = time.monotonic() - t0
    try:
        rss = proc_status_kib(proc.pid, "VmRSS")
        hwm = proc_status_kib(proc.pid, "VmHWM")
        loaded = logged_event(log_path, "token_index_loaded")
    finally:
        if stop_signer(proc) != 0:
            raise SystemExit("jwt-signerd (%s) did not stop cleanly" % tag)
    return {"rss_kib": rss, "hwm_kib": hwm, "tokens": loaded["tokens"], "ms": loaded["ms"],
            "listening_s": listening_s}


def index_memory(env, count, issuer):
    """The index's memory per token and rebuild time for `count` live tokens."""
    gen_dir = env.path("audit-index")
    key_pem = env.path("index-audit-key.pem")
    t0 = time.monotonic()
    rc, out, err = env.run([audit_gen_path(), "--tokens", "--ttl", "86400", "--key-out", key_pem,
                            "--origin", issuer, gen_dir, count], timeout_s=1800)
    if rc != 0:
        raise SystemExit("audit_gen --tokens failed: " + err)
    gen_s = time.monotonic() - t0
    import_audit_key(env, key_pem, os.path.join(gen_dir, "audit-key.pem"), INDEX_AUDIT_LABEL)
    log_bytes = sum(os.path.getsize(os.path.join(gen_dir, f)) for f in os.listdir(gen_dir)
                    if f.startswith("audit-") and f.endswith(".log"))
    max_tokens = max(count, 1000)
    empty = index_start(env, "index-empty", "audit-index-empty", max_tokens)
    full = index_start(env, "index-full", "audit-index", max_tokens)
    if full["tokens"] != count:
        raise SystemExit("the index loaded %d tokens, not %d" % (full["tokens"], count))
    per_token = (full["rss_kib"] - empty["rss_kib"]) * 1024.0 / count if count else 0.0
    return {"tokens": count, "gen_s": gen_s, "log_mib": log_bytes / 1048576.0,
            "rebuild_ms": full["ms"], "listening_s": full["listening_s"],
            "empty_listening_s": empty["listening_s"], "rss_empty_mib": empty["rss_kib"] / 1024.0,
            "rss_full_mib": full["rss_kib"] / 1024.0, "hwm_full_mib": full["hwm_kib"] / 1024.0,
            "bytes_per_token": per_token}


def git_commit():
    """The source tree's short commit, '+dirty' if tracked files differ from
    it; JS_BENCH_COMMIT names it for a tree without .git (a git archive)."""
    if os.environ.get("JS_BENCH_COMMIT"):
        return os.environ["JS_BENCH_COMMIT"]
    src = harness.source_dir()
    try:
        head = subprocess.run(["git", "-C", src, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", src, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30, check=True).stdout
        return head + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def spread(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def verdict(value, goal):
    return "ok" if value <= goal else "MISSED"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="1 round of everything, short runs (~1 minute): for iterating")
    ap.add_argument("--rounds", type=int, help="end-to-end rounds per configuration (5)")
    ap.add_argument("--requests", type=int, help="calls per end-to-end round (20000)")
    ap.add_argument("--threads", type=int, default=64, help="client_load threads (64)")
    ap.add_argument("--hsm-seconds", type=float, help="each raw HSM run (3)")
    ap.add_argument("--latency-rounds", type=int, help="paced-latency rounds (3)")
    ap.add_argument("--latency-seconds", type=float, help="each paced run (5)")
    ap.add_argument("--latency-threads", type=int, default=64,
                    help="client_paced sender pool (64)")
    ap.add_argument("--light-rate", type=float, default=200.0, help="the light paced load (200/s)")
    ap.add_argument("--rss-calls", type=int, default=1000, help="concurrent calls for VmHWM (1000)")
    ap.add_argument("--startup-runs", type=int, help="start-up measurements (5)")
    ap.add_argument("--introspect-tokens", type=int, default=10000,
                    help="tokens signed, then introspected (10000)")
    ap.add_argument("--introspectors", type=int, default=12,
                    help="extra introspector identities for the closed loop, each rate-limited "
                         "by the signer to 2,000/s (12)")
    ap.add_argument("--introspect-rounds", type=int, help="closed-loop introspection rounds (3)")
    ap.add_argument("--introspect-rates", default="200,1500",
                    help="paced introspection rates, comma-separated, each under one "
                         "introspector's 2,000/s (200,1500)")
    ap.add_argument("--index-tokens", type=int,
                    help="live tokens in the generated audit log for the index figures "
                         "(1000000; --quick 100000)")
    args = ap.parse_args()
    args.introspect_rates = [float(x) for x in args.introspect_rates.split(",") if x]
    for k, v in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, k) is None:
            setattr(args, k, v)

    load_start = os.getloadavg()[0]
    with harness.Env(prefix="jwt-signer-bench-") as env:
        env.setup(policy=introspection_policy(env, args.introspectors))
        introspectors = ["issuer-a"] + add_introspector_certs(env, args.introspectors)
        hsm1 = raw_hsm(env, 1, args.hsm_seconds)
        hsm2 = raw_hsm(env, 2, args.hsm_seconds)
        raw1, raw2 = hsm1["per_second"], hsm2["per_second"]
        raw_cpu = hsm1["cpu_us_per_signature"]
        # The same module with two threads signing at once, as the signer's
        # workers do: SoftHSM's own cost per signature rises with contention.
        raw_cpu2 = hsm2["cpu_us_per_signature"]

        durable, nofsync = [], []
        for r in range(args.rounds):
            # Alternate which goes first, so drift over the run hits both alike.
            order = [(True, durable, "d%d" % r), (False, nofsync, "n%d" % r)]
            for fsync, sink, tag in (order if r % 2 == 0 else order[::-1]):
                sink.append(end_to_end(env, fsync, args.threads, args.requests, tag))
        d = statistics.median(x["per_second"] for x in durable)
        n = statistics.median(x["per_second"] for x in nofsync)
        d_cpu = spread([x["cpu_us"] for x in durable])
        n_cpu = spread([x["cpu_us"] for x in nofsync])
        ceiling = max(raw1, raw2)

        # Paced latency at the light load and at 50% / 80% of this run's
        # durable closed-loop maximum.
        loads = [("%.0f/s" % args.light_rate, args.light_rate), ("50% of max", 0.5 * d),
                 ("80% of max", 0.8 * d)]
        lat = {True: [[] for _ in loads], False: [[] for _ in loads]}
        for r in range(args.latency_rounds):
            order = [True, False] if r % 2 == 0 else [False, True]
            for fsync in order:
                runs = latency_round(env, fsync, [x[1] for x in loads], args.latency_seconds,
                                     args.latency_threads, "l%s%d" % ("d" if fsync else "n", r))
                for i, run in enumerate(runs):
                    lat[fsync][i].append(run)

        # Read here: the memory run's 1,000 sender threads would inflate it.
        load_end = os.getloadavg()[0]
        rss = rss_after_concurrent(env, args.rss_calls)

        startup_cfg = signer_config(env, True, "startup")
        startups = [startup_once(env, startup_cfg) for _ in range(args.startup_runs)]
        startup = spread(startups)

        intro_rounds, intro_lat = introspection(env, args, introspectors)
        t_index = time.monotonic()
        index = index_memory(env, args.index_tokens, introspection_policy(env, 0)["issuer"])
        index["bench_s"] = time.monotonic() - t_index

    # A rough noise flag: before the run, a load above the core count is
    # someone else's work; at the end the average also holds this run's own
    # signer and load generator (about 2 runnable at full load), so only well
    # above that. Busy runs' figures (throughput and tail latency first) are
    # not comparable with a quiet run's.
    busy = load_start > os.cpu_count() or load_end > 2 * os.cpu_count()
    print("jwt-signer benchmark (ES256, SoftHSM, %d cores, %d client threads, %d requests "
          "x %d rounds, median)" % (os.cpu_count(), args.threads, args.requests, args.rounds))
    print("  machine load average (1 min) %.2f at start, %.2f at end%s" % (
        load_start, load_end,
        "  -- BUSY: other work shared the cores, figures are noisy" if busy else ""))
    print("  %-38s %10.0f /s   1.000 of raw HSM (2 threads)" % ("raw HSM C_Sign, 2 threads", raw2))
    print("  %-38s %10.0f /s   %.3f" % ("raw HSM C_Sign, 1 thread", raw1, raw1 / ceiling))
    print("  %-38s %10.0f /s   %.3f" % ("end to end, audit fsync off", n, n / ceiling))
    print("  %-38s %10.0f /s   %.3f  (goal: >= %.2f)" % (
        "end to end, audit durable (fdatasync)", d, d / ceiling, GOAL_E2E_RATIO))
    print("  durable / fsync-off = %.3f  (loss %.1f%%; goal: loss under %.0f%%)" % (
        d / n, 100.0 * (1 - d / n), GOAL_AUDIT_LOSS_PCT))
    print("  rounds: durable %s; fsync off %s" % (
        ", ".join("%.0f" % x["per_second"] for x in durable),
        ", ".join("%.0f" % x["per_second"] for x in nofsync)))

    print("CPU per token (signer utime+stime from /proc over the measured run / tokens; median "
          "[min..max])")
    print("  %-38s %8.1f us" % ("raw HSM CPU per signature (1 thread)", raw_cpu))
    print("  %-38s %8.1f us  (two threads signing at once, as the signer's workers do)" % (
        "raw HSM CPU per signature (2 threads)", raw_cpu2))
    for name, c in (("signer, audit durable", d_cpu), ("signer, audit fsync off", n_cpu)):
        print("  %-38s %8.1f us [%.1f..%.1f]  %.2fx raw HSM  (goal: <= %.1fx) %s" % (
            name, c["median"], c["min"], c["max"], c["median"] / raw_cpu, GOAL_CPU_RATIO,
            verdict(c["median"] / raw_cpu, GOAL_CPU_RATIO)))

    print("  %-38s %8.1f us  (the load generator, on the same cores)" % (
        "client_load, audit durable",
        statistics.median(x["client_cpu_us"] for x in durable)))
    print("Paced latency (open loop, from the scheduled send time; ms; %g s per run, %d "
          "senders; median of %d rounds, [min..max] below)" % (
              args.latency_seconds, args.latency_threads, args.latency_rounds))
    print("  %-12s %-9s %9s %8s %8s %8s %8s %8s %6s  %s" % (
        "load", "audit", "achieved", "p50", "p90", "p99", "p999", "max", "late", "goals"))
    lat_summary = []
    for i, (name, rate) in enumerate(loads):
        for fsync in (True, False):
            runs = lat[fsync][i]
            med = {p: spread([x[p] for x in runs]) for p in PERCENTILES}
            achieved = statistics.median(x["achieved"] for x in runs)
            late = statistics.median(x["late_sends"] for x in runs)
            goals = ""
            if fsync and i == 0:
                goals = "p50 <= %.1f %s, p99 <= %.1f %s" % (
                    GOAL_LIGHT_P50_MS, verdict(med["p50_ms"]["median"], GOAL_LIGHT_P50_MS),
                    GOAL_LIGHT_P99_MS, verdict(med["p99_ms"]["median"], GOAL_LIGHT_P99_MS))
            elif fsync and i == 1:
                goals = "p99 <= %.0f %s, p999 <= %.0f %s" % (
                    GOAL_HALF_P99_MS, verdict(med["p99_ms"]["median"], GOAL_HALF_P99_MS),
                    GOAL_HALF_P999_MS, verdict(med["p999_ms"]["median"], GOAL_HALF_P999_MS))
            audit = "durable" if fsync else "fsync off"
            print("  %-12s %-9s %7.0f/s %8.3f %8.3f %8.3f %8.3f %8.3f %6.0f  %s" % (
                name if fsync else "", audit, achieved,
                *(med[p]["median"] for p in PERCENTILES), late, goals))
            print("  %-12s %-9s %9s %s" % ("", "", "spread", "  ".join(
                "%s %.2f..%.2f" % (p[:-3], med[p]["min"], med[p]["max"]) for p in PERCENTILES)))
            lat_summary.append({"load": name, "rate": round(rate, 1),
                                "audit": "durable" if fsync else "fsync_off",
                                "achieved": achieved, "late_sends": late,
                                **{p: {k: round(v, 3) for k, v in med[p].items()}
                                   for p in PERCENTILES}})

    print("Memory: VmHWM after %d concurrent calls  %.1f MiB  (goal: <= %.0f MiB) %s" % (
        rss["calls"], rss["hwm_mib"], GOAL_RSS_MIB, verdict(rss["hwm_mib"], GOAL_RSS_MIB)))
    print("  (RSS %.1f MiB before, %.1f MiB after; %d client connections, %d seen at the signer, "
          "up to %d calls in flight in the client)" % (
              rss["start_rss_mib"], rss["rss_mib"], rss["connections"],
              rss["signer_connections_seen"], rss["client_max_in_flight"]))
    print("Start-up: spawn to \"listening\"  %.1f ms median [%.1f..%.1f] of %d  "
          "(goal: <= %.0f ms) %s" % (startup["median"], startup["min"], startup["max"],
                                     len(startups), GOAL_STARTUP_MS,
                                     verdict(startup["median"], GOAL_STARTUP_MS)))

    ipc = statistics.median(x["per_second"] for x in intro_rounds)
    icpu = spread([x["cpu_us"] for x in intro_rounds])
    print("Introspection (Status/Introspect of %d issued tokens, signature verified with "
          "OpenSSL, not the HSM; %d introspectors at once, each rate-limited to 2,000/s)" % (
              args.introspect_tokens, len(introspectors)))
    print("  %-38s %10.0f /s   %.3f of the raw HSM ceiling  rounds %s" % (
        "closed loop, %d threads" % args.threads, ipc, ipc / ceiling,
        ", ".join("%.0f" % x["per_second"] for x in intro_rounds)))
    refused = {}
    for x in intro_rounds:
        for k, v in x["refused"].items():
            refused[k] = refused.get(k, 0) + v
    if refused:
        print("  NOT OK in the closed loop (not counted above): %s" % json.dumps(refused))
    print("  %-38s %8.1f us [%.1f..%.1f]  %.2fx raw HSM CPU per signature" % (
        "signer CPU per introspection", icpu["median"], icpu["min"], icpu["max"],
        icpu["median"] / raw_cpu))
    intro_lat_summary = []
    for rate, runs in intro_lat:
        med = {p: spread([x[p] for x in runs]) for p in PERCENTILES}
        achieved = statistics.median(x["achieved"] for x in runs)
        print("  paced %-6.0f/s (achieved %.0f/s)  p50 %.3f  p90 %.3f  p99 %.3f  p999 %.3f  "
              "max %.3f ms  (p99 spread %.2f..%.2f)" % (
                  rate, achieved, *(med[p]["median"] for p in PERCENTILES),
                  med["p99_ms"]["min"], med["p99_ms"]["max"]))
        intro_lat_summary.append({"rate": rate, "achieved": achieved,
                                  **{p: {k: round(v, 3) for k, v in med[p].items()}
                                     for p in PERCENTILES}})
    print("Issued-token index at start: %d live tokens (audit log %.0f MiB, generated in %.1f s)"
          % (index["tokens"], index["log_mib"], index["gen_s"]))
    print("  rebuild (token_index_loaded ms)  %.2f s;  spawn to listening %.2f s "
          "(empty log: %.2f s)" % (index["rebuild_ms"] / 1000.0, index["listening_s"],
                                    index["empty_listening_s"]))
    print("  VmRSS once listening: %.1f MiB empty log, %.1f MiB full -> %.0f bytes per token "
          "(VmHWM full %.1f MiB); this part took %.0f s" % (
              index["rss_empty_mib"], index["rss_full_mib"], index["bytes_per_token"],
              index["hwm_full_mib"], index["bench_s"]))

    summary = {
        "commit": git_commit(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cores": os.cpu_count(),
        "loadavg_start": round(load_start, 2), "loadavg_end": round(load_end, 2), "busy": busy,
        "quick": args.quick,
        "rounds": args.rounds, "requests": args.requests, "threads": args.threads,
        "latency_rounds": args.latency_rounds, "latency_seconds": args.latency_seconds,
        "raw_hsm_1t_per_s": round(raw1, 1), "raw_hsm_2t_per_s": round(raw2, 1),
        "raw_hsm_cpu_us": raw_cpu,
        "raw_hsm_cpu_us_2t": raw_cpu2,
        "e2e_durable_per_s": round(d, 1), "e2e_fsync_off_per_s": round(n, 1),
        "e2e_durable_ratio": round(d / ceiling, 3),
        "e2e_durable_rounds": [round(x["per_second"], 1) for x in durable],
        "e2e_fsync_off_rounds": [round(x["per_second"], 1) for x in nofsync],
        "audit_loss_pct": round(100.0 * (1 - d / n), 2),
        "signer_cpu_us_durable": {k: round(v, 1) for k, v in d_cpu.items()},
        "signer_cpu_us_fsync_off": {k: round(v, 1) for k, v in n_cpu.items()},
        "cpu_ratio_durable": round(d_cpu["median"] / raw_cpu, 2),
        "cpu_ratio_fsync_off": round(n_cpu["median"] / raw_cpu, 2),
        "client_cpu_us_durable": round(statistics.median(x["client_cpu_us"] for x in durable), 1),
        "latency": lat_summary,
        "rss_hwm_mib": round(rss["hwm_mib"], 1), "rss_calls": rss["calls"],
        "rss_signer_connections": rss["signer_connections_seen"],
        "startup_ms": {k: round(v, 1) for k, v in startup.items()},
        "introspect_per_s": round(ipc, 1),
        "introspect_ratio": round(ipc / ceiling, 3),
        "introspect_rounds": [round(x["per_second"], 1) for x in intro_rounds],
        "introspect_not_ok": refused,
        "introspect_cpu_us": {k: round(v, 1) for k, v in icpu.items()},
        "introspect_introspectors": len(introspectors),
        "introspect_latency": intro_lat_summary,
        "index_tokens": index["tokens"],
        "index_rebuild_s": round(index["rebuild_ms"] / 1000.0, 3),
        "index_listening_s": round(index["listening_s"], 3),
        "index_empty_listening_s": round(index["empty_listening_s"], 3),
        "index_rss_empty_mib": round(index["rss_empty_mib"], 1),
        "index_rss_full_mib": round(index["rss_full_mib"], 1),
        "index_bytes_per_token": round(index["bytes_per_token"], 1),
        "index_log_mib": round(index["log_mib"], 1),
        "index_part_s": round(index["bench_s"], 1),
    }
    print("BENCH_SUMMARY " + json.dumps(summary, separators=(",", ":")))


if __name__ == "__main__":
    main()
