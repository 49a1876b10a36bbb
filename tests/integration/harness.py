"""harness.py - shared fixture for jwt-signer's integration tests.

Each test builds a private world in a temporary directory: a SoftHSM token
with a random PIN, the test PKI (scripts/mkpki.sh), a signer configuration,
keys made by `jwt-signerd keygen`, and a running `jwt-signerd` on an ephemeral
port whose JSON log lines (stderr) are collected in the background. Clients
are run as real processes (`jwt-sign`, `client_load`). Tokens are checked with
python3-cryptography only (verify_es256), never with our own code.

Typical use:

    with harness.Env() as env:
        env.setup()                      # token, PKI, policy.yaml, signer.yaml, keys
        env.start()
        rc, out, err = env.sign("issuer-a", env.sample_claims())
        rc, jwks, _ = env.jwks("issuer-a")
        header, payload = harness.verify_es256(out.strip(), jwks)
        assert env.stop() == 0

Programs come from the environment ctest sets: JS_SIGNERD, JS_SIGN,
JS_CLIENT_TEST, JS_SOURCE_DIR (run by hand, they default to the repo's build/).
JS_KEEP_TMP=1 keeps the temporary directory. JS_TIMEOUT_SCALE multiplies every
timeout (it defaults to 3 when ASAN_OPTIONS is set, i.e. in sanitizer builds).

Standard library and python3-cryptography only; run with /usr/bin/python3.
Every wait is bounded: nothing here can hang a test run.
"""

import atexit
import base64
import binascii
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

__all__ = [
    "Env", "Daemon", "HarnessError", "verify_es256", "jwk_thumbprint", "b64url_decode",
    "b64url_encode", "to_yaml", "timeout", "source_dir", "signerd_path", "sign_path",
    "client_test_path", "audit_path", "faultio_path", "softhsm_module", "CALLER_URIS", "CALLER_IDS",
    "InvalidSignature", "externaljwt_config", "unix_caller_id", "wait_unix_socket", "node_dir",
    "node_path", "npm_ci", "node_job",
]

# Identities of the callers scripts/mkpki.sh makes (see its header), in the
# typed text the signer uses everywhere (lib/base/identity.h): a URI SAN is the
# URI, a DNS SAN is "dns:" + name, a subject CN is "cn:" + CN. Policies name
# callers the same way. CALLER_IDS is the same table under a truer name.
CALLER_URIS = {
    "issuer-a": "spiffe://example.org/issuer-a",
    "intruder": "spiffe://example.org/intruder",
    "stranger": "spiffe://example.org/issuer-a",  # but signed by other-ca
    "dns-caller": "dns:svc.example.org",
    "cn-caller": "cn:cn-caller",
}
CALLER_IDS = CALLER_URIS

DEFAULT_KEY = {"name": "test-es256", "label": "jwt-signer-test-es256", "alg": "ES256"}
AUDIT_KEY_LABEL = "jwt-signer-test-audit"
SAMPLE_SUB = "3f0c6f1e-8c1a-4b7e-9d2a-5e6f7a8b9c0d"
SAMPLE_AUD = "https://api.example"
UUID_RE = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"

# The test policy (policy/examples/policy.yaml documents the format): callers
# inherit `defaults`; issuer-a is the one caller unless a test says otherwise.
DEFAULT_POLICY_DEFAULTS = {
    "keys": [DEFAULT_KEY["name"]],
    "default_key": DEFAULT_KEY["name"],
    "audiences": [SAMPLE_AUD, "https://other.example"],
    "max_aud": 3,
    "max_ttl": "1h",
    "default_ttl": "5m",
    "scope_claim": "scope",
    "scopes": ["read", "write"],
    "subject": UUID_RE,
    "subject_required": True,
    "claims": {"role": {"type": "string", "max_bytes": 64},
               "secret": {"type": "string", "max_bytes": 64},
               "pad": {"type": "string"}},
    "rate": {"per_second": 10000, "burst": 20000},
    "incident_rate": {"per_second": 10000, "burst": 20000},
}
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "WARNING: ThreadSanitizer", "ERROR: UndefinedBehaviorSanitizer")


class HarnessError(Exception):
    """The test environment could not do what was asked (not a test verdict)."""


# --- locations and timeouts --------------------------------------------------------

def _timeout_scale():
    raw = os.environ.get("JS_TIMEOUT_SCALE")
    if raw:
        try:
            value = float(raw)
        except ValueError:
            raise HarnessError("JS_TIMEOUT_SCALE must be a number, not %r" % raw) from None
        if not 0 < value <= 100:
            raise HarnessError("JS_TIMEOUT_SCALE must be in (0, 100], not %r" % raw)
        return value
    return 3.0 if os.environ.get("ASAN_OPTIONS") else 1.0


def timeout(seconds):
    """seconds scaled by JS_TIMEOUT_SCALE (slower sanitizer builds)."""
    return seconds * _timeout_scale()


