#!/usr/bin/env python3
"""gen_dashboard.py - writes deploy/grafana/jwt-signer.json, the Grafana
dashboard (a data source variable, job and instance variables, one row per
concern). Edit here and regenerate, or edit in Grafana and export; ctest
deploy.dashboard checks the JSON either way. Standard library only:
  python3 deploy/tools/gen_dashboard.py
"""
import os
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import json
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'job=~"$job",instance=~"$instance"'
panels = []
pid = [0]
y = [0]
def nid():
    pid[0] += 1
    return pid[0]
def row(title):
    panels.append({"type": "row", "title": title, "id": nid(), "collapsed": False,
                   "gridPos": {"h": 1, "w": 24, "x": 0, "y": y[0]}, "panels": []})
    y[0] += 1
x = [0]
def place(w, h):
    if x[0] + w > 24:
        x[0] = 0
        y[0] += h
    g = {"h": h, "w": w, "x": x[0], "y": y[0]}
    x[0] += w
    if x[0] >= 24:
        x[0] = 0
        y[0] += h
    return g
def endrow(h):
    if x[0] != 0:
        x[0] = 0
        y[0] += h
def tgt(expr, legend, ref, **kw):
    t = {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref}
    t.update(kw)
    return t
def ts(title, targets, unit="short", w=12, h=8, desc="", stack=False, thresholds=None):
    p = {"type": "timeseries", "title": title, "id": nid(), "datasource": DS, "description": desc,
         "gridPos": place(w, h), "targets": [tgt(e, l, chr(65 + i)) for i, (e, l) in enumerate(targets)],
         "fieldConfig": {"defaults": {"unit": unit, "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10,
                                                               "stacking": {"mode": "normal" if stack else "none", "group": "A"}}},
                         "overrides": []},
         "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
                     "tooltip": {"mode": "multi", "sort": "desc"}}}
    if thresholds:
        p["fieldConfig"]["defaults"]["thresholds"] = {"mode": "absolute", "steps": [{"color": "green", "value": None}, {"color": "red", "value": thresholds}]}
        p["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"] = {"mode": "line"}
    panels.append(p)
