"""k8s_client.py - a client of Kubernetes' ExternalJWTSigner service (the
k8s.io/externaljwt contract kube-apiserver speaks on
--service-account-signing-endpoint), for the integration tests.

It is built from the published proto only, not from jwt-signer's C code:
proto/externaljwt/v1/api.proto and proto/externaljwt/v1alpha1/api.proto are
compiled at test time with python3-grpc-tools (protoc with the gRPC Python
plugin) into a private temporary directory, and the generated modules are
imported from there (externaljwt.v1.api_pb2 and externaljwt.v1alpha1.api_pb2:
both files are named api.proto, so they are imported by their package path,
never as a bare "api_pb2"). The channel is plain gRPC over the Unix domain
socket ("unix:" + absolute path), as kube-apiserver dials it; each Client
has a connection of its own.

    with k8s_client.Client(sock_path, "v1") as c:
        header, signature = c.sign(claims_b64)     # raises grpc.RpcError
        keys = c.fetch_keys()                       # FetchKeysResponse
        max_exp = c.metadata().max_token_expiration_seconds
        err = c.sign_error(claims_b64)              # CallError: code, details, trailing

Debian packages: python3-grpcio, python3-grpc-tools, python3-protobuf; run
with /usr/bin/python3.
"""

import atexit
import importlib
import os
import shutil
import sys
import tempfile
import threading

import grpc

__all__ = ["Client", "CallError", "VERSIONS", "modules", "proto_dir"]

VERSIONS = ("v1", "v1alpha1")

_lock = threading.Lock()
_generated = {}   # version -> (api_pb2, api_pb2_grpc)
_gen_dir = None


def proto_dir():
    """The repository's proto/ directory (JS_SOURCE_DIR, else relative to this file)."""
    src = os.environ.get("JS_SOURCE_DIR") or os.path.dirname(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.path.join(src, "proto")


def _compile():
    """Runs grpc_tools.protoc on both api.proto files into a temporary directory."""
    global _gen_dir
    from grpc_tools import protoc
    import grpc_tools

    out = tempfile.mkdtemp(prefix="jwt-signer-k8s-proto-")
    atexit.register(shutil.rmtree, out, True)
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    files = [os.path.join("externaljwt", v, "api.proto") for v in VERSIONS]
    for f in files:
        if not os.path.isfile(os.path.join(proto_dir(), f)):
            raise RuntimeError("k8s_client: %s not found under %s" % (f, proto_dir()))
    argv = ["grpc_tools.protoc", "-I" + proto_dir(), "-I" + well_known,
            "--python_out=" + out, "--grpc_python_out=" + out] + files
    rc = protoc.main(argv)
    if rc != 0:
        raise RuntimeError("k8s_client: protoc failed (%d): %s" % (rc, " ".join(argv)))
    _gen_dir = out


def modules(version):
    """(api_pb2, api_pb2_grpc) generated from proto/externaljwt/<version>/api.proto."""
    if version not in VERSIONS:
        raise ValueError("unknown ExternalJWTSigner version %r" % (version,))
    with _lock:
        if version not in _generated:
            if _gen_dir is None:
                _compile()
            # The generated _grpc module imports "externaljwt.<version>.api_pb2"
            # (a namespace package under the output directory).
            if _gen_dir not in sys.path:
                sys.path.insert(0, _gen_dir)
            pb2 = importlib.import_module("externaljwt.%s.api_pb2" % version)
            pb2_grpc = importlib.import_module("externaljwt.%s.api_pb2_grpc" % version)
            if not pb2.DESCRIPTOR.package == version:
                raise RuntimeError("k8s_client: %s has package %r" % (pb2.__file__,
                                                                      pb2.DESCRIPTOR.package))
            _generated[version] = (pb2, pb2_grpc)
        return _generated[version]


class CallError:
    """A failed call: grpc.StatusCode, details text and trailing metadata as a dict."""

    def __init__(self, err):
        self.code = err.code()
        self.details = err.details() or ""
        self.trailing = {}
        for md in err.trailing_metadata() or ():
            self.trailing[md.key] = md.value

    @property
    def reason(self):
        return self.trailing.get("jwt-signer-reason")

    def __repr__(self):
        return "CallError(%s, %r, %r)" % (self.code, self.details, self.trailing)


class Client:
    """One channel to the ExternalJWTSigner socket speaking one API version."""

    def __init__(self, socket_path, version="v1", timeout_s=10.0):
        self.version = version
        self.pb2, pb2_grpc = modules(version)
        self.timeout_s = timeout_s
        # A subchannel (connection) of its own: gRPC would otherwise share one
        # among channels to the same target, and tests count connections.
        self.channel = grpc.insecure_channel("unix:" + os.path.abspath(socket_path),
                                             options=[("grpc.use_local_subchannel_pool", 1)])
        self.stub = pb2_grpc.ExternalJWTSignerStub(self.channel)

    def close(self):
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def sign(self, claims_b64):
        """Sign(SignJWTRequest{claims}): (header, signature), both base64url text."""
        resp = self.stub.Sign(self.pb2.SignJWTRequest(claims=claims_b64), timeout=self.timeout_s)
        return resp.header, resp.signature

    def sign_error(self, claims_b64):
        """Sign expected to fail: the CallError (AssertionError if it succeeded)."""
        try:
            resp = self.stub.Sign(self.pb2.SignJWTRequest(claims=claims_b64),
                                  timeout=self.timeout_s)
        except grpc.RpcError as e:
            return CallError(e)
        raise AssertionError("Sign succeeded where a refusal was expected: %r" % (resp,))

    def fetch_keys(self):
        """FetchKeys(): FetchKeysResponse (keys[].key_id/key/exclude_from_oidc_discovery,
        data_timestamp, refresh_hint_seconds)."""
        return self.stub.FetchKeys(self.pb2.FetchKeysRequest(), timeout=self.timeout_s)

    def metadata(self):
        """Metadata(): MetadataResponse (max_token_expiration_seconds)."""
        return self.stub.Metadata(self.pb2.MetadataRequest(), timeout=self.timeout_s)

    def wait_ready(self, timeout_s=10.0):
        """Waits until the channel connects (grpc.FutureTimeoutError otherwise)."""
        grpc.channel_ready_future(self.channel).result(timeout=timeout_s)