def source_dir():
    return os.environ.get("JS_SOURCE_DIR") or os.path.dirname(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _program(var, name):
    path = os.path.abspath(os.environ.get(var) or os.path.join(source_dir(), "build", name))
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise HarnessError("%s: %s is not an executable (set %s or build first)" % (var, path, var))
    return path


def signerd_path():
    return _program("JS_SIGNERD", "jwt-signerd")


def sign_path():
    return _program("JS_SIGN", "jwt-sign")


def client_test_path():
    return _program("JS_CLIENT_TEST", os.path.join("tests", "client_load"))


def audit_path():
    """jwt-audit (ctest sets JS_AUDIT)."""
    return _program("JS_AUDIT", "jwt-audit")


def faultio_path():
    """The LD_PRELOAD fault-injection library (tests/integration/faultio.c)."""
    path = os.environ.get("JS_FAULTIO") or os.path.join(source_dir(), "build", "tests",
                                                        "libfaultio.so")
    if not os.path.isfile(path):
        raise HarnessError("JS_FAULTIO: %s not found (set JS_FAULTIO or build first)" % path)
    return os.path.abspath(path)


def softhsm_module():
    """Path of SoftHSM's PKCS#11 module, found through dpkg as the package put it."""
    try:
        out = subprocess.run(["dpkg", "-L", "libsofthsm2"], capture_output=True, text=True,
                             timeout=30, check=False).stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired):
        out = []
    found = [p for p in out if p.endswith("/libsofthsm2.so") and os.path.exists(p)]
    found.sort(key=lambda p: "-linux-gnu" not in p)  # the multiarch path first
    if found:
        return found[0]
    fallback = "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"
    if os.path.exists(fallback):
        return fallback
    raise HarnessError("SoftHSM module not found (install libsofthsm2: scripts/deps.sh)")


# --- JOSE helpers (independent of our C code) -------------------------------------

_B64URL = re.compile(r"\A[A-Za-z0-9_-]*\Z")


def b64url_encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text):
    """Strict base64url without padding (RFC 7515 section 2); ValueError otherwise."""
    if isinstance(text, bytes):
        text = text.decode("ascii")
    if not _B64URL.match(text) or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url: %r" % text[:40])
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as e:
        raise ValueError("bad base64url: %s" % e) from None
    if b64url_encode(raw) != text:  # non-canonical trailing bits
        raise ValueError("non-canonical base64url: %r" % text[:40])
    return raw


def _json_object(raw, what):
    def no_duplicates(pairs):
        obj = {}
        for k, v in pairs:
            if k in obj:
                raise ValueError("%s: duplicate member %r" % (what, k))
            obj[k] = v
        return obj
    try:
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates)
    except UnicodeDecodeError:
        raise ValueError("%s is not UTF-8" % what) from None
    except json.JSONDecodeError as e:
        raise ValueError("%s is not JSON: %s" % (what, e)) from None
    if not isinstance(value, dict):
        raise ValueError("%s is not a JSON object" % what)
    return value


def jwk_thumbprint(jwk):
    """RFC 7638 JWK thumbprint (SHA-256, base64url) of an EC, RSA or OKP key."""
    required = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"),
                "OKP": ("crv", "kty", "x"), "oct": ("k", "kty")}
    kty = jwk.get("kty")
    if kty not in required:
        raise ValueError("unsupported kty %r" % kty)
    members = {k: jwk[k] for k in required[kty]}
    canon = json.dumps(members, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return b64url_encode(hashlib.sha256(canon.encode("utf-8")).digest())


def verify_es256(jwt, jwks):
    """Verifies a compact ES256 JWS against a JWKS (str, bytes or dict).

    Picks the JWK by the header's kid, builds the P-256 key from x/y, turns the
    64-byte r||s (RFC 7518 section 3.4) into DER and verifies SHA-256 over
    "header.payload". Returns (header, payload) as dicts; raises ValueError
    (or cryptography's InvalidSignature, a subclass of Exception) on any fault.
    """
    if isinstance(jwt, bytes):
        jwt = jwt.decode("ascii")
    parts = jwt.split(".")
    if len(parts) != 3:
        raise ValueError("a compact JWS has 3 parts, this has %d" % len(parts))
    header = _json_object(b64url_decode(parts[0]), "header")
    payload = _json_object(b64url_decode(parts[1]), "payload")
    sig = b64url_decode(parts[2])
    if header.get("alg") != "ES256":
        raise ValueError("alg is %r, not ES256" % header.get("alg"))
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise ValueError("header has no kid")

    if isinstance(jwks, (str, bytes)):
        jwks = json.loads(jwks)
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list):
        raise ValueError("JWKS has no keys array")
    matches = [k for k in keys if isinstance(k, dict) and k.get("kid") == kid]
    if len(matches) != 1:
        raise ValueError("JWKS has %d keys with kid %r" % (len(matches), kid))
    jwk = matches[0]
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise ValueError("JWK %r is not an EC P-256 key" % kid)
    if jwk.get("alg", "ES256") != "ES256" or jwk.get("use", "sig") != "sig":
        raise ValueError("JWK %r is not for ES256 signatures" % kid)
    x, y = b64url_decode(jwk.get("x", "")), b64url_decode(jwk.get("y", ""))
    if len(x) != 32 or len(y) != 32:
        raise ValueError("JWK %r: x and y must be 32 bytes" % kid)
    try:
        key = ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"),
                                            ec.SECP256R1()).public_key()
    except ValueError as e:
        raise ValueError("JWK %r: not a point on P-256: %s" % (kid, e)) from None

    if len(sig) != 64:
        raise ValueError("ES256 signature must be 64 bytes (r||s), not %d" % len(sig))
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    signing_input = (parts[0] + "." + parts[1]).encode("ascii")
    key.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))  # raises InvalidSignature
    return header, payload


