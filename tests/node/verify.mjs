// verify.mjs - independent verifiers for jwt-signer's integration tests, on
// npm's `jose` (v5) and `openid-client` (v5): code that shares nothing with
// the signer, as a Kubernetes or OIDC relying party in JavaScript would run it.
//
// Reads one JSON job from stdin, writes one JSON result to stdout, exits 0
// when the job ran (the verdicts are in the result) and 2 on a bad job.
//
//   {"op": "jwt", "token": T, "alg": A, "spki": PEM | null, "jwks": {...} | null,
//    "issuer": I, "audience": AUD}
//     -> {"spki": V, "jwks": V} with V = {"ok": true, "header": {...}, "payload": {...}}
//        or {"ok": false, "error": "...", "code": "..."}: jwtVerify with
//        importSPKI(PEM, A), and with createLocalJWKSet(JWKS); both require
//        the algorithm A, the issuer and the audience.
//
//   {"op": "discover", "url": DISCOVERY_URL, "token": T | null, "audience": AUD,
//    "alg": A}
//     -> {"metadata": {...}, "jwks_fetched": true, "id_token": V}: openid-client's
//        Issuer.discover(URL) (the library's own checks of the document), then
//        issuer.reloadJwksUri() (fetches jwks_uri through the library), then
//        a Client (client_id AUD, id_token_signed_response_alg A) validates T
//        as an ID token: signature with the key the library found by kid in
//        the discovered JWKS, iss, aud, iat, exp, sub.

import { createLocalJWKSet, decodeProtectedHeader, importSPKI, jwtVerify } from 'jose';
import { Issuer } from 'openid-client';

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

function failure(e) {
  return { ok: false, error: String(e && e.message ? e.message : e), code: e && e.code };
}

async function verifyWith(token, key, opts) {
  try {
    const { payload, protectedHeader } = await jwtVerify(token, key, opts);
    return { ok: true, header: protectedHeader, payload };
  } catch (e) {
    return failure(e);
  }
}

async function jwtJob(job) {
  const opts = { algorithms: [job.alg], issuer: job.issuer, audience: job.audience };
  const out = { header: decodeProtectedHeader(job.token) };
  if (job.spki) {
    let key;
    try {
      key = await importSPKI(job.spki, job.alg);
    } catch (e) {
      key = null;
      out.spki = failure(e);
    }
    if (key) out.spki = await verifyWith(job.token, key, opts);
  }
  if (job.jwks) out.jwks = await verifyWith(job.token, createLocalJWKSet(job.jwks), opts);
  return out;
}

async function discoverJob(job) {
  const issuer = await Issuer.discover(job.url);
  const out = { metadata: issuer.metadata };
  await issuer.reloadJwksUri();
  out.jwks_fetched = true;
  if (job.token) {
    try {
      const client = new issuer.Client({
        client_id: job.audience,
        token_endpoint_auth_method: 'none',
        id_token_signed_response_alg: job.alg,
        response_types: ['id_token'],
      });
      await client.validateIdToken(job.token);
      out.id_token = { ok: true, kid: decodeProtectedHeader(job.token).kid };
    } catch (e) {
      out.id_token = failure(e);
    }
  }
  return out;
}

async function main() {
  let job;
  try {
    job = await readStdin();
  } catch (e) {
    process.stderr.write(`verify.mjs: the job on stdin is not JSON: ${e.message}\n`);
    process.exit(2);
  }
  let result;
  if (job.op === 'jwt') result = await jwtJob(job);
  else if (job.op === 'discover') result = await discoverJob(job);
  else {
    process.stderr.write(`verify.mjs: unknown op ${JSON.stringify(job.op)}\n`);
    process.exit(2);
  }
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((e) => {
  process.stderr.write(`verify.mjs: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
