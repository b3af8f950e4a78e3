"""A stdlib Kafka readiness probe: ApiVersions, then Metadata v4 must list our broker.

An open TCP port is not enough: the broker accepts connections before it has joined the KRaft
quorum, and clients then get no brokers back. Metadata v4 is used because Kafka 4 removed v0-v3.
"""

from __future__ import annotations

import socket
import struct

_CLIENT_ID = b"astrocyte-services-probe"


def _request(api_key: int, version: int, correlation: int, body: bytes) -> bytes:
    header = struct.pack(">hhih", api_key, version, correlation, len(_CLIENT_ID)) + _CLIENT_ID
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def _read_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    return data


def _exchange(sock: socket.socket, request: bytes) -> bytes:
    sock.sendall(request)
    (size,) = struct.unpack(">i", _read_exact(sock, 4))
    return _read_exact(sock, size)


def broker_ready(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when the broker answers ApiVersions without error and Metadata lists >= 1 broker."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            versions = _exchange(sock, _request(18, 0, 1, b""))
            correlation, error = struct.unpack(">ih", versions[:6])
            if correlation != 1 or error != 0:
                return False
            # Metadata v4 body: topics = null (all), allow_auto_topic_creation = false.
            metadata = _exchange(sock, _request(3, 4, 2, struct.pack(">ib", -1, 0)))
            correlation, _throttle, brokers = struct.unpack(">iii", metadata[:12])
            return correlation == 2 and brokers >= 1
    except (OSError, struct.error):
        return False
