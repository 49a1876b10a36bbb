#!/usr/bin/env python3
"""gen-reasons.py - the README's reason tables, generated from lib/base/reasons.def.

reasons.def is the one list of reasons (JS_REASON(ID, "name", classes,
"meaning") rows). This script renders it as markdown tables, one per group,
and puts each between its markers in README.md:

    <!-- reasons:GROUP:begin -->  ...generated...  <!-- reasons:GROUP:end -->

Groups (who sees the reason, and where the README explains it):
  signer    Signer calls (SignJwt, GetJwks) and any RPC: what a gRPC client
            sees, with the gRPC status(es) the reason is returned with.
  admin     Admin calls: the same for the Admin service.
  startup   jwt-signerd refusing to start (configuration, policy, HSM, state
            and audit files, listeners); the policy.* rows here also come
            back from Admin/ReloadPolicy as FAILED_PRECONDITION.
  verifier  jwt-audit (verify, prove, check-proof) reading a log offline.
  records   reasons written only into audit records (JS_C_RECORD).
A row may appear in several groups (hsm.key_mismatch is a start-up failure
and an UNAVAILABLE reply); the client groups show only the run-time statuses.
Left out (EXCLUDED): the yaml.* rows ("yaml" is the domain of a YAML document
loaded without one, in tests; the signer's documents use config.* and
policy.*).
Every other row must land in at least one group, so a new row forces a
decision here (the script fails otherwise).

Usage:
  gen-reasons.py [--def reasons.def]              print every group's table
  gen-reasons.py [--def ...] --write README.md    replace the marked blocks
  gen-reasons.py [--def ...] --check README.md    exit 1 if README.md is stale
"""
import argparse
import fnmatch
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DEF = os.path.join(HERE, "..", "lib", "base", "reasons.def")

# JS_C_* (lib/base/err.h) in the order the status column lists them, with the
# gRPC status the RPC layer maps each to (signer/rpc: the one mapping).
# JS_C_CONFIG (start-up only) and JS_C_RECORD never reach a client.
RUNTIME = [
    ("JS_C_OK", "OK"),
    ("JS_C_DENIED", "PERMISSION_DENIED"),
    ("JS_C_INVALID", "INVALID_ARGUMENT"),
    ("JS_C_LIMIT", "RESOURCE_EXHAUSTED"),
    ("JS_C_NOTFOUND", "NOT_FOUND"),
    ("JS_C_STATE", "FAILED_PRECONDITION"),
    ("JS_C_UNAVAIL", "UNAVAILABLE"),
    ("JS_C_INTERNAL", "INTERNAL"),
    ("JS_C_UNIMPLEMENTED", "UNIMPLEMENTED"),
]
ALL_CLASSES = {c for c, _ in RUNTIME} | {"JS_C_CONFIG", "JS_C_RECORD"}
RUNTIME_SET = {c for c, _ in RUNTIME}
NOT_RECORD = ALL_CLASSES - {"JS_C_RECORD"}

# rows in no table (see the docstring)
EXCLUDED = ["yaml.*"]

# name patterns (fnmatch) and the classes a row needs to be shown in a group
SIGNER_ONLY = [
    "keystate.not_active", "keystate.lifetime_unknown", "keystate.no_active",
]
ADMIN_TEXT = ["request.identity", "request.reason", "request.key", "request.kid"]
GROUPS = [
    {
        "name": "signer",
        "columns": ("reason", "gRPC status", "meaning"),
        "include": [
            "ok", "identity.none", "identity.ambiguous", "identity.invalid", "request.*",
            "claims.*", "policy.no_match", "policy.frozen", "admin.frozen", "policy.key",
            "policy.audience", "policy.scope", "policy.subject", "policy.claim", "policy.cnf",
            "policy.fixed_claim", "policy.lifetime", "policy.token_issuer", "externaljwt.connections", "introspect.disabled", "introspect.not_allowed", "introspect.rate_limited", "rate.limited", "rate.internal", "key.*",
            "hsm.*", "audit.unavailable", "audit.event", "audit.record_too_large",
            "http.form", "http.body_too_large",
            "rpc.unimplemented", "internal.*", "policy.internal", "policy.no_issuer",
            "tokindex.full", "tokindex.duplicate", "tokindex.invalid", "tokindex.internal",
        ] + SIGNER_ONLY,
        "exclude": ADMIN_TEXT,
        "classes": RUNTIME_SET,
    },
    {
        "name": "admin",
        "columns": ("reason", "gRPC status", "meaning"),
        "include": ["admin.*", "keystate.*", "audit.rotate", "audit.rotate_pending", "control.io",
                    "tokindex.revocations_full"]
        + ADMIN_TEXT,
        "exclude": ["admin.frozen"] + SIGNER_ONLY,
        "classes": RUNTIME_SET,
    },
    {
        "name": "startup",
        "columns": ("reason", "meaning"),
        # every configuration-class row, and the start-up steps that fail with
        # another status (threads, descriptors, self-tests of the keys)
        "include": ["*"],
        "exclude": EXCLUDED,
        "classes": {"JS_C_CONFIG"},
        "also": {
            "patterns": [
                "fd.*", "server.*", "audit.thread", "health.thread", "denials.*", "rate.config",
                "metrics.invalid", "http.invalid", "keyring.*", "jwk.*", "jws.*",
                "identity.buffer",
            ],
            "classes": NOT_RECORD,
        },
    },
    {
        "name": "verifier",
        "columns": ("reason", "meaning"),
        "include": ["audit.*", "merkle.*", "b64url.*", "duration.*"],
        "exclude": EXCLUDED + [
            "audit.config", "audit.rotate", "audit.rotate_pending", "audit.event",
            "audit.record_too_large", "audit.unavailable", "audit.thread",
        ],
        "classes": {"JS_C_INVALID", "JS_C_NOTFOUND", "JS_C_LIMIT"},
    },
    {
        "name": "records",
        "columns": ("reason", "meaning"),
        "include": ["*"],
        "exclude": [],
        "classes": {"JS_C_RECORD"},
    },
]

