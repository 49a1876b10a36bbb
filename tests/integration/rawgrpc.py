"""rawgrpc.py - a real gRPC client (python3-grpcio) for cases jwt-sign cannot
express: raw request bytes (invalid UTF-8, malformed protobuf), no client
certificate, an unregistered method. Protobuf is hand-encoded: the request
has three fields (proto/jwtsigner/v1/signer.proto), so no codegen is needed.
"""

import grpc

SIGN = "/jwtsigner.v1.Signer/SignJwt"
JWKS = "/jwtsigner.v1.Signer/GetJwks"


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field_bytes(num, data):
    return _varint((num << 3) | 2) + _varint(len(data)) + data


def sign_request(claims, key=b"", request_id=b""):
    """Encodes a SignJwtRequest; claims/key/request_id are bytes."""
    msg = _field_bytes(1, claims)
    if key:
        msg += _field_bytes(2, key)
    if request_id:
        msg += _field_bytes(3, request_id)
    return msg


def channel(port, ca, cert=None, key=None):
    """A secure channel to localhost:port; without cert/key no client certificate."""
    with open(ca, "rb") as f:
        root = f.read()
    chain = pkey = None
    if cert is not None:
        with open(cert, "rb") as f:
            chain = f.read()
        with open(key, "rb") as f:
            pkey = f.read()
    creds = grpc.ssl_channel_credentials(root_certificates=root, private_key=pkey,
                                         certificate_chain=chain)
    return grpc.secure_channel("localhost:%d" % port, creds)


def call(ch, method, payload, timeout=10):
    """Returns (status code name, details, response bytes or None)."""
    try:
        resp = ch.unary_unary(method)(payload, timeout=timeout)
        return "OK", "", resp
    except grpc.RpcError as e:  # pylint: disable=no-member
        return e.code().name, e.details() or "", None
