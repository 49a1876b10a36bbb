#!/usr/bin/env python3
"""gen_alerts_test.py - writes deploy/prometheus/alerts_test.yml (the promtool
unit tests of alerts.yml) from the test cases below: input series, eval
times, the alerts expected with their labels and the value each annotation
template shows; the expected annotations are rendered from alerts.yml's own
templates, so after changing an annotation only the value strings here need
a look. A developer's aid, not run by ctest (needs python3-yaml):
  python3 deploy/tools/gen_alerts_test.py && promtool test rules deploy/prometheus/alerts_test.yml
"""
import os
import re

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
rules = {}
for g in yaml.safe_load(open(os.path.join(ROOT, 'deploy/prometheus/alerts.yml')))['groups']:
    for r in g['rules']:
        if 'alert' in r:
            rules[r['alert']] = r
J = {'job': 'jwt-signer', 'instance': 's1:8080'}
def S(name, labels, values):
    l = dict(J); l.update(labels)
    ls = ','.join(f'{k}="{v}"' for k, v in l.items())
    return {'series': f'{name}{{{ls}}}', 'values': values}
def render(t, labels, value):
    def sub(m):
        e = m.group(1).strip()
        if e.startswith('$labels.'):
            return labels[e[8:]]
        if e.startswith('$value'):
            assert value is not None, t
            return value
        raise Exception(e)
    return re.sub(r'\{\{(.*?)\}\}', sub, t)
def A(alert, labels, value=None):
    r = rules[alert]
    l = dict(labels); l['severity'] = r['labels']['severity']
    ann = {k: render(v, l, value) for k, v in r['annotations'].items()}
    return {'exp_labels': l, 'exp_annotations': ann}
def T(name, series, checks):
    return {'name': name, 'interval': '1m', 'input_series': series,
            'alert_rule_test': [{'eval_time': t, 'alertname': a, 'exp_alerts': exp} for t, a, exp in checks]}
tests = []
JI = dict(J)
JOB = {'job': 'jwt-signer'}
R = 'jwt_signer_requests_total'
def req(method, caller, decision, reason, values):
    return S(R, {'method': method, 'caller': caller, 'decision': decision, 'reason': reason}, values)
A1 = 'spiffe://example.org/login'
A2 = 'spiffe://example.org/billing'
# ---- key leak / probe
tests.append(T('probe denials over 1% of requests: page', [
    req('SignJwt', A1, 'allow', 'ok', '0+100x20'),
    req('SignJwt', 'spiffe://evil.example/x', 'deny', 'policy.no_match', '0+5x20')],
    [('3m', 'JwtSignerProbeDenialRatioHigh', []),
     ('15m', 'JwtSignerProbeDenialRatioHigh', [A('JwtSignerProbeDenialRatioHigh', JOB, '4.762%')])]))
tests.append(T('probe denials under 1%, or too few: no alert', [
    req('SignJwt', A1, 'allow', 'ok', '0+1000x20'),
    req('SignJwt', A1, 'deny', 'claims.reserved', '0+5x20'),
    S(R, {'method': 'SignJwt', 'caller': A2, 'decision': 'deny', 'reason': 'identity.invalid', 'job': 'other-signer'}, '0+1x20'),
    S(R, {'method': 'SignJwt', 'caller': A2, 'decision': 'allow', 'reason': 'ok', 'job': 'other-signer'}, '0+1x20'),
    req('SignJwt', A1, 'deny', 'rate.limited', '0+500x20'),
    req('Admin/ReloadPolicy', 'spiffe://example.org/ops/admin', 'deny', 'policy.yaml_syntax', '0+100x20')],
    [('15m', 'JwtSignerProbeDenialRatioHigh', [])]))
tests.append(T('probe denials at 20x their daily average: ticket', [
    req('SignJwt', A1, 'allow', 'ok', '0+10000x1530'),
    req('SignJwt', A1, 'deny', 'policy.audience', '0+1x1500 1520+20x30')],
    [('1499m', 'JwtSignerProbeDenialsAboveBaseline', []),
     ('1525m', 'JwtSignerProbeDenialsAboveBaseline', [A('JwtSignerProbeDenialsAboveBaseline', JOB, '333.3m')]),
     ('1525m', 'JwtSignerProbeDenialRatioHigh', [])]))
tests.append(T('probe denials at 3x their daily average: no alert', [
    req('SignJwt', A1, 'allow', 'ok', '0+10000x1530'),
    req('SignJwt', A1, 'deny', 'policy.audience', '0+1x1500 1503+3x30')],
    [('1525m', 'JwtSignerProbeDenialsAboveBaseline', [])]))
