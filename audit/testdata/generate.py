#!/usr/bin/env python3
"""generate.py - (re)builds the audit log test vectors of audit/testdata/.

Each vector is a directory: the log's segments, `audit-key.pem`, `checkpoint.json` and
`expected.json`, which says how to verify it and what FORMAT.md §7 requires as the verdict:
  {"pubkey": bool, "checkpoint": bool,   # pass audit-key.pem / checkpoint.json
   "exit": 0|1|3,                       # jwt-audit verify exit code
   "damage": "none"|"crash"|"tamper",   # classification of the first problem
   "bad_seq": N, "reason": "audit.*",   # first bad (or expected) seq and its reason
   "stalls": N, "largest_gap_seq": S,   # (optional, exit 0) stalls verify must report
   "why": "..."}
The expectations come from how each vector is built (below), not from running jwt-audit;
tests/integration/test_jwt_audit.py checks jwt-audit against them, and any other verifier can
be checked the same way. The base log is written by the real writer (tests/integration/
audit_gen); the damage is applied here, with valid CRCs, the way an attacker would.

usage: generate.py AUDIT_GEN OUTDIR
"""
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def frame(p):
    hdr = len(p).to_bytes(4, "little")
    return hdr + crc32c(hdr + p).to_bytes(4, "little") + p


def frames(data):
    out, off = [], 0
    while off < len(data):
        n = int.from_bytes(data[off:off + 4], "little")
        out.append(data[off + 8:off + 8 + n])
        off += 8 + n
    return out


def mth(leaves):
    """RFC 6962 §2.1."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def sub_member(p, name, old, new):
    """Replaces one member's value in canonical bytes, keeping them canonical."""
    a = f'"{name}":{old}'.encode()
    assert p.count(a) == 1, (name, p)
    return p.replace(a, f'"{name}":{new}'.encode())


def rechain(payloads, reroot):
    """Renumbers seq and recomputes prev (and tree_size) of every record, as an attacker
    without the audit key can; with reroot also every checkpoint's root and
    prev_checkpoint (its signature then no longer verifies)."""
    out, prev, leaves, last_cp = [], "0" * 64, [], "0" * 64
    for i, p in enumerate(payloads):
        r = json.loads(p)
        p = sub_member(p, "seq", r["seq"], i + 1)
        p = sub_member(p, "prev", json.dumps(r["prev"]), json.dumps(prev))
        if r["type"] == "checkpoint":
            p = sub_member(p, "tree_size", r["tree_size"], i)
            if reroot:
                p = sub_member(p, "root", json.dumps(r["root"]), json.dumps(mth(leaves).hex()))
                p = sub_member(p, "prev_checkpoint", json.dumps(r["prev_checkpoint"]),
                               json.dumps(last_cp))
            last_cp = hashlib.sha256(p).hexdigest()
        out.append(p)
        prev = hashlib.sha256(p).hexdigest()
        leaves.append(hashlib.sha256(b"\x00" + p).digest())
    return out