ROW = re.compile(r'^JS_REASON\((\w+), "((?:[^"\\]|\\.)*)", ([A-Z_|]+), "((?:[^"\\]|\\.)*)"\)\s*$')


def unescape(s):
    return re.sub(r"\\(.)", r"\1", s)


def load(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.startswith("JS_REASON("):
                continue
            m = ROW.match(line)
            if m is None:
                sys.exit(f"{path}:{n}: cannot parse this row")
            ident, name, classes, meaning = m.groups()
            cls = set(classes.split("|"))
            if "JS_C_ANY" in cls:
                cls = set(ALL_CLASSES)
            unknown = cls - ALL_CLASSES
            if unknown:
                sys.exit(f"{path}:{n}: unknown class {sorted(unknown)}")
            rows.append((ident, unescape(name), cls, unescape(meaning)))
    if not rows:
        sys.exit(f"{path}: no JS_REASON rows")
    return rows


def matches(name, patterns):
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def members(group, rows):
    out = []
    for row in rows:
        _, name, cls, _ = row
        if matches(name, group["exclude"]):
            continue
        shown = matches(name, group["include"]) and cls & group["classes"]
        also = group.get("also")
        if not shown and also is not None:
            shown = matches(name, also["patterns"]) and cls & also["classes"]
        if shown:
            out.append(row)
    return out


def cell(s):
    # a table cell: no column break, no emphasis from a '*' in a pattern
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*")


def table(group, rows):
    cols = group["columns"]
    lines = [
        f"<!-- generated by scripts/gen-reasons.py from lib/base/reasons.def: edit the table there -->",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for _, name, cls, meaning in members(group, rows):
        if len(cols) == 3:
            status = " / ".join(g for c, g in RUNTIME if c in cls)
            lines.append(f"| `{name}` | {status} | {cell(meaning)} |")
        else:
            lines.append(f"| `{name}` | {cell(meaning)} |")
    return "\n".join(lines)


def unplaced(rows):
    placed = set()
    for g in GROUPS:
        placed.update(r[1] for r in members(g, rows))
    return [r[1] for r in rows if r[1] not in placed and not matches(r[1], EXCLUDED)]


def render(text, rows, path):
    for g in GROUPS:
        begin = f"<!-- reasons:{g['name']}:begin -->"
        end = f"<!-- reasons:{g['name']}:end -->"
        i, j = text.find(begin), text.find(end)
        if i < 0 or j < i or text.count(begin) != 1 or text.count(end) != 1:
            sys.exit(f"{path}: needs exactly one {begin} ... {end} block")
        text = text[: i + len(begin)] + "\n" + table(g, rows) + "\n" + text[j:]
    return text


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--def", dest="deffile", default=DEFAULT_DEF, help="reasons.def to read")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", metavar="README", help="fail if README's tables are stale")
    mode.add_argument("--write", metavar="README", help="rewrite README's tables in place")
    a = ap.parse_args()

    rows = load(a.deffile)
    names = [r[1] for r in rows]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        sys.exit(f"{a.deffile}: duplicate reason names {dup}")
    lost = unplaced(rows)
    if lost:
        sys.exit(
            f"{a.deffile}: rows in no README group: {', '.join(lost)}\n"
            "  (place them in GROUPS in scripts/gen-reasons.py)"
        )

    readme = a.check or a.write
    if readme is None:
        for g in GROUPS:
            print(f"<!-- reasons:{g['name']} -->\n{table(g, rows)}\n")
        return 0
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    new = render(text, rows, readme)
    if a.write:
        if new != text:
            tmp = readme + ".gen-reasons.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(new)
            os.replace(tmp, readme)
        return 0
    if new != text:
        print(
            f"{readme}: the reason tables differ from {a.deffile};\n"
            f"  run: python3 scripts/gen-reasons.py --write {readme}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