tests.append(T('new caller identity: ticket for 10 minutes, never on the first deployment', [
    req('SignJwt', A1, 'allow', 'ok', '0+1x100'),
    req('SignJwt', A2, 'deny', 'policy.no_match', '_x60 1+1x40')],
    [('5m', 'JwtSignerNewCallerIdentity', []),
     ('59m', 'JwtSignerNewCallerIdentity', []),
     ('65m', 'JwtSignerNewCallerIdentity', [A('JwtSignerNewCallerIdentity', {'job': 'jwt-signer', 'caller': A2})]),
     ('80m', 'JwtSignerNewCallerIdentity', [])]))
tests.append(T('admin call from a non-admin: page, first call and later ones', [
    req('Admin/GetStatus', A1, 'deny', 'admin.not_admin', '_x10 1x30'),
    req('Admin/RevokeKey', A2, 'deny', 'admin.not_admin', '2x20 3x20'),
    req('Admin/GetStatus', 'spiffe://example.org/ops/admin', 'allow', 'ok', '0+1x40')],
    [('12m', 'JwtSignerAdminCallFromNonAdmin', [A('JwtSignerAdminCallFromNonAdmin', {'job': 'jwt-signer', 'caller': A1})]),
     ('22m', 'JwtSignerAdminCallFromNonAdmin', [A('JwtSignerAdminCallFromNonAdmin', {'job': 'jwt-signer', 'caller': A2})]),
     ('35m', 'JwtSignerAdminCallFromNonAdmin', [])]))
tests.append(T('introspection of a forged token: page', [
    S(R, {'method': 'Introspect', 'caller': A2, 'decision': 'allow', 'reason': 'unknown_jti'}, '_x10 1x30'),
    S(R, {'method': 'POST /introspect', 'caller': A1, 'decision': 'allow', 'reason': 'hash_mismatch'}, '1x20 2x20'),
    S(R, {'method': 'Introspect', 'caller': A2, 'decision': 'allow', 'reason': 'expired'}, '0+50x40'),
    S(R, {'method': 'Introspect', 'caller': A2, 'decision': 'allow', 'reason': 'active'}, '0+500x40')],
    [('5m', 'JwtSignerForgedTokenIntrospected', []),
     ('12m', 'JwtSignerForgedTokenIntrospected', [A('JwtSignerForgedTokenIntrospected', {'job': 'jwt-signer', 'method': 'Introspect', 'caller': A2, 'reason': 'unknown_jti'})]),
     ('22m', 'JwtSignerForgedTokenIntrospected', [A('JwtSignerForgedTokenIntrospected', {'job': 'jwt-signer', 'method': 'POST /introspect', 'caller': A1, 'reason': 'hash_mismatch'})]),
     ('35m', 'JwtSignerForgedTokenIntrospected', [])]))
tests.append(T('denials folded beyond the budget: ticket over 1/s', [
    S('jwt_signer_denials_folded_total', {}, '0+120x30'),
    S('jwt_signer_denials_folded_total', {'instance': 's2:8080'}, '0+30x30')],
    [('25m', 'JwtSignerDenialsFolded', [A('JwtSignerDenialsFolded', JOB, '2.5')])]))
# ---- containment
tests.append(T('incident mode on: info at once, ticket after 12 hours', [
    S('jwt_signer_incident_mode', {}, '0x5 1x800'),
    S('jwt_signer_incident_mode', {'instance': 's2:8080'}, '0x800')],
    [('3m', 'JwtSignerIncidentModeOn', []),
     ('10m', 'JwtSignerIncidentModeOn', [A('JwtSignerIncidentModeOn', JI)]),
     ('10m', 'JwtSignerIncidentModeLeftOn', []),
     ('730m', 'JwtSignerIncidentModeLeftOn', [A('JwtSignerIncidentModeLeftOn', JI)])]))
tests.append(T('callers frozen: info while any is frozen, across a restart', [
    S('jwt_signer_frozen_callers', {}, '0x5 1x10 2x5 _ 2x5 0x5'),
    S('jwt_signer_frozen_callers', {'instance': 's2:8080'}, '0x32')],
    [('3m', 'JwtSignerCallerFrozen', []),
     ('10m', 'JwtSignerCallerFrozen', [A('JwtSignerCallerFrozen', JI, '1')]),
     ('18m', 'JwtSignerCallerFrozen', [A('JwtSignerCallerFrozen', JI, '2')]),
     ('25m', 'JwtSignerCallerFrozen', [A('JwtSignerCallerFrozen', JI, '2')]),
     ('30m', 'JwtSignerCallerFrozen', [])]))
