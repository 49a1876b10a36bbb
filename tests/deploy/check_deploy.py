#!/usr/bin/env python3
"""check_deploy.py - structural checks of the shipped monitoring files.

  check_deploy.py rules SOURCE_DIR      deploy/prometheus/alerts.yml
  check_deploy.py dashboard SOURCE_DIR  deploy/grafana/jwt-signer.json
  check_deploy.py exprs SOURCE_DIR OUT  writes the dashboard's queries as a
                                        rules file for `promtool check rules`

Only the standard library (no YAML module): the rules file is read line by
line, which its fixed layout allows. The metric names a file may use are the
ones jwt-signerd renders (string literals "jwt_signer_..." in
signer/core/metrics.c, histograms with _bucket/_sum/_count) and `up`.
"""
import json
import re
import sys

SEVERITIES = {"page", "ticket", "info"}
RUNBOOK_BASE = "https://github.com/example/jwt-signer#"
HIST_SUFFIXES = ("_bucket", "_sum", "_count")

failures = []


def fail(msg):
    failures.append(msg)


def exported_metrics(src):
    text = open(f"{src}/signer/core/metrics.c", encoding="utf-8").read()
    names = set(re.findall(r'"(jwt_signer_[a-z0-9_]+)', text))
    hists = set(re.findall(r'render_histogram\(&?b, "(jwt_signer_[a-z0-9_]+)"', text))
    if not names or not hists:
        fail("found no metric names in signer/core/metrics.c")
    for h in hists:
        names.update(h + s for s in HIST_SUFFIXES)
    return names


def readme_anchors(src):
    """GitHub's heading anchors: lower case, punctuation but '-' and '_'
    dropped, spaces to '-'; headings inside code fences do not count."""
    anchors = set()
    fenced = False
    for line in open(f"{src}/README.md", encoding="utf-8"):
        if line.startswith("```"):
            fenced = not fenced
            continue
        m = re.match(r"^#{1,6} +(.*?)\s*$", line)
        if m and not fenced:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


def check_metric_names(where, expr, names):
    for m in re.findall(r"\b(jwt_signer_[a-z0-9_]+)", expr):
        if m not in names:
            fail(f"{where}: metric {m} is not exported by jwt-signerd (signer/core/metrics.c)")
    # any other metric-looking identifier followed by a selector or range
    for m in re.findall(r"\b([a-zA-Z_][a-zA-Z0-9_:]*)\s*\{", expr):
        if not (m.startswith("jwt_signer_") or m.startswith("jwt_signer:") or m == "up"
                or m in ("by", "without", "on", "ignoring", "group_left", "group_right")):
            fail(f"{where}: {m} is neither a jwt_signer_ metric nor up")


def check_rules(src):
    names = exported_metrics(src)
    anchors = readme_anchors(src)
    lines = open(f"{src}/deploy/prometheus/alerts.yml", encoding="utf-8").read().split("\n")
    blocks, cur = [], None
    for line in lines:
        m = re.match(r"^\s*- (alert|record): *(\S+)", line)
        if m:
            cur = {"kind": m.group(1), "name": m.group(2), "lines": []}
            blocks.append(cur)
        elif re.match(r"^\s*- name:", line):
            cur = None
        elif cur is not None:
            cur["lines"].append(line)
    alerts = [b for b in blocks if b["kind"] == "alert"]
    if len(alerts) < 20:
        fail(f"only {len(alerts)} alerts found")
    seen = set()
    for b in blocks:
        body = "\n".join(b["lines"])
        where = f'{b["kind"]} {b["name"]}'
        if b["name"] in seen:
            fail(f"{where}: defined twice")
        seen.add(b["name"])
        expr = body.split("labels:")[0] if "labels:" in body else body
        check_metric_names(where, expr, names)
        if b["kind"] != "alert":
            continue
        sev = re.search(r"^\s+severity: *(\S+)", body, re.M)
        if not sev or sev.group(1) not in SEVERITIES:
            fail(f"{where}: labels.severity must be one of {sorted(SEVERITIES)}")
        for key in ("summary", "description", "runbook_url"):
            if not re.search(rf"^\s+{key}:", body, re.M):
                fail(f"{where}: no annotations.{key}")
        rb = re.search(r"^\s+runbook_url: *(\S+)", body, re.M)
        if rb:
            url = rb.group(1)
            if not url.startswith(RUNBOOK_BASE):
                fail(f"{where}: runbook_url {url} does not start with {RUNBOOK_BASE}")
            elif url[len(RUNBOOK_BASE):] not in anchors:
                fail(f"{where}: runbook_url anchor #{url[len(RUNBOOK_BASE):]} is no README heading")
    # every alert is exercised by the promtool tests
    tests = open(f"{src}/deploy/prometheus/alerts_test.yml", encoding="utf-8").read()
    for a in alerts:
        if not re.search(rf"alertname: {a['name']}\n\s+exp_alerts:\n\s+- exp_labels", tests):
            fail(f"alert {a['name']}: no promtool test in which it fires")
    print(f"rules: {len(alerts)} alerts, {len(blocks) - len(alerts)} recording rules checked")


