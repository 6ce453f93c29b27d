"""The session wire format: the frames that carry many streams over one authenticated peer-to-peer session.

Sans-IO (no sockets, no event loop): the session and the tests both build and read frames with these helpers.

Every frame has an 8-byte header (integers big-endian)::

    offset  size  field
    0       1     type (DATA, OPEN, OK, ...)
    1       3     payload length in bytes (at most MAX_PAYLOAD)
    4       4     stream id (0 = the session itself: PING, PONG, GOAWAY)

followed by the payload. In ``encryption: none`` every frame but DATA (a *control* frame) is followed by a
16-byte MAC (``handshake.ControlSealer``) that covers a per-direction sequence number, the header and the
payload; its 16 bytes count in the length. So nobody on the link can open, refuse, reset, move or re-window a
stream, and a recorded control frame cannot be played again. In TLS the MAC is left out: TLS already
authenticates every byte.

Payloads:

* ``DATA``: the stream's bytes.
* ``OPEN``: flags (1; bit 0 = transparent), family (1; 4 or 6), source port (2), destination port (2), source
  address (4|16), destination address (4|16), service id length (1) and ASCII service id.
* ``OK``: empty. ``REFUSE``: code (1) and a UTF-8 detail. ``FIN``: empty (this direction ends).
* ``RST``: a UTF-8 reason (the stream is aborted both ways). ``WINDOW``: credit increment (4).
* ``PING``/``PONG``: an 8-byte token, echoed. ``GOAWAY``: a UTF-8 reason (no new streams here).
* ``MOVE``: lane id (8) - the stream's bytes from now on travel on that zero-copy lane (``lanes``).
  ``MOVED``: empty - the target's answer; after it, the downstream bytes travel on the lane too.
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple

HEADER = struct.Struct("!II")
HEADER_SIZE = HEADER.size
MAX_PAYLOAD = (1 << 24) - 1
MAX_DATA = 256 * 1024  # the largest DATA payload a sender builds (uvloop reads at most 256 KiB at once)
MAX_CONTROL = 4096  # a control frame is small; a bigger one is a protocol error (bounds what we buffer)

DATA, OPEN, OK, REFUSE, FIN, RST, WINDOW, PING, PONG, GOAWAY, MOVE, MOVED = range(12)
NAMES = ("DATA", "OPEN", "OK", "REFUSE", "FIN", "RST", "WINDOW", "PING", "PONG", "GOAWAY", "MOVE", "MOVED")
SESSION_TYPES = frozenset({PING, PONG, GOAWAY})  # frames about the session, with stream id 0

FLAG_TRANSPARENT = 0x01
_OPEN_FIXED = struct.Struct("!BBHH")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")

# REFUSE codes: one byte on the wire, a stable reason name in logs and stats (the admission checks' names).
REFUSE_REASONS = (
    "refused", "unknown_service", "wrong_source_peer", "not_target", "destination_not_routed", "connect_failed",
    "transport_mismatch", "session_service_mismatch", "draining", "protocol_error",
)
REFUSE_CODES = {name: code for code, name in enumerate(REFUSE_REASONS)}


class FrameError(ValueError):
    """The bytes are not a valid frame: the session that sent them is broken (``reason`` is a stats key)."""

    def __init__(self, message: str, reason: str = "protocol_error") -> None:
        super().__init__(message)
        self.reason = reason


def header(ftype: int, stream_id: int, length: int) -> bytes:
    return HEADER.pack((ftype << 24) | length, stream_id)


def frame(ftype: int, stream_id: int, payload: bytes = b"") -> bytes:
    return HEADER.pack((ftype << 24) | len(payload), stream_id) + payload


class Open(NamedTuple):
    """What a stream is for: the service and the original connection's two ends (a tuple: one per connection)."""

    service_id: str
    src: tuple[str, int]
    dst: tuple[str, int]
    transparent: bool = False


def encode_open(opening: Open) -> bytes:
    """``inet_pton`` rather than ``ipaddress``: this runs for every new connection."""
    v6 = ":" in opening.src[0]
    if v6 != (":" in opening.dst[0]):
        raise ValueError("source and destination must be of one address family")
    family = socket.AF_INET6 if v6 else socket.AF_INET
    service = opening.service_id.encode("ascii")
    if not 0 < len(service) < 256:
        raise ValueError("service id must be 1-255 ASCII characters")
    flags = FLAG_TRANSPARENT if opening.transparent else 0
    try:
        packed = socket.inet_pton(family, opening.src[0]) + socket.inet_pton(family, opening.dst[0])
    except OSError:
        raise ValueError(f"not an address pair: {opening.src[0]} -> {opening.dst[0]}") from None
    return (_OPEN_FIXED.pack(flags, 6 if v6 else 4, opening.src[1], opening.dst[1]) + packed
            + bytes((len(service),)) + service)


def decode_open(payload: bytes | memoryview) -> Open:
    try:
        flags, family, src_port, dst_port = _OPEN_FIXED.unpack_from(payload)
        if flags & ~FLAG_TRANSPARENT:
            raise FrameError(f"OPEN has unknown flags 0x{flags:02x}")
        if family not in (4, 6):
            raise FrameError(f"OPEN has address family {family}")
        size, af = (4, socket.AF_INET) if family == 4 else (16, socket.AF_INET6)
        pos = _OPEN_FIXED.size
        src_ip = socket.inet_ntop(af, bytes(payload[pos : pos + size]))
        dst_ip = socket.inet_ntop(af, bytes(payload[pos + size : pos + 2 * size]))
        pos += 2 * size
        n = payload[pos]
        service = bytes(payload[pos + 1 : pos + 1 + n]).decode("ascii")
        if n == 0 or len(service) != n or pos + 1 + n != len(payload):
            raise FrameError("OPEN has a bad service id")
    except (struct.error, IndexError, UnicodeDecodeError, ValueError) as err:
        if isinstance(err, FrameError):
            raise
        raise FrameError(f"malformed OPEN: {err}") from None
    return Open(service, (src_ip, src_port), (dst_ip, dst_port), bool(flags & FLAG_TRANSPARENT))


def encode_refuse(reason: str, detail: str = "") -> bytes:
    return bytes([REFUSE_CODES.get(reason, 0)]) + detail.encode("utf-8", "replace")[:1024]


def decode_refuse(payload: bytes | memoryview) -> tuple[str, str]:
    if not payload:
        raise FrameError("REFUSE without a code")
    code = payload[0]
    reason = REFUSE_REASONS[code] if code < len(REFUSE_REASONS) else "refused"
    return reason, bytes(payload[1:]).decode("utf-8", "replace")


def encode_u32(value: int) -> bytes:
    return _U32.pack(value)


def decode_u32(payload: bytes | memoryview) -> int:
    if len(payload) != 4:
        raise FrameError("expected a 4-byte value")
    return _U32.unpack(payload)[0]


def encode_u64(value: int) -> bytes:
    return _U64.pack(value)


def decode_u64(payload: bytes | memoryview) -> int:
    if len(payload) != 8:
        raise FrameError("expected an 8-byte value")
    return _U64.unpack(payload)[0]


def text(payload: bytes | memoryview) -> str:
    return bytes(payload).decode("utf-8", "replace")