tests.append(T('caller frozen by an administrator: info, names the administrator', [
    req('Admin/FreezeCaller', 'spiffe://example.org/ops/admin', 'allow', 'ok', '_x10 1x30'),
    req('Admin/FreezeCaller', A1, 'deny', 'admin.not_admin', '_x10 1x30')],
    [('5m', 'JwtSignerCallerFrozenByAdmin', []),
     ('12m', 'JwtSignerCallerFrozenByAdmin', [A('JwtSignerCallerFrozenByAdmin', {'job': 'jwt-signer', 'caller': 'spiffe://example.org/ops/admin'})]),
     ('30m', 'JwtSignerCallerFrozenByAdmin', [])]))
tests.append(T('a frozen caller still calling: ticket', [
    req('SignJwt', A1, 'deny', 'admin.frozen', '0+2x30'),
    req('SignJwt', A2, 'deny', 'policy.frozen', '5x30')],
    [('20m', 'JwtSignerFrozenCallerActive', [A('JwtSignerFrozenCallerActive', {'job': 'jwt-signer', 'caller': A1, 'reason': 'admin.frozen'})])]))
tests.append(T('a key version revoked: ticket for an hour', [
    S('jwt_signer_key_versions', {'state': 'revoked'}, '0x60 1x120'),
    S('jwt_signer_key_versions', {'state': 'revoked', 'instance': 's2:8080'}, '2x180')],
    [('50m', 'JwtSignerKeyRevoked', []),
     ('70m', 'JwtSignerKeyRevoked', [A('JwtSignerKeyRevoked', JI, '1')]),
     ('125m', 'JwtSignerKeyRevoked', [])]))
tests.append(T('calls refused for want of an active key version: page', [
    req('SignJwt', A1, 'error', 'key.no_active', '_x10 1+1x30'),
    req('SignJwt', A2, 'allow', 'ok', '0+1x40')],
    [('5m', 'JwtSignerKeyNoActiveVersion', []),
     ('12m', 'JwtSignerKeyNoActiveVersion', [A('JwtSignerKeyNoActiveVersion', {'job': 'jwt-signer', 'method': 'SignJwt', 'caller': A1})])]))
tests.append(T('no active key version at all: page', [
    S('jwt_signer_key_versions', {'state': 'active'}, '1x5 0x10'),
    S('jwt_signer_key_versions', {'state': 'active', 'instance': 's2:8080'}, '2x15')],
    [('4m', 'JwtSignerNoActiveKeyVersions', []),
     ('10m', 'JwtSignerNoActiveKeyVersions', [A('JwtSignerNoActiveKeyVersions', JI)])]))
tests.append(T('a rotation pending for 30 minutes: ticket', [
    S('jwt_signer_key_versions', {'state': 'next'}, '1x40'),
    S('jwt_signer_key_versions', {'state': 'next', 'instance': 's2:8080'}, '1x10 0 1x10 0 1x20')],
    [('20m', 'JwtSignerRotationPendingTooLong', []),
     ('35m', 'JwtSignerRotationPendingTooLong', [A('JwtSignerRotationPendingTooLong', {'job': 'jwt-signer', 'instance': 's1:8080', 'state': 'next'})])]))
# ---- health
tests.append(T('signer down: page after a minute', [
    S('up', {}, '1x3 0x10'), S('up', {'instance': 's2:8080'}, '1x13')],
    [('3m', 'JwtSignerDown', []),
     ('6m', 'JwtSignerDown', [A('JwtSignerDown', JI)])]))
tests.append(T('no scrape target: page after 5 minutes', [
    S('up', {'job': 'node'}, '1x10')],
    [('3m', 'JwtSignerTargetMissing', []),
     ('8m', 'JwtSignerTargetMissing', [A('JwtSignerTargetMissing', JOB)])]))
tests.append(T('audit unhealthy: page', [
    S('jwt_signer_audit_healthy', {}, '1x2 0x10'), S('jwt_signer_audit_healthy', {'instance': 's2:8080'}, '1x12')],
    [('2m', 'JwtSignerAuditUnhealthy', []),
     ('5m', 'JwtSignerAuditUnhealthy', [A('JwtSignerAuditUnhealthy', JI)])]))
