"""bench.py - signing throughput benchmark (make bench).

Measures, in one run on one SoftHSM token:
  1. the raw HSM: C_Sign throughput through lib/hsm/hsm.c with 1 and 2
     threads (bench_hsm), the ceiling;
  2. end to end: jwt-signerd with the durable audit log (fdatasync per
     group-commit batch), driven at full load by client_load over mTLS;
  3. the same with the audit log's fsync disabled (audit.fsync: false, a
     test-only switch).
Each end-to-end configuration runs ROUNDS times, alternating, and the median
is reported, with every figure also shown as a ratio of the raw HSM rate.
The durable-vs-no-fsync loss is the number the audit log issue names (goal:
under 10%).

  /usr/bin/python3 tests/bench/bench.py [--rounds N] [--requests N] [--threads N]
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import harness  # noqa: E402


def build_dir():
    return os.path.dirname(harness.signerd_path())


def bench_hsm_path():
    return os.environ.get("JS_BENCH_HSM") or os.path.join(build_dir(), "tests", "bench_hsm")


def raw_hsm(env, threads, seconds):
    rc, out, err = env.run([bench_hsm_path(), env.module, "pkcs11:token=" + env.token_label,
                            env.pin_file, harness.DEFAULT_KEY["label"], threads, seconds],
                           timeout_s=seconds + 60)
    if rc != 0:
        raise SystemExit("bench_hsm failed: " + err)
    return json.loads(out.strip().splitlines()[-1])["per_second"]


def start_signer(env, cfg, log_path):
    """jwt-signerd with its log lines going to a file, not through a Python
    pipe: on a 2-core machine, pumping ~10k lines/s through the harness
    would take CPU from the very thing being measured."""
    log = open(log_path, "wb")
    proc = subprocess.Popen([harness.signerd_path(), "--config", cfg], stdout=subprocess.DEVNULL,
                            stderr=log, env=env.env(), cwd=env.dir)
    log.close()
    deadline = time.monotonic() + harness.timeout(30)
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


def end_to_end(env, fsync, threads, requests, tag):
    cfg = env.write_config("bench-%s.yaml" % tag,
                           audit={"dir": "audit-" + tag, "key_label": env.audit_key_label,
                                  "fsync": fsync},
                           workers=2)
    proc, port = start_signer(env, cfg, env.path("signer-%s.log" % tag))
    ca, cert, key = env.caller_files("issuer-a")
    load = [harness.client_test_path(), "--target", "localhost:%d" % port, "--ca", ca, "--cert",
            cert, "--key", key, "--threads", threads, "--claims", json.dumps(env.sample_claims())]
    try:
        # Warm-up: connections, sessions, page cache.
        env.run(load + ["--requests", 1000], timeout_s=120)
        rc, out, err = env.run(load + ["--requests", requests], timeout_s=600)
    finally:
        proc.send_signal(signal.SIGTERM)
        stop_rc = proc.wait(timeout=harness.timeout(60))
    if rc != 0 or stop_rc != 0:
        raise SystemExit("end-to-end run failed (client %d, signer %d): %s" % (rc, stop_rc, err))
    summary = json.loads(out.strip().splitlines()[-1])
    if summary["ok"] != requests:
        raise SystemExit("not every request succeeded: %r" % summary)
    return summary["ok_per_second"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--threads", type=int, default=64)
    ap.add_argument("--hsm-seconds", type=float, default=3.0)
    args = ap.parse_args()

    with harness.Env(prefix="jwt-signer-bench-") as env:
        env.setup(policy=env.default_policy(rate={"per_second": 1000000, "burst": 1000000}))
        raw1 = raw_hsm(env, 1, args.hsm_seconds)
        raw2 = raw_hsm(env, 2, args.hsm_seconds)
        durable, nofsync = [], []
        for r in range(args.rounds):
            # Alternate which goes first, so drift over the run hits both alike.
            order = [(True, durable, "d%d" % r), (False, nofsync, "n%d" % r)]
            for fsync, sink, tag in (order if r % 2 == 0 else order[::-1]):
                sink.append(end_to_end(env, fsync, args.threads, args.requests, tag))
        d, n = statistics.median(durable), statistics.median(nofsync)
        ceiling = max(raw1, raw2)
        print("jwt-signer benchmark (ES256, SoftHSM, %d cores, %d client threads, %d requests "
              "x %d rounds, median)" % (os.cpu_count(), args.threads, args.requests, args.rounds))
        print("  %-38s %10.0f /s   1.000 of raw HSM (2 threads)" % ("raw HSM C_Sign, 2 threads", raw2))
        print("  %-38s %10.0f /s   %.3f" % ("raw HSM C_Sign, 1 thread", raw1, raw1 / ceiling))
        print("  %-38s %10.0f /s   %.3f" % ("end to end, audit fsync off", n, n / ceiling))
        print("  %-38s %10.0f /s   %.3f" % ("end to end, audit durable (fdatasync)", d, d / ceiling))
        print("  durable / fsync-off = %.3f  (loss %.1f%%; goal: loss under 10%%)" % (
            d / n, 100.0 * (1 - d / n)))
        print("  rounds: durable %s; fsync off %s" % (
            ", ".join("%.0f" % x for x in durable), ", ".join("%.0f" % x for x in nofsync)))


if __name__ == "__main__":
    main()