def dashboard_targets(dash):
    def walk(panels):
        for p in panels:
            yield p
            yield from walk(p.get("panels", []))
    for p in walk(dash.get("panels", [])):
        for t in p.get("targets", []):
            yield p, t


def check_dashboard(src):
    names = exported_metrics(src)
    with open(f"{src}/deploy/grafana/jwt-signer.json", encoding="utf-8") as f:
        dash = json.load(f)
    if not dash.get("title") or not dash.get("uid"):
        fail("dashboard: no title or uid")
    variables = dash.get("templating", {}).get("list", [])
    ds = [v for v in variables if v.get("type") == "datasource" and v.get("query") == "prometheus"]
    if len(ds) != 1:
        fail("dashboard: needs exactly one Prometheus datasource variable")
    ds_ref = "${%s}" % ds[0]["name"] if ds else None
    for v in variables:
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v.get("query"), dict) else v.get("query", "")
            check_metric_names(f"variable {v.get('name')}", q, names)
    ids, titles, n = set(), set(), 0
    for p in dash.get("panels", []):
        if "id" not in p or p["id"] in ids:
            fail(f"panel {p.get('title')}: missing or duplicate id")
        ids.add(p.get("id"))
        g = p.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in "hwxy") or g["x"] + g["w"] > 24:
            fail(f"panel {p.get('title')}: bad gridPos {g}")
        if p.get("type") == "row":
            continue
        if not p.get("targets"):
            fail(f"panel {p.get('title')}: no targets")
        if p.get("datasource", {}).get("uid") != ds_ref:
            fail(f"panel {p.get('title')}: datasource is not the {ds_ref} variable")
        titles.add(p.get("title"))
    for p, t in dashboard_targets(dash):
        expr = t.get("expr", "")
        n += 1
        if not expr:
            fail(f"panel {p.get('title')}: target {t.get('refId')} has no expr")
        if not re.search(r"\b(jwt_signer_[a-z0-9_]+|up)\b", expr):
            fail(f"panel {p.get('title')}: {expr} uses no jwt_signer_ metric")
        check_metric_names(f"panel {p.get('title')}", expr, names)
    want = ["Requests by decision", "Denials and errors by reason", "Sign latency percentiles",
            "Sign latency histogram", "Audit fsync histogram", "Audit batch size",
            "Key versions by state", "Rate-limited requests by caller",
            "Introspection answers by reason"]
    for w in want:
        if w not in titles:
            fail(f"dashboard: no panel {w!r}")
    print(f"dashboard: {len(titles)} panels, {n} queries checked")


def write_exprs(src, out):
    """The dashboard's queries as recording rules, Grafana's variables
    replaced, so that promtool parses every one of them."""
    with open(f"{src}/deploy/grafana/jwt-signer.json", encoding="utf-8") as f:
        dash = json.load(f)
    subst = {"$__rate_interval": "5m", "$__interval": "1m", "$job": ".*", "$instance": ".*"}
    with open(out, "w", encoding="utf-8") as f:
        f.write("groups:\n  - name: dashboard\n    rules:\n")
        for i, (p, t) in enumerate(dashboard_targets(dash)):
            e = t["expr"]
            for k, v in subst.items():
                e = e.replace(k, v)
            f.write(f"      - record: dashboard:q{i}\n        expr: {json.dumps(e)}\n")


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("rules", "dashboard", "exprs"):
        sys.exit(__doc__)
    mode, src = sys.argv[1], sys.argv[2]
    if mode == "rules":
        check_rules(src)
    elif mode == "dashboard":
        check_dashboard(src)
    else:
        write_exprs(src, sys.argv[3])
    for f in failures:
        print("FAIL:", f, file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