F = 'jwt_signer_audit_fsync_seconds_bucket'
tests.append(T('audit fsync p99 above 25 ms: ticket', [
    S(F, {'le': '0.001'}, '0x30'), S(F, {'le': '0.025'}, '0x30'), S(F, {'le': '0.05'}, '0+60x30'), S(F, {'le': '+Inf'}, '0+60x30'),
    S(F, {'le': '0.001', 'instance': 's2:8080'}, '0+60x30'), S(F, {'le': '0.025', 'instance': 's2:8080'}, '0+60x30'),
    S(F, {'le': '0.05', 'instance': 's2:8080'}, '0+60x30'), S(F, {'le': '+Inf', 'instance': 's2:8080'}, '0+60x30')],
    [('20m', 'JwtSignerAuditFsyncSlow', [A('JwtSignerAuditFsyncSlow', JI, '49.75ms')])]))
tests.append(T('audit records lost: ticket', [
    S('jwt_signer_audit_records_lost_total', {}, '0x10 3x30'),
    S('jwt_signer_audit_records_lost_total', {'instance': 's2:8080'}, '7x40')],
    [('5m', 'JwtSignerAuditRecordsLost', []),
     ('15m', 'JwtSignerAuditRecordsLost', [A('JwtSignerAuditRecordsLost', JI, '3')]),
     ('35m', 'JwtSignerAuditRecordsLost', [])]))
tests.append(T('audit disk under its watermark: ticket', [
    S('jwt_signer_audit_disk_low', {}, '0x2 1x10'), S('jwt_signer_audit_disk_low', {'instance': 's2:8080'}, '0x12')],
    [('4m', 'JwtSignerAuditDiskLow', []),
     ('10m', 'JwtSignerAuditDiskLow', [A('JwtSignerAuditDiskLow', JI)])]))
tests.append(T('audit disk full within 4 hours: page', [
    S('jwt_signer_audit_disk_free_bytes', {}, '1000000000-10000000x95'),
    S('jwt_signer_audit_disk_low', {}, '1x120'),
    S('jwt_signer_audit_disk_free_bytes', {'instance': 's2:8080'}, '1000000000-10000000x95'),
    S('jwt_signer_audit_disk_low', {'instance': 's2:8080'}, '0x120'),
    S('jwt_signer_audit_disk_free_bytes', {'instance': 's3:8080'}, '1000000000-10000x120'),
    S('jwt_signer_audit_disk_low', {'instance': 's3:8080'}, '1x120')],
    [('10m', 'JwtSignerAuditDiskFillingUp', []),
     ('60m', 'JwtSignerAuditDiskFillingUp', [A('JwtSignerAuditDiskFillingUp', JI)])]))
# The gauge is Unix seconds; promtool's time() counts from 0 at the test's
# start, so a value of 60*i at minute i is a checkpoint made just now. s4
# lags 2 minutes (a long heartbeat seen through a slow scrape): no alert.
CP = 'jwt_signer_audit_last_checkpoint_timestamp_seconds'
tests.append(T('no audit checkpoint for over 3 minutes: page; not for a signer that cannot be scraped', [
    S(CP, {}, '0+60x10 600x20'),
    S(CP, {'instance': 's2:8080'}, '0+60x30'),
    S(CP, {'instance': 's3:8080'}, '0+60x10 stale'),
    S(CP, {'instance': 's4:8080'}, '0+60x10 540+60x20')],
    [('12m', 'JwtSignerCheckpointStalled', []),
     ('13m', 'JwtSignerCheckpointStalled', []),
     ('14m', 'JwtSignerCheckpointStalled', [A('JwtSignerCheckpointStalled', JI, '4m 0s')]),
     ('20m', 'JwtSignerCheckpointStalled', [A('JwtSignerCheckpointStalled', JI, '10m 0s')])]))
tests.append(T('HSM unhealthy: page after a minute', [
    S('jwt_signer_hsm_healthy', {}, '1x2 0x10'), S('jwt_signer_hsm_healthy', {'instance': 's2:8080'}, '1 0 1x10')],
    [('2m', 'JwtSignerHsmUnhealthy', []),
     ('6m', 'JwtSignerHsmUnhealthy', [A('JwtSignerHsmUnhealthy', JI)])]))
tests.append(T('HSM errors over 1% of signing calls: page', [
    req('SignJwt', A1, 'allow', 'ok', '0+95x20'),
    req('SignJwt', A1, 'error', 'hsm.sign', '0+5x20'),
    S('jwt_signer_hsm_errors_total', {}, '0+5x20'),
    S(R, {'method': 'SignJwt', 'caller': A1, 'decision': 'allow', 'reason': 'ok', 'instance': 's2:8080'}, '0+1000x20'),
    S('jwt_signer_hsm_errors_total', {'instance': 's2:8080'}, '0+5x20')],
    [('15m', 'JwtSignerHsmErrorRate', [A('JwtSignerHsmErrorRate', JI, '5%')])]))