def main():
    gen, outdir = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp()
    base = os.path.join(tmp, "log")
    subprocess.run([gen, base, "12"], check=True, capture_output=True)
    seg = "audit-000001.log"
    with open(os.path.join(base, seg), "rb") as f:
        ps = frames(f.read())
    recs = [json.loads(p) for p in ps]
    assert recs[-1]["type"] == "checkpoint" and recs[-1]["reason"] == "close"
    n = len(ps)

    def vector(name, payloads, expected, raw_tail=b"", extra=None, cpfile=None, src=base):
        d = os.path.join(outdir, name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        shutil.copy(os.path.join(src, "audit-key.pem"), d)
        if cpfile is None:
            shutil.copy(os.path.join(src, "checkpoint.json"), d)
        else:
            with open(os.path.join(d, "checkpoint.json"), "wb") as f:
                f.write(cpfile)
        with open(os.path.join(d, seg), "wb") as f:
            f.write(b"".join(frame(p) for p in payloads) + raw_tail)
        for fname, data in (extra or {}).items():
            with open(os.path.join(d, fname), "wb") as f:
                f.write(data)
        with open(os.path.join(d, "expected.json"), "w") as f:
            json.dump(expected, f, indent=2)
            f.write("\n")

    full = {"pubkey": True, "checkpoint": True}
    vector("clean", ps, {**full, "exit": 0, "damage": "none",
                         "why": "an untouched log written by the writer"})
    vector("crash_tail", ps, {**full, "exit": 1, "damage": "crash", "bad_seq": n + 1,
                              "reason": "audit.framing",
                              "why": "a frame header cut short after the last record: a torn "
                                     "write beyond what checkpoint.json names"},
           raw_tail=b"\x40\x00\x00\x00\x01\x02")
    k = 8  # a sign record in the middle
    assert recs[k - 1]["type"] == "sign"
    flipped = bytearray(frame(ps[k - 1]))
    at = flipped.index(b'"sub":"user-') + len('"sub":"user-')
    flipped[at] = ord("9")
    d_flip = b"".join(frame(p) for p in ps[:k - 1]) + bytes(flipped) + \
        b"".join(frame(p) for p in ps[k:])
    vector("flipped_byte", [], {**full, "exit": 1, "damage": "tamper", "bad_seq": k,
                                "reason": "audit.framing",
                                "why": "one byte of record %d changed (CRC now wrong), valid "
                                       "frames after it" % k}, raw_tail=d_flip)
    vector("truncated", ps[:k], {**full, "exit": 1, "damage": "tamper", "bad_seq": k + 1,
                                 "reason": "audit.truncated",
                                 "why": "cut cleanly after record %d; checkpoint.json names "
                                        "seq %d" % (k, n)})
    dele = rechain(ps[:k - 1] + ps[k:], False)
    first_cp = next(i + 1 for i in range(k - 1, n - 1) if json.loads(dele[i])["type"] ==
                    "checkpoint")
    vector("deleted_rechained", dele, {"pubkey": True, "checkpoint": False, "exit": 1,
                                       "damage": "tamper", "bad_seq": first_cp,
                                       "reason": "audit.root",
                                       "why": "record %d deleted, seq and prev of the rest "
                                              "recomputed: the next checkpoint's root "
                                              "differs" % k})
    rer = rechain(ps[:k - 1] + ps[k:], True)
    vector("rerooted_without_key", rer, {"pubkey": True, "checkpoint": False, "exit": 1,
                                         "damage": "tamper", "bad_seq": first_cp,
                                         "reason": "audit.bad_signature",
                                         "why": "deleted and re-chained, roots and "
                                                "prev_checkpoint recomputed: the signature "
                                                "no longer verifies"})
    mod = ps[:-1] + [ps[-1].replace(b',"prev":', b',"x":"anything","prev":')]
    vector("modified_last_checkpoint", mod, {"pubkey": True, "checkpoint": False, "exit": 1,
                                             "damage": "tamper", "bad_seq": n,
                                             "reason": "audit.noncanonical",
                                             "why": "an extra member in the last checkpoint: "
                                                    "its signature still verifies, its bytes "
                                                    "are not canonical"})
    sig = recs[-1]["sig"]
    raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    long_sig = base64.urlsafe_b64encode(raw + b"\x00").rstrip(b"=").decode()
    vector("sig_65_bytes", ps[:-1] + [ps[-1].replace(sig.encode(), long_sig.encode())],
           {"pubkey": False, "checkpoint": False, "exit": 1, "damage": "tamper", "bad_seq": n,
            "reason": "audit.checkpoint",
            "why": "the last checkpoint's sig is 65 bytes: refused even without a key"})
    vector("stray_segment_names", ps, {**full, "exit": 0, "damage": "none",
                                       "why": "audit-4.log and audit-00004.log are not segment "
                                              "names: reported, ignored"},
           extra={"audit-4.log": frame(ps[0]), "audit-00004.log": frame(ps[0])})
    with open(os.path.join(base, "checkpoint.json"), "rb") as f:
        cp = f.read()
    vector("checkpoint_no_newline", ps, {**full, "exit": 3,
                                         "why": "checkpoint.json without its final newline "
                                                "is refused: verification does not run"},
           cpfile=cp[:-1])

    # Stalled heartbeat (FORMAT.md §5.1 late_ms, §7 rule 5): a second log whose writer
    # was held up 3 s by one checkpoint signature while idle (heartbeat 200 ms, so the
    # limit is 2 x 200 + 1000 ms); the checkpoint after it says late_ms/late_why, signed.
    stalled = os.path.join(tmp, "stalled")
    subprocess.run([gen, stalled, "12"], check=True, capture_output=True,
                   env={**os.environ, "AUDIT_GEN_STALL_MS": "3000"})
    with open(os.path.join(stalled, seg), "rb") as f:
        sps = frames(f.read())
    late = [i for i, p in enumerate(sps) if b'"late_ms":' in p and
            json.loads(p)["late_ms"] >= 2500]
    assert len(late) == 1, late
    li = late[0]
    vector("stalled_heartbeat", sps, {**full, "exit": 0, "damage": "none", "stalls": 1,
                                      "largest_gap_seq": li + 1,
                                      "why": "checkpoints about 3.2 s apart (limit 1.4 s); "
                                             "the later one's signed late_ms covers the excess: "
                                             "a stall, reported, not tampering"}, src=stalled)
    lr = json.loads(sps[li])
    strip = sps[li].replace(b',"late_ms":%d,"late_why":"%s","late_why_ms":%d' % (
        lr["late_ms"], lr["late_why"].encode(), lr["late_why_ms"]), b"")
    assert strip != sps[li] and b"late" not in strip
    stripped = sps[:li] + [strip] + sps[li + 1:]
    vector("stalled_heartbeat_late_removed", stripped,
           {"pubkey": True, "checkpoint": False, "exit": 1, "damage": "tamper",
            "bad_seq": li + 1, "reason": "audit.bad_signature",
            "why": "late_ms/late_why removed from the stalled checkpoint: still canonical, "
                   "but no longer what was signed"}, src=stalled)
    vector("stalled_heartbeat_unexplained_without_key", stripped,
           {"pubkey": False, "checkpoint": False, "exit": 1, "damage": "tamper",
            "bad_seq": li + 1, "reason": "audit.gap",
            "why": "the same log without the key: the 3.2 s gap has no late_ms to cover it "
                   "(an unexplained gap)"}, src=stalled)
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