def stat(title, expr, legend="{{instance}}", w=4, h=4, mappings=None, red_at=None, green_at=None, unit="short", desc=""):
    steps = [{"color": "green", "value": None}]
    if red_at is not None:
        steps.append({"color": "red", "value": red_at})
    if green_at is not None:
        steps = [{"color": "red", "value": None}, {"color": "green", "value": green_at}]
    panels.append({"type": "stat", "title": title, "id": nid(), "datasource": DS, "description": desc, "gridPos": place(w, h),
                   "targets": [tgt(expr, legend, "A", instant=True)],
                   "fieldConfig": {"defaults": {"unit": unit, "mappings": mappings or [],
                                                "thresholds": {"mode": "absolute", "steps": steps}}, "overrides": []},
                   "options": {"colorMode": "background", "graphMode": "none", "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                               "textMode": "value_and_name", "orientation": "auto"}})
def heat(title, metric, w=12, h=8, desc=""):
    panels.append({"type": "heatmap", "title": title, "id": nid(), "datasource": DS, "description": desc, "gridPos": place(w, h),
                   "targets": [tgt(f'sum by (le) (increase({metric}_bucket{{{SEL}}}[$__rate_interval]))', "{{le}}", "A", format="heatmap")],
                   "options": {"calculate": False, "yAxis": {"unit": "s"}, "cellGap": 1, "color": {"mode": "scheme", "scheme": "Oranges"},
                               "tooltip": {"show": True, "yHistogram": True}},
                   "fieldConfig": {"defaults": {}, "overrides": []}})
def vmap(texts):
    return [{"type": "value", "options": {str(k): {"text": v} for k, v in texts.items()}}]
def q(p, metric, by="le"):
    return f'histogram_quantile({p}, sum by ({by}) (rate({metric}_bucket{{{SEL}}}[$__rate_interval])))'

R = f'jwt_signer_requests_total{{{SEL}}}'
row("Overview")
stat("Signer up", f'up{{{SEL}}}', mappings=vmap({0: "down", 1: "up"}), green_at=1)
stat("Audit log", f'jwt_signer_audit_healthy{{{SEL}}}', mappings=vmap({0: "unhealthy", 1: "ok"}), green_at=1)
stat("HSM", f'jwt_signer_hsm_healthy{{{SEL}}}', mappings=vmap({0: "unhealthy", 1: "ok"}), green_at=1)
stat("Incident mode", f'jwt_signer_incident_mode{{{SEL}}}', mappings=vmap({0: "off", 1: "ON"}), red_at=1)
stat("Frozen callers", f'jwt_signer_frozen_callers{{{SEL}}}', red_at=1,
     desc="Caller identities frozen at run time (Admin/FreezeCaller); alert JwtSignerCallerFrozen.")
stat("Audit checkpoint age", f'time() - jwt_signer_audit_last_checkpoint_timestamp_seconds{{{SEL}}}', unit="s", red_at=180,
     desc="Since the newest durable signed checkpoint (one every audit.heartbeat); alert JwtSignerCheckpointStalled over 3 minutes.")
stat("Audit disk", f'jwt_signer_audit_disk_low{{{SEL}}}', mappings=vmap({0: "ok", 1: "under watermark"}), red_at=1)
stat("Audit disk free", f'jwt_signer_audit_disk_free_bytes{{{SEL}}}', unit="bytes")
endrow(4)
row("Requests")
ts("Requests by decision", [(f'sum by (decision) (rate({R}[$__rate_interval]))', "{{decision}}")], unit="reqps", stack=True)
ts("Requests by method", [(f'sum by (method) (rate({R}[$__rate_interval]))', "{{method}}")], unit="reqps")
ts("Denials and errors by reason", [(f'sum by (reason) (rate(jwt_signer_requests_total{{{SEL},decision!="allow"}}[$__rate_interval]))', "{{reason}}")], unit="reqps")
ts("Denials by caller and reason (top 10)", [(f'topk(10, sum by (caller, reason) (rate(jwt_signer_requests_total{{{SEL},decision="deny"}}[$__rate_interval])))', "{{caller}} {{reason}}")], unit="reqps",
   desc="Who is refused and why: a leaked or stolen caller credential shows as policy.*, claims.reserved or identity.* denials from one caller.")
ts("Probe denials ratio (policy.*, claims.reserved, identity.*)",
   [(f'sum(rate(jwt_signer_requests_total{{{SEL},decision="deny",method!~"Admin/.+",reason=~"policy\\\\..+|claims\\\\.reserved|identity\\\\..+"}}[$__rate_interval])) / sum(rate({R}[$__rate_interval]))', "probe denials / requests")],
   unit="percentunit", thresholds=0.01, desc="Alert JwtSignerProbeDenialRatioHigh pages above 1% for 5 minutes.")
ts("Admin calls by caller and decision", [(f'sum by (method, caller, decision) (rate(jwt_signer_requests_total{{{SEL},method=~"Admin/.*"}}[$__rate_interval]))', "{{method}} {{caller}} {{decision}}")], unit="reqps")
ts("Denials folded beyond the denial budget", [(f'sum by (instance) (rate(jwt_signer_denials_folded_total{{{SEL}}}[$__rate_interval]))', "{{instance}}")], unit="reqps")
ts("Requests by caller (top 10)", [(f'topk(10, sum by (caller) (rate({R}[$__rate_interval])))', "{{caller}}")], unit="reqps")
row("Sign latency")
S = 'jwt_signer_sign_latency_seconds'
ts("Sign latency percentiles", [(q(0.5, S), "p50"), (q(0.9, S), "p90"), (q(0.99, S), "p99"), (q(0.999, S), "p99.9")], unit="s", thresholds=0.002,
   desc="Time to sign one token (allowed requests). SLO: p99 at most 2 ms (README Performance).")
heat("Sign latency histogram", S)
row("Audit log")
Fm = 'jwt_signer_audit_fsync_seconds'
B = 'jwt_signer_audit_batch_records'
ts("Audit fsync percentiles", [(q(0.5, Fm), "p50"), (q(0.99, Fm), "p99")], unit="s", thresholds=0.025)
heat("Audit fsync histogram", Fm)
ts("Audit batch size", [(q(0.5, B), "p50"), (q(0.99, B), "p99"),
                        (f'sum(rate({B}_sum{{{SEL}}}[$__rate_interval])) / sum(rate({B}_count{{{SEL}}}[$__rate_interval]))', "mean")], unit="short")
ts("Audit batches (commits) per second", [(f'sum by (instance) (rate({B}_count{{{SEL}}}[$__rate_interval]))', "{{instance}}")], unit="ops",
   desc="Every checkpoint, heartbeat ones included, is a batch: zero means the writer is stalled.")
ts("Audit checkpoint age", [(f'time() - jwt_signer_audit_last_checkpoint_timestamp_seconds{{{SEL}}}', "{{instance}}")], unit="s", thresholds=180,
   desc="Seconds since the newest durable signed checkpoint; a healthy writer seals one every audit.heartbeat (alert JwtSignerCheckpointStalled over 3 minutes).")
ts("Audit records lost", [(f'sum by (instance) (increase(jwt_signer_audit_records_lost_total{{{SEL}}}[$__rate_interval]))', "{{instance}}")])
ts("Audit disk free", [(f'jwt_signer_audit_disk_free_bytes{{{SEL}}}', "{{instance}}")], unit="bytes")
row("Keys and containment")
ts("Key versions by state", [(f'sum by (state) (jwt_signer_key_versions{{{SEL}}})', "{{state}}")], unit="short")
ts("Incident mode", [(f'jwt_signer_incident_mode{{{SEL}}}', "{{instance}}")], unit="short")
ts("Frozen callers", [(f'jwt_signer_frozen_callers{{{SEL}}}', "{{instance}}")], unit="short",
   desc="Caller identities frozen at run time (Admin/FreezeCaller; kept across restarts). The policy's frozen entries are not counted.")
ts("Frozen callers refused", [(f'sum by (caller, reason) (rate(jwt_signer_requests_total{{{SEL},reason=~"admin.frozen|policy.frozen"}}[$__rate_interval]))', "{{caller}} {{reason}}")], unit="reqps")
ts("Calls refused: no active key version", [(f'sum by (method, caller) (rate(jwt_signer_requests_total{{{SEL},reason=~"key.no_active|keystate.no_active"}}[$__rate_interval]))', "{{method}} {{caller}}")], unit="reqps")
row("Rate limiting")
ts("Rate-limited requests by caller", [(f'sum by (caller) (rate(jwt_signer_rate_limited_total{{{SEL}}}[$__rate_interval]))', "{{caller}}")], unit="reqps")
ts("Rate-limited share of signing calls by caller",
   [(f'sum by (caller) (rate(jwt_signer_rate_limited_total{{{SEL}}}[$__rate_interval])) / sum by (caller) (rate(jwt_signer_requests_total{{{SEL},method=~"SignJwt|ExternalJWTSigner.Sign"}}[$__rate_interval]))', "{{caller}}")],
   unit="percentunit", thresholds=0.05)
row("Introspection")
ts("Introspection answers by reason", [(f'sum by (reason) (rate(jwt_signer_requests_total{{{SEL},method=~"Introspect|POST /introspect"}}[$__rate_interval]))', "{{reason}}")], unit="reqps",
   desc="unknown_jti and hash_mismatch: a token signed with one of our keys that this signer never issued: a leaked signing key (alert JwtSignerForgedTokenIntrospected).")
ts("Forged tokens introspected (unknown_jti, hash_mismatch) by introspector",
   [(f'sum by (caller, reason) (increase(jwt_signer_requests_total{{{SEL},method=~"Introspect|POST /introspect",reason=~"unknown_jti|hash_mismatch"}}[$__rate_interval]))', "{{caller}} {{reason}}")])
row("HSM and descriptors")
ts("HSM errors and session faults", [(f'sum by (instance) (rate(jwt_signer_hsm_errors_total{{{SEL}}}[$__rate_interval]))', "errors {{instance}}"),
                                     (f'sum by (instance) (rate(jwt_signer_hsm_session_failures_total{{{SEL}}}[$__rate_interval]))', "sessions lost {{instance}}"),
                                     (f'sum by (instance) (rate(jwt_signer_hsm_recoveries_total{{{SEL}}}[$__rate_interval]))', "recoveries {{instance}}")], unit="ops")
ts("File descriptors", [(f'jwt_signer_open_fds{{{SEL}}}', "open {{instance}}"), (f'jwt_signer_fd_limit{{{SEL}}}', "limit {{instance}}"),
                        (f'increase(jwt_signer_grpc_listener_recreations_total{{{SEL}}}[$__rate_interval])', "listener re-created {{instance}}")])

dash = {
    "title": "jwt-signer", "uid": "jwt-signer", "tags": ["jwt-signer"], "timezone": "utc", "editable": True,
    "schemaVersion": 38, "version": 1, "refresh": "30s", "time": {"from": "now-6h", "to": "now"},
    "description": "jwt-signer: requests, denials, sign latency, audit log, keys, rate limiting, introspection, HSM (deploy/grafana/jwt-signer.json).",
    "links": [{"title": "Runbooks (README Incident playbooks)", "type": "link", "url": "https://github.com/example/jwt-signer#incident-playbooks", "targetBlank": True}],
    "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
                              "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"}]},
    "templating": {"list": [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus", "current": {}, "hide": 0, "refresh": 1, "regex": ""},
        {"name": "job", "label": "Job", "type": "query", "datasource": DS, "query": {"query": "label_values(jwt_signer_incident_mode, job)", "refId": "job"},
         "definition": "label_values(jwt_signer_incident_mode, job)", "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*", "current": {}, "sort": 1},
        {"name": "instance", "label": "Instance", "type": "query", "datasource": DS, "query": {"query": 'label_values(jwt_signer_incident_mode{job=~"$job"}, instance)', "refId": "instance"},
         "definition": 'label_values(jwt_signer_incident_mode{job=~"$job"}, instance)', "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*", "current": {}, "sort": 1},
    ]},
    "panels": panels,
}
with open(os.path.join(ROOT, 'deploy/grafana/jwt-signer.json'), 'w') as f:
    json.dump(dash, f, indent=2)
    f.write('\n')