tests.append(T('HSM sessions lost repeatedly: ticket', [
    S('jwt_signer_hsm_session_failures_total', {}, '0+1x20'),
    S('jwt_signer_hsm_session_failures_total', {'instance': 's2:8080'}, '0x10 1x10')],
    [('15m', 'JwtSignerHsmSessionsFlapping', [A('JwtSignerHsmSessionsFlapping', JI, '15')])]))
# ---- capacity
tests.append(T('a caller rate-limited on over 5% of its calls: ticket', [
    req('SignJwt', A1, 'allow', 'ok', '0+90x30'),
    req('SignJwt', A1, 'deny', 'rate.limited', '0+10x30'),
    S('jwt_signer_rate_limited_total', {'caller': A1}, '0+10x30'),
    req('ExternalJWTSigner.Sign', A2, 'allow', 'ok', '0+99x30'),
    req('ExternalJWTSigner.Sign', A2, 'deny', 'rate.limited', '0+1x30'),
    S('jwt_signer_rate_limited_total', {'caller': A2}, '0+1x30')],
    [('20m', 'JwtSignerCallerRateLimited', [A('JwtSignerCallerRateLimited', {'job': 'jwt-signer', 'caller': A1}, '10%')])]))
L = 'jwt_signer_sign_latency_seconds_bucket'
C = 'jwt_signer_sign_latency_seconds_count'
def lat(inst, b1, b2, b5, inf):
    x = {'instance': inst}
    return [S(L, dict(x, le='0.001'), b1), S(L, dict(x, le='0.002'), b2), S(L, dict(x, le='0.005'), b5),
            S(L, dict(x, le='+Inf'), inf), S(C, x, inf)]
tests.append(T('p99 sign latency over 2 ms: ticket; not for a few calls', 
    lat('s1:8080', '0+3000x30', '0+5000x30', '0+6000x30', '0+6000x30') +
    lat('s2:8080', '0+6000x30', '0+6000x30', '0+6000x30', '0+6000x30') +
    lat('s3:8080', '0x30', '0x30', '0+10x30', '0+10x30'),
    [('10m', 'JwtSignerSignLatencyHigh', []),
     ('25m', 'JwtSignerSignLatencyHigh', [A('JwtSignerSignLatencyHigh', JI, '4.82ms')])]))
tests.append(T('descriptors near the limit: ticket', [
    S('jwt_signer_open_fds', {}, '900x10'), S('jwt_signer_fd_limit', {}, '1024x10'),
    S('jwt_signer_open_fds', {'instance': 's2:8080'}, '100x10'), S('jwt_signer_fd_limit', {'instance': 's2:8080'}, '1024x10')],
    [('8m', 'JwtSignerFdsNearLimit', [A('JwtSignerFdsNearLimit', JI, '87.89%')])]))
tests.append(T('gRPC listener re-created: ticket', [
    S('jwt_signer_grpc_listener_recreations_total', {}, '0x10 1x30'),
    S('jwt_signer_grpc_listener_recreations_total', {'instance': 's2:8080'}, '0x40')],
    [('15m', 'JwtSignerGrpcListenerRecreated', [A('JwtSignerGrpcListenerRecreated', JI)])]))
# every alert has a test
tested = {c['alertname'] for t in tests for c in t['alert_rule_test'] if c['exp_alerts']}
assert tested == set(rules), set(rules) - tested
head = '''# deploy/prometheus/alerts_test.yml - promtool unit tests for alerts.yml:
#   promtool test rules deploy/prometheus/alerts_test.yml   (ctest deploy.alerts)
# Every alert fires in at least one test; thresholds and ratios also have a
# case that must not fire (a second instance, job or caller below the
# threshold, or an eval_time before `for:` has passed). Series values use
# promtool's expanding notation: a+bxN is a, a+b, ... (N+1 samples), _ is a
# missing sample; one sample a minute.
'''
out = {'rule_files': ['alerts.yml'], 'evaluation_interval': '1m', 'tests': tests}
class D(yaml.SafeDumper):
    pass
open(os.path.join(ROOT, 'deploy/prometheus/alerts_test.yml'), 'w').write(head + yaml.dump(out, Dumper=D, sort_keys=False, width=120, allow_unicode=True))