# --- config files --------------------------------------------------------------------

_PLAIN_OK = re.compile(r"\A[A-Za-z_/][A-Za-z0-9_./-]*\Z")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "y", "n", "null", "~"}


def _yaml_scalar(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if _PLAIN_OK.match(value) and value.lower() not in _YAML_WORDS:
            return value
        return json.dumps(value)  # a JSON string is a valid YAML double-quoted scalar
    raise HarnessError("cannot write %r to YAML" % (value,))


def to_yaml(obj, indent=0):
    """Block-style YAML for dicts, lists, str, int, bool and None (strings quoted when needed)."""
    pad = " " * indent
    lines = []
    if isinstance(obj, dict):
        if not obj:
            return pad + "{}\n"
        for k, v in obj.items():
            key = _yaml_scalar(str(k))
            if isinstance(v, (dict, list)) and v:
                lines.append("%s%s:\n%s" % (pad, key, to_yaml(v, indent + 2)))
            elif isinstance(v, (dict, list)):
                lines.append("%s%s: %s\n" % (pad, key, "{}" if isinstance(v, dict) else "[]"))
            else:
                lines.append("%s%s: %s\n" % (pad, key, _yaml_scalar(v)))
        return "".join(lines)
    if isinstance(obj, list):
        if not obj:
            return pad + "[]\n"
        for v in obj:
            if isinstance(v, (dict, list)) and v:
                inner = to_yaml(v, indent + 2)
                lines.append("%s- %s" % (pad, inner[indent + 2:]))
            elif isinstance(v, (dict, list)):
                lines.append("%s- %s\n" % (pad, "{}" if isinstance(v, dict) else "[]"))
            else:
                lines.append("%s- %s\n" % (pad, _yaml_scalar(v)))
        return "".join(lines)
    return pad + _yaml_scalar(obj) + "\n"


# --- processes -----------------------------------------------------------------------

def _child_env(extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JWT_SIGN_")}
    env.setdefault("GRPC_DNS_RESOLVER", "native")
    if extra:
        for k, v in extra.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
    return env


def _run(argv, env=None, timeout_s=60, input_text=None, cwd=None):
    """Runs argv to completion (killed after timeout_s, scaled); returns (rc, stdout, stderr)."""
    try:
        p = subprocess.run(argv, input=input_text, capture_output=True, text=True, errors="replace",
                           env=env, cwd=cwd, timeout=timeout(timeout_s), check=False,
                           stdin=None if input_text is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise HarnessError("%s did not finish within %.0f s; stderr: %s" % (
            argv[0], timeout(timeout_s), _text(e.stderr)[-2000:])) from None
    except OSError as e:
        raise HarnessError("cannot run %s: %s" % (argv[0], e)) from None
    return p.returncode, p.stdout, p.stderr


def _text(data):
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data


class Daemon:
    """A running jwt-signerd: its stderr lines (raw and parsed JSON) and exit status."""

    def __init__(self, argv, env, cwd):
        self.argv = list(argv)
        self.port = None
        self.http_port = None
        self._lines = []      # raw stderr lines
        self._stdout = []
        self._cond = threading.Condition()
        self._stderr_eof = False
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, env=env, cwd=cwd)
        except OSError as e:
            raise HarnessError("cannot start %s: %s" % (argv[0], e)) from None
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stderr, self._lines, True),
                             daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stdout, self._stdout, False),
                             daemon=True),
        ]
        for t in self._threads:
            t.start()
        _LIVE.add(self)

    def _pump(self, stream, sink, is_stderr):
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                with self._cond:
                    sink.append(line)
                    self._cond.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            try:
                stream.close()
            except OSError:
                pass
            with self._cond:
                if is_stderr:
                    self._stderr_eof = True
                self._cond.notify_all()

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc.poll() is None

    def stderr_lines(self):
        with self._cond:
            return list(self._lines)

    def stdout_lines(self):
        with self._cond:
            return list(self._stdout)

    def logs(self, event=None):
        """Parsed JSON log lines (dicts), optionally only those with this "event"."""
        out = []
        for line in self.stderr_lines():
            obj = _parse_log(line)
            if obj is not None and (event is None or obj.get("event") == event):
                out.append(obj)
        return out

    def wait_log(self, match, timeout_s=20, start=0):
        """Waits for a JSON log line; match is an event name or a predicate on the dict.

        Looks at lines from index `start` of stderr_lines() on. Returns the dict;
        raises HarnessError on timeout or if the daemon exits first.
        """
        pred = match if callable(match) else (lambda o: o.get("event") == match)
        deadline = time.monotonic() + timeout(timeout_s)
        seen = start
        with self._cond:
            while True:
                while seen < len(self._lines):
                    obj = _parse_log(self._lines[seen])
                    seen += 1
                    if obj is not None and pred(obj):
                        return obj
                # All of stderr has been read and the process is gone: no more lines.
                if self._stderr_eof and self.proc.poll() is not None:
                    raise HarnessError("jwt-signerd exited (status %s) before the awaited log "
                                       "line %r\n%s" % (self.proc.poll(), match, self._tail()))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HarnessError("no log line %r within %.0f s\n%s" % (
                        match, timeout(timeout_s), self._tail()))
                self._cond.wait(min(left, 0.5))

    def wait_listening(self, timeout_s=20):
        obj = self.wait_log("listening", timeout_s)
        port = obj.get("port")
        if not isinstance(port, int):
            addr = obj.get("address", "")
            try:
                port = int(str(addr).rsplit(":", 1)[1])
            except (IndexError, ValueError):
                raise HarnessError("listening line without a port: %r" % obj) from None
        if not 0 < port < 65536:
            raise HarnessError("listening line with a bad port: %r" % obj)
        self.port = port
        # The HTTP endpoint (JWKS, healthz, metrics) logs its own line first.
        http = [o for o in self.logs("http_listening")]
        self.http_port = http[-1]["port"] if http else None
        return port

    def sanitizer_reports(self):
        return [l for l in self.stderr_lines() if any(m in l for m in SANITIZER_MARKERS)]

    def _tail(self, n=40):
        lines = self._lines[-n:]
        return "jwt-signerd stderr (last %d lines):\n%s" % (len(lines), "\n".join(lines))

    def tail(self, n=40):
        with self._cond:
            return self._tail(n)

    def _join_readers(self, timeout_s=5):
        for t in self._threads:
            t.join(timeout(timeout_s))

    def stop(self, sig=signal.SIGTERM, timeout_s=20, check_sanitizers=True):
        """Sends sig, waits for exit (SIGKILL after timeout_s, then HarnessError).

        Returns the exit status as subprocess reports it (negative: killed by a
        signal). Raises HarnessError if a sanitizer reported an error, unless
        check_sanitizers is False.
        """
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout(timeout_s))
            except subprocess.TimeoutExpired:
                self.kill()
                raise HarnessError("jwt-signerd did not exit within %.0f s of signal %d\n%s" % (
                    timeout(timeout_s), sig, self.tail())) from None
        _LIVE.discard(self)
        self._join_readers()
        if check_sanitizers and self.sanitizer_reports():
            raise HarnessError("sanitizer report from jwt-signerd\n" + self.tail(200))
        return self.proc.returncode

    def wait(self, timeout_s=20):
        """Waits for the daemon to exit on its own; returns its status or raises on timeout."""
        try:
            rc = self.proc.wait(timeout(timeout_s))
        except subprocess.TimeoutExpired:
            raise HarnessError("jwt-signerd still running after %.0f s\n%s" % (
                timeout(timeout_s), self.tail())) from None
        _LIVE.discard(self)
        self._join_readers()
        return rc

    def kill(self):
        _LIVE.discard(self)
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout(10))
            except subprocess.TimeoutExpired:
                pass
        self._join_readers(2)


