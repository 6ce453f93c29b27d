"""The stream header: the first bytes a source peer sends on every tunnel stream, signed by its identity key.

Why a signed header even inside TLS: the header is what makes the target re-open a connection on somebody's
behalf, so it must prove *which peer* asks, *for which service*, and *to where*, in both encryption modes
(``encryption: none`` has no TLS to lean on). A nonce and a timestamp stop a captured header from being replayed.

Wire format, version 1 (all integers big-endian)::

    offset  size  field
    0       4     magic  b"ARCS"
    4       1     version = 1
    5       1     flags: bit 0 = transparent (re-originate from the client's address); other bits must be 0
    6       2     total header length in bytes, signature included (bounded by MAX_HEADER)
    8       8     timestamp, Unix milliseconds, when the source created the header
    16      16    nonce, random
    32      1     address family: 4 or 6
    33      2     original source port
    35      2     original destination port
    37      4|16  original source address
    ..      4|16  original destination address
    ..      1     n = length of the signer's peer id, then n bytes ASCII (e.g. ``peer_01H...``)
    ..      1     m = length of the service id, then m bytes ASCII (e.g. ``svc_01H...``)
    ..      64    Ed25519 signature by the signer's identity key over SIGNING_CONTEXT + every byte above

The target reads the fixed 8-byte prefix, checks magic, version and length, then reads exactly the rest, so the
relay that follows never loses a byte that arrived together with the header.
"""

from __future__ import annotations

import ipaddress
import os
import struct
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

MAGIC = b"ARCS"
VERSION = 1
FLAG_TRANSPARENT = 0x01
KNOWN_FLAGS = FLAG_TRANSPARENT
SIGNING_CONTEXT = b"arctic/stream-header/v1\x00"  # keeps these signatures apart from any other use of the key
PREFIX = struct.Struct("!4sBBH")
FIXED = struct.Struct("!Q16sBHH")
SIGNATURE_SIZE = 64
NONCE_SIZE = 16
MIN_HEADER = PREFIX.size + FIXED.size + 4 + 4 + 1 + 1 + 1 + 1 + SIGNATURE_SIZE
MAX_HEADER = 512

# 1-byte status the target sends back once it has decided (and, when admitted, connected).
STATUS_OK = 0x00
STATUS_REFUSED = 0x01
STATUS_CONNECT_FAILED = 0x02


class HeaderError(ValueError):
    """The bytes are not a well-formed version-1 header; ``reason`` is a stable stats/log key."""

    def __init__(self, message: str, reason: str = "malformed_header") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class StreamHeader:
    service_id: str
    signer_peer_id: str
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    transparent: bool
    timestamp_ms: int
    nonce: bytes
    raw: bytes = b""  # the exact bytes received (decode) or produced (encode)

    @property
    def signed_part(self) -> bytes:
        return self.raw[:-SIGNATURE_SIZE]

    @property
    def signature(self) -> bytes:
        return self.raw[-SIGNATURE_SIZE:]

    def verify(self, public_key: Ed25519PublicKey) -> bool:
        try:
            public_key.verify(self.signature, SIGNING_CONTEXT + self.signed_part)
        except InvalidSignature:
            return False
        return True


def _ascii_field(text: str, name: str) -> bytes:
    data = text.encode("ascii")
    if not 0 < len(data) < 256:
        raise ValueError(f"{name} must be 1-255 ASCII characters")
    return bytes([len(data)]) + data


def encode_header(key: Ed25519PrivateKey, *, service_id: str, signer_peer_id: str, src: tuple[str, int],
                  dst: tuple[str, int], transparent: bool, timestamp_ms: int | None = None,
                  nonce: bytes | None = None) -> bytes:
    """Build and sign a header (``timestamp_ms``/``nonce`` are for tests; normally now and random)."""
    src_ip, dst_ip = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
    if src_ip.version != dst_ip.version:
        raise ValueError("source and destination must be the same address family")
    nonce = os.urandom(NONCE_SIZE) if nonce is None else nonce
    if len(nonce) != NONCE_SIZE:
        raise ValueError(f"nonce must be {NONCE_SIZE} bytes")
    timestamp_ms = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    body = (FIXED.pack(timestamp_ms, nonce, src_ip.version, src[1], dst[1]) + src_ip.packed + dst_ip.packed
            + _ascii_field(signer_peer_id, "signer peer id") + _ascii_field(service_id, "service id"))
    total = PREFIX.size + len(body) + SIGNATURE_SIZE
    if total > MAX_HEADER:
        raise ValueError(f"header would be {total} bytes, more than {MAX_HEADER}")
    prefix = PREFIX.pack(MAGIC, VERSION, FLAG_TRANSPARENT if transparent else 0, total)
    return prefix + body + key.sign(SIGNING_CONTEXT + prefix + body)


def header_length(prefix: bytes) -> int:
    """Total header length announced by the 8-byte prefix (raises HeaderError if the prefix is not ours)."""
    if len(prefix) != PREFIX.size:
        raise HeaderError("short header prefix")
    magic, version, _flags, total = PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise HeaderError("not an Arctic stream (bad magic)")
    if version != VERSION:
        raise HeaderError(f"unsupported stream header version {version}", reason="unsupported_version")
    if not MIN_HEADER <= total <= MAX_HEADER:
        raise HeaderError(f"header length {total} out of range")
    return total


def decode_header(data: bytes) -> StreamHeader:
    """Parse (not verify) a complete header; raises HeaderError when it is not well formed."""
    total = header_length(data[: PREFIX.size])
    if len(data) != total:
        raise HeaderError(f"header is {len(data)} bytes, its prefix says {total}")
    _magic, _version, flags, _total = PREFIX.unpack_from(data)
    if flags & ~KNOWN_FLAGS:
        raise HeaderError(f"unknown header flags 0x{flags:02x}")
    end = total - SIGNATURE_SIZE
    try:
        timestamp_ms, nonce, family, src_port, dst_port = FIXED.unpack_from(data, PREFIX.size)
        if family not in (4, 6):
            raise HeaderError(f"bad address family {family}")
        size = 4 if family == 4 else 16
        pos = PREFIX.size + FIXED.size
        src_ip = ipaddress.ip_address(data[pos : pos + size])
        dst_ip = ipaddress.ip_address(data[pos + size : pos + 2 * size])
        pos += 2 * size
        fields = []
        for _ in range(2):
            n = data[pos]
            if n == 0 or pos + 1 + n > end:
                raise HeaderError("truncated identifier")
            fields.append(data[pos + 1 : pos + 1 + n].decode("ascii"))
            pos += 1 + n
    except (struct.error, IndexError, UnicodeDecodeError, ValueError) as err:
        if isinstance(err, HeaderError):
            raise
        raise HeaderError(f"malformed header: {err}") from None
    if pos != end:
        raise HeaderError("header has trailing bytes before the signature")
    return StreamHeader(service_id=fields[1], signer_peer_id=fields[0], src_ip=str(src_ip), src_port=src_port,
                        dst_ip=str(dst_ip), dst_port=dst_port, transparent=bool(flags & FLAG_TRANSPARENT),
                        timestamp_ms=timestamp_ms, nonce=nonce, raw=bytes(data))