# Daemons not yet stopped; killed at interpreter exit if a test forgot cleanup.
_LIVE = set()


@atexit.register
def _kill_leftovers():
    for d in list(_LIVE):
        d.kill()


def _parse_log(line):
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


# --- the environment -----------------------------------------------------------------

class Env:
    """A private SoftHSM token, PKI, config and signer in a temporary directory.

    Attributes: dir, pki_dir, softhsm_conf, pin_file, pin, token_label, module,
    config_path (the last config written), daemon (the last one started).
    """

    def __init__(self, token_label="jwt-signer-test", prefix="jwt-signer-it-"):
        self.dir = tempfile.mkdtemp(prefix=prefix)
        self.pki_dir = os.path.join(self.dir, "pki")
        self.token_dir = os.path.join(self.dir, "tokens")
        self.softhsm_conf = os.path.join(self.dir, "softhsm2.conf")
        self.pin_file = os.path.join(self.dir, "pin")
        self.token_label = token_label
        self.pin = None
        self.so_pin = None
        self.module = None
        self.config_path = None
        self.daemon = None
        self.daemons = []
        self._configs = {}
        self._cleaned = False
        self._extra_callers = {}

    # context manager: cleanup always; on an exception show the daemon's stderr
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and self.daemon is not None:
            sys.stderr.write(self.daemon.tail(80) + "\n")
        self.cleanup()
        return False

    def env(self, extra=None):
        """Environment for child processes: SOFTHSM2_CONF set, JWT_SIGN_* removed."""
        merged = {"SOFTHSM2_CONF": self.softhsm_conf}
        merged.update(extra or {})
        return _child_env(merged)

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    # --- token ---------------------------------------------------------------------
    def init_token(self):
        """Writes softhsm2.conf and initialises the token with random PINs (pin file 0600)."""
        os.makedirs(self.token_dir, exist_ok=True)
        with open(self.softhsm_conf, "w", encoding="utf-8") as f:
            f.write("directories.tokendir = %s\nobjectstore.backend = file\n"
                    "log.level = ERROR\nslots.removable = false\n" % self.token_dir)
        self.pin = secrets.token_hex(16)
        self.so_pin = secrets.token_hex(16)
        fd = os.open(self.pin_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(self.pin + "\n")
        self.module = softhsm_module()
        rc, out, err = _run(["softhsm2-util", "--init-token", "--free", "--label", self.token_label,
                             "--pin", self.pin, "--so-pin", self.so_pin], env=self.env(),
                            timeout_s=60)
        if rc != 0:
            raise HarnessError("softhsm2-util --init-token failed (%d): %s%s" % (rc, out, err))

    # --- PKI -----------------------------------------------------------------------
    def make_pki(self, extra_callers=None):
        """Runs scripts/mkpki.sh into DIR/pki; extra_callers maps NAME -> URI SAN."""
        self._extra_callers.update(extra_callers or {})
        argv = ["bash", os.path.join(source_dir(), "scripts", "mkpki.sh"), self.pki_dir]
        for name, uri in self._extra_callers.items():
            argv += ["--caller", name, uri]
        rc, out, err = _run(argv, env=_child_env(), timeout_s=120)
        if rc != 0:
            raise HarnessError("mkpki.sh failed (%d): %s%s" % (rc, out, err))

    def add_caller(self, name, uri):
        """Adds a caller certificate NAME with SAN URI:uri, signed by the test CA."""
        self.make_pki({name: uri})

    def add_cert(self, name, cn=None, dns=(), uris=(), ca="ca"):
        """Issues caller certificate NAME (DIR/pki/NAME.crt and .key) with exactly the
        names given: subject CN `cn` (any text, UTF-8 encoded, control and bidi
        characters included: None for an empty subject), DNS SANs `dns` and URI SANs
        `uris` (strings, in order; no SAN extension if both are empty), signed by the
        test CA `ca` (an mkpki.sh CA: "ca" or "other-ca"), clientAuth, EC P-256.

        The names are put into the certificate as given (python3-cryptography),
        without the checks a real CA might make, so tests can present the names an
        attacker would get a careless CA to issue. make_pki() must have run.
        Returns the path of the certificate; use the caller as run_sign(name, ...).
        """
        import datetime
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        if not re.match(r"^[A-Za-z0-9._-]+$", name):
            raise HarnessError("add_cert: bad certificate name %r" % name)
        ca_crt = os.path.join(self.pki_dir, ca + ".crt")
        ca_key = os.path.join(self.pki_dir, ca + ".key")
        if not (os.path.exists(ca_crt) and os.path.exists(ca_key)):
            raise HarnessError("add_cert: no CA %r in %s (run make_pki first)" % (ca, self.pki_dir))
        with open(ca_crt, "rb") as f:
            issuer = x509.load_pem_x509_certificate(f.read())
        with open(ca_key, "rb") as f:
            signer = serialization.load_pem_private_key(f.read(), password=None)
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [] if cn is None else [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name(attrs))
                   .issuer_name(issuer.subject)
                   .public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=30))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                                key_encipherment=False, data_encipherment=False,
                                                key_agreement=False, key_cert_sign=False,
                                                crl_sign=False, encipher_only=False,
                                                decipher_only=False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                                  critical=False)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                                  critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       signer.public_key()), critical=False))
        sans = [x509.DNSName(d) for d in dns] + [x509.UniformResourceIdentifier(u) for u in uris]
        if sans:
            # RFC 5280 §4.2.1.6: critical when the subject is empty.
            builder = builder.add_extension(x509.SubjectAlternativeName(sans),
                                            critical=cn is None)
        cert = builder.sign(signer, hashes.SHA256())
        key_path = os.path.join(self.pki_dir, name + ".key")
        crt_path = os.path.join(self.pki_dir, name + ".crt")
        for path in (key_path, crt_path):
            if os.path.exists(path):
                os.unlink(path)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        with open(crt_path, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        return crt_path

    def caller_files(self, name):
        """(ca, cert, key) paths for a caller made by mkpki.sh."""
        cert = os.path.join(self.pki_dir, name + ".crt")
        key = os.path.join(self.pki_dir, name + ".key")
        if not (os.path.exists(cert) and os.path.exists(key)):
            raise HarnessError("no certificate for caller %r in %s" % (name, self.pki_dir))
        return os.path.join(self.pki_dir, "ca.crt"), cert, key

    # --- config --------------------------------------------------------------------
    def config_dict(self, **overrides):
        """The default test config with overrides applied.

        Top-level keys replace the defaults; a value of None removes the key.
        Overriding keys without default_key makes the first key the default.
        Shortcuts: pin_env=NAME (use the env variable NAME instead of pin_file;
        start() and keygen() then set it to the PIN), hsm_token=URI, module=PATH.
        """
        if self.module is None:
            self.module = softhsm_module()
        cfg = {
            "listen": "127.0.0.1:0",
            "tls": {"cert": "pki/server.crt", "key": "pki/server.key", "client_ca": "pki/ca.crt"},
            "workers": 2,
            "hsm": {"module": self.module, "token": "pkcs11:token=" + self.token_label,
                    "pin_file": "pin"},
            "keys": [dict(DEFAULT_KEY)],
            "default_key": DEFAULT_KEY["name"],
            "policy": "policy.yaml",
            "audit": {"dir": "audit", "key_label": AUDIT_KEY_LABEL},
            "http": {"listen": "127.0.0.1:0"},
        }
        pin_env = overrides.pop("pin_env", None)
        hsm_token = overrides.pop("hsm_token", None)
        module = overrides.pop("module", None)
        if "keys" in overrides and "default_key" not in overrides:
            keys = overrides["keys"]
            first = keys[0] if isinstance(keys, list) and keys else None
            if isinstance(first, dict) and "name" in first:
                overrides["default_key"] = first["name"]
            else:
                overrides["default_key"] = None
        for k, v in overrides.items():
            if v is None:
                cfg.pop(k, None)
            else:
                cfg[k] = v
        if isinstance(cfg.get("hsm"), dict):
            hsm = dict(cfg["hsm"])
            if pin_env is not None:
                hsm.pop("pin_file", None)
                hsm["pin_env"] = pin_env
            if hsm_token is not None:
                hsm["token"] = hsm_token
            if module is not None:
                hsm["module"] = module
            cfg["hsm"] = hsm
        return cfg

    def write_config(self, name="signer.yaml", **overrides):
        """Writes DIR/name from config_dict(**overrides); returns its path (also config_path)."""
        cfg = self.config_dict(**overrides)
        return self.write_raw_config(to_yaml(cfg), name, cfg)

    def write_raw_config(self, text, name="signer.yaml", _cfg=None):
        """Writes arbitrary YAML text (for negative tests); returns its path."""
        path = self.path(name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        self._configs[path] = _cfg
        self.config_path = path
        return path

    def _pin_env_for(self, config):
        cfg = self._configs.get(config)
        hsm = cfg.get("hsm") if isinstance(cfg, dict) else None
        if isinstance(hsm, dict) and hsm.get("pin_env") and self.pin:
            return {hsm["pin_env"]: self.pin}
        return {}

    # --- keys ----------------------------------------------------------------------
    def keygen(self, key_name, config=None, check=True, timeout_s=60):
        """Runs `jwt-signerd keygen --config CFG --key NAME`; returns (rc, stdout, stderr)."""
        config = config or self.config_path
        if config is None:
            raise HarnessError("keygen: no config written yet")
        rc, out, err = _run([signerd_path(), "keygen", "--config", config, "--key", key_name],
                            env=self.env(self._pin_env_for(config)), timeout_s=timeout_s)
        if check and rc != 0:
            raise HarnessError("keygen %s failed (%d): %s%s" % (key_name, rc, out, err))
        return rc, out, err

    def default_policy(self, callers=None, issuer="https://jwt-signer.test.example", **defaults):
        """The test policy as a dict: DEFAULT_POLICY_DEFAULTS updated with `defaults`,
        and `callers` (a list of caller entries; default: issuer-a inheriting all)."""
        d = json.loads(json.dumps(DEFAULT_POLICY_DEFAULTS))
        d.update(defaults)
        if callers is None:
            callers = [{"id": CALLER_URIS["issuer-a"]}]
        return {"version": 1, "issuer": issuer, "admins": ["spiffe://example.org/ops/admin"],
                "incident": False, "defaults": d, "callers": callers}

    def write_policy(self, policy=None, name="policy.yaml"):
        """Writes DIR/name from a policy dict (default_policy() if None) or YAML text."""
        if policy is None:
            policy = self.default_policy()
        text = policy if isinstance(policy, str) else to_yaml(policy)
        path = self.path(name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    @staticmethod
    def sample_claims(**extra):
        claims = {"sub": SAMPLE_SUB, "aud": SAMPLE_AUD}
        claims.update(extra)
        return claims

    audit_key_label = AUDIT_KEY_LABEL

    def keygen_audit(self, config=None, check=True, timeout_s=60):
        """Runs `jwt-signerd keygen --config CFG --audit-key`; returns (rc, stdout, stderr)."""
        config = config or self.config_path
        rc, out, err = _run([signerd_path(), "keygen", "--config", config, "--audit-key"],
                            env=self.env(self._pin_env_for(config)), timeout_s=timeout_s)
        if check and rc != 0:
            raise HarnessError("keygen --audit-key failed (%d): %s%s" % (rc, out, err))
        return rc, out, err

    def setup(self, policy=None, **overrides):
        """Token, PKI, policy.yaml (policy dict or text; default_policy() if None),
        signer.yaml (with overrides), a key for every configured key and the audit key."""
        self.init_token()
        self.make_pki()
        self.write_policy(policy)
        path = self.write_config(**overrides)
        for key in self._configs[path].get("keys") or []:
            if isinstance(key, dict) and "name" in key:
                self.keygen(key["name"], path)
        self.keygen_audit(path)
        return path

    def audit_dir(self, config=None):
        """The audit log directory of a config written by write_config."""
        cfg = self._configs.get(config or self.config_path) or {}
        return self.path((cfg.get("audit") or {}).get("dir", "audit"))

    def audit_segments(self, config=None):
        d = self.audit_dir(config)
        return sorted(os.path.join(d, f) for f in os.listdir(d)
                      if f.startswith("audit-") and f.endswith(".log"))

    # --- the daemon ----------------------------------------------------------------
    def start(self, config=None, args=(), env=None, wait=True, timeout_s=20):
        """Starts `jwt-signerd --config CFG [args]`; with wait, returns once it logs
        "listening" (its port is then daemon.port and env.port). Returns the Daemon."""
        config = config or self.config_path
        if config is None:
            raise HarnessError("start: no config written yet")
        extra = self._pin_env_for(config)
        extra.update(env or {})
        d = Daemon([signerd_path(), "--config", config] + list(args), self.env(extra), self.dir)
        self.daemon = d
        self.daemons.append(d)
        if wait:
            try:
                d.wait_listening(timeout_s)
            except HarnessError:
                d.kill()
                raise
        return d

    @property
    def http_port(self):
        if self.daemon is None or getattr(self.daemon, "http_port", None) is None:
            raise HarnessError("no HTTP endpoint")
        return self.daemon.http_port

    def http_get(self, path, headers=None, timeout_s=10):
        """GET http://127.0.0.1:HTTP_PORT/path: (status, headers dict, body bytes)."""
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout(timeout_s))
        try:
            conn.request("GET", path, headers=headers or {})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    @property
    def port(self):
        if self.daemon is None or self.daemon.port is None:
            raise HarnessError("no listening daemon")
        return self.daemon.port

    def logs(self, event=None):
        if self.daemon is None:
            raise HarnessError("no daemon started")
        return self.daemon.logs(event)

    def wait_log(self, match, timeout_s=20, start=0):
        if self.daemon is None:
            raise HarnessError("no daemon started")
        return self.daemon.wait_log(match, timeout_s, start)

    def stop(self, sig=signal.SIGTERM, timeout_s=20, check_sanitizers=True):
        if self.daemon is None:
            raise HarnessError("no daemon started")
        return self.daemon.stop(sig, timeout_s, check_sanitizers)

    # --- clients -------------------------------------------------------------------
    def run_sign(self, caller, *args, target=None, timeout_s=30, input_text=None, env=None):
        """Runs jwt-sign with caller's certificate: `jwt-sign --target localhost:PORT --ca
        --cert --key ARGS...`. Returns (exit code, stdout, stderr)."""
        ca, cert, key = self.caller_files(caller)
        target = target or "localhost:%d" % self.port
        argv = [sign_path(), "--target", target, "--ca", ca, "--cert", cert, "--key", key]
        return _run(argv + [str(a) for a in args], env=_child_env(env), timeout_s=timeout_s,
                    input_text=input_text)

    def sign(self, caller, claims, *args, key_name=None, **kw):
        """`jwt-sign ... [--key-name K] [args] sign CLAIMS`; claims is a dict or a JSON string."""
        if not isinstance(claims, str):
            claims = json.dumps(claims, separators=(",", ":"))
        opts = (["--key-name", key_name] if key_name else []) + list(args)
        return self.run_sign(caller, *opts, "sign", claims, **kw)

    def jwks(self, caller="issuer-a", **kw):
        """`jwt-sign ... jwks`: (exit code, JWKS JSON text, stderr)."""
        return self.run_sign(caller, "jwks", **kw)

    def run(self, argv, timeout_s=60, env=None, input_text=None):
        """Runs any program with this environment (SOFTHSM2_CONF set); (rc, stdout, stderr)."""
        return _run([str(a) for a in argv], env=self.env(env), timeout_s=timeout_s,
                    input_text=input_text, cwd=self.dir)

    # --- teardown ------------------------------------------------------------------
    def cleanup(self):
        """Kills any daemon still running and removes the directory (kept if JS_KEEP_TMP=1)."""
        if self._cleaned:
            return
        self._cleaned = True
        for d in self.daemons:
            d.kill()
        if os.environ.get("JS_KEEP_TMP") == "1":
            sys.stderr.write("harness: keeping %s (JS_KEEP_TMP=1)\n" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


# --- ExternalJWTSigner (Kubernetes) and node helpers (issue 12) ------------------------

def externaljwt_config(socket="externaljwt.sock", **extra):
    """The signer config's `externaljwt` section: {socket, [owner, group, mode]}.
    Use as env.setup(externaljwt=harness.externaljwt_config()); the socket path is
    relative to the config file's directory (the Env's dir)."""
    section = {"socket": socket}
    section.update(extra)
    return section


def unix_caller_id(uid=None):
    """The typed identity of a local peer by its uid (SO_PEERCRED): "unix:uid=N"."""
    return "unix:uid=%d" % (os.getuid() if uid is None else uid)


def wait_unix_socket(path, timeout_s=20, daemon=None):
    """Waits until a Unix domain socket at path accepts a connection (a daemon,
    when given, must still be running). Returns path; HarnessError on timeout."""
    import socket as _socket
    import stat as _stat
    deadline = time.monotonic() + timeout(timeout_s)
    last = "not created"
    while True:
        if daemon is not None and not daemon.running():
            raise HarnessError("jwt-signerd exited (status %s) before %s accepted connections\n%s"
                               % (daemon.proc.poll(), path, daemon.tail()))
        try:
            if _stat.S_ISSOCK(os.lstat(path).st_mode):
                s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
                try:
                    s.settimeout(2)
                    s.connect(path)
                    return path
                finally:
                    s.close()
            last = "not a socket"
        except OSError as e:
            last = str(e)
        if time.monotonic() > deadline:
            raise HarnessError("%s does not accept connections within %.0f s (%s)"
                               % (path, timeout(timeout_s), last))
        time.sleep(0.05)


def node_dir():
    """tests/node: package.json, package-lock.json and the verify scripts."""
    return os.path.join(source_dir(), "tests", "node")


def node_path(min_major=18):
    """The node program (NodeSource or Debian's nodejs), at least min_major."""
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        raise HarnessError("node not found (scripts/deps.sh installs nodejs and npm)")
    rc, out, err = _run([node, "--version"], env=_child_env(), timeout_s=30)
    m = re.match(r"v(\d+)\.", out.strip())
    if rc != 0 or not m or int(m.group(1)) < min_major:
        raise HarnessError("%s --version: %r: node %d or later is needed" % (node, out + err,
                                                                              min_major))
    return node


def npm_ci(timeout_s=300):
    """`npm ci --no-audit --no-fund` in tests/node, once: skipped while
    node_modules/.jwt-signer-lock-sha256 holds the SHA-256 of package-lock.json.
    Serialised across test processes with flock on package-lock.json.
    Returns the node_modules directory."""
    import fcntl
    d = node_dir()
    lock_path = os.path.join(d, "package-lock.json")
    stamp = os.path.join(d, "node_modules", ".jwt-signer-lock-sha256")
    with open(lock_path, "rb") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            want = hashlib.sha256(f.read()).hexdigest()
            try:
                with open(stamp, encoding="ascii") as s:
                    if s.read().strip() == want:
                        return os.path.join(d, "node_modules")
            except OSError:
                pass
            npm = shutil.which("npm")
            if npm is None:
                raise HarnessError("npm not found (scripts/deps.sh installs nodejs and npm)")
            rc, out, err = _run([npm, "ci", "--no-audit", "--no-fund"], env=_child_env(),
                                timeout_s=timeout_s, cwd=d)
            if rc != 0:
                raise HarnessError("npm ci in %s failed (%d): %s%s" % (d, rc, out, err))
            with open(stamp, "w", encoding="ascii") as s:
                s.write(want + "\n")
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    return os.path.join(d, "node_modules")


def node_job(script, job, timeout_s=60):
    """Runs `node tests/node/SCRIPT` with the JSON job on stdin (after npm_ci());
    returns the JSON object it prints. HarnessError if it does not exit 0."""
    node = node_path()
    npm_ci()
    path = os.path.join(node_dir(), script)
    rc, out, err = _run([node, path], env=_child_env(), timeout_s=timeout_s,
                        input_text=json.dumps(job), cwd=node_dir())
    if rc != 0:
        raise HarnessError("node %s failed (%d): %s%s" % (script, rc, out, err))
    try:
        return json.loads(out)
    except ValueError:
        raise HarnessError("node %s printed no JSON: %r %r" % (script, out, err)) from None
