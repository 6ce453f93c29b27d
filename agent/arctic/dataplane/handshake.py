"""Opening a session: a mutual identity handshake bound to the peers' Ed25519 keys, with forward secrecy.

Sans-IO, so the data plane, the KCP transport and the tests run the very same code. Three messages, in the
SIGMA shape (sign-and-MAC key exchange; every message is ``MAGIC type length body``)::

    client -> server  HELLO    ephemeral X25519 key, nonce, receive window, slot, wanted worker,
                               client peer id, server peer id, service id
    server -> client  ACCEPT   ephemeral X25519 key, nonce, receive window, session token, server peer id,
                               Ed25519 signature over (HELLO, ACCEPT without the signature)
    client -> server  CONFIRM  Ed25519 signature over (HELLO, ACCEPT)

or ``server -> client REJECT reason``. Why this shape:

* *Mutual, per session*: each side signs a transcript that contains the other side's fresh ephemeral key and
  nonce, so a recorded handshake cannot be played again and neither side can be impersonated without its key.
  The cost (two signatures, two verifications, one X25519) is paid once per session, not per connection.
* *Identity before anything else*: the server answers only a HELLO from a configured peer that names this
  peer as its target; anything else gets a REJECT the size of a short reason and no signature (no oracle).
* *Spread over the target's workers*: the kernel hands each incoming connection to one worker process of the
  target at random (SO_REUSEPORT). The HELLO names the worker it wants (``want`` modulo the target's worker
  count; 255 = any); another worker answers REJECT ``wrong_worker`` before any signature, and the client dials
  again. So the sessions of a source's workers land on distinct target workers and use every CPU there.
* *Forward secrecy*: the session keys come from the ephemeral X25519 secret (HKDF-SHA256, salted with the
  transcript hash), so a stolen identity key does not open recorded sessions.
* *Keys for what TLS would otherwise do*: ``SessionKeys`` has one MAC key per direction (``ControlMac``: in
  ``encryption: none`` every control frame is authenticated with it) and a lane key (``lanes``), so a plaintext
  session still lets nobody on the link open, refuse, reset or redirect a stream.

Inside TLS the same handshake runs too (one code path); the TLS certificate's key must then be the same key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"ARC2"
PREFIX = struct.Struct("!4sBH")  # magic, message type, body length
HELLO, ACCEPT, CONFIRM, REJECT, LANE, LANE_OK = 1, 2, 3, 4, 5, 6
MAX_BODY = 1024
NONCE_SIZE = 16
TOKEN_SIZE = 16
SIG_SIZE = 64
MAC_SIZE = 16
CLIENT_CONTEXT = b"arctic/session/client/v2\x00"
SERVER_CONTEXT = b"arctic/session/server/v2\x00"
KEY_INFO = b"arctic/session/keys/v2"
_WINDOW_SLOT = struct.Struct("!IBB")  # receive window, slot, wanted worker (ACCEPT: window, slot, worker)
ANY_WORKER = 255
_SEQ = struct.Struct("!Q")

# Why a server rejects (stable names for logs and stats; the client logs them as tunnel_auth_failed).
REJECT_REASONS = ("unknown_peer", "wrong_target", "bad_signature", "malformed", "draining", "wrong_worker")


class HandshakeError(Exception):
    """The handshake failed; ``reason`` is a stable stats key, the message says what happened."""

    def __init__(self, message: str, reason: str = "tunnel_auth_failed") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class SessionKeys:
    client_to_server: bytes
    server_to_client: bytes
    lane: bytes


@dataclass(frozen=True)
class Hello:
    """What the client asked for (the server reads it to decide, and to set up the session)."""

    client_peer_id: str
    server_peer_id: str
    service_id: str
    slot: int
    window: int
    want: int = ANY_WORKER  # which of the target's workers should hold the session (modulo their count)


def message(mtype: int, body: bytes) -> bytes:
    if len(body) > MAX_BODY:
        raise ValueError(f"handshake body of {len(body)} bytes is larger than {MAX_BODY}")
    return PREFIX.pack(MAGIC, mtype, len(body)) + body


def read_prefix(data: bytes) -> tuple[int, int]:
    """(message type, body length) of a message whose first PREFIX.size bytes are ``data``."""
    magic, mtype, length = PREFIX.unpack(data[: PREFIX.size])
    if magic != MAGIC:
        raise HandshakeError("not an Arctic session (bad magic)", "malformed")
    if length > MAX_BODY:
        raise HandshakeError(f"handshake message of {length} bytes", "malformed")
    return mtype, length


def split_message(buffer: bytes) -> tuple[int, bytes, bytes] | None:
    """``(type, body, rest)`` once ``buffer`` holds one whole message, else None (read more)."""
    if len(buffer) < PREFIX.size:
        return None
    mtype, length = read_prefix(buffer)
    end = PREFIX.size + length
    if len(buffer) < end:
        return None
    return mtype, buffer[PREFIX.size : end], buffer[end:]


def _lp(text: str) -> bytes:
    raw = text.encode("ascii")
    if not 0 < len(raw) < 256:
        raise ValueError("identifiers are 1-255 ASCII characters")
    return bytes([len(raw)]) + raw


def _read_lp(body: bytes, pos: int) -> tuple[str, int]:
    n = body[pos]
    raw = body[pos + 1 : pos + 1 + n]
    if n == 0 or len(raw) != n:
        raise HandshakeError("truncated identifier", "malformed")
    try:
        return raw.decode("ascii"), pos + 1 + n
    except UnicodeDecodeError:
        raise HandshakeError("identifier is not ASCII", "malformed") from None


def _x25519_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _derive(shared: bytes, transcript: bytes) -> SessionKeys:
    okm = HKDF(algorithm=hashes.SHA256(), length=96, salt=hashlib.sha256(transcript).digest(),
               info=KEY_INFO).derive(shared)
    return SessionKeys(client_to_server=okm[:32], server_to_client=okm[32:64], lane=okm[64:])


def _verify(public_key: bytes, signature: bytes, data: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


class ClientHandshake:
    """The side that opens the session (the service's source peer)."""

    def __init__(self, key: Ed25519PrivateKey, hello: Hello, server_public_key: bytes) -> None:
        self._key = key
        self.hello = hello
        self._server_key = server_public_key
        self._ephemeral = X25519PrivateKey.generate()
        body = (_x25519_public(self._ephemeral) + os.urandom(NONCE_SIZE)
                + _WINDOW_SLOT.pack(hello.window, hello.slot, hello.want) + _lp(hello.client_peer_id)
                + _lp(hello.server_peer_id) + _lp(hello.service_id))
        self.first_message = message(HELLO, body)
        self.keys: SessionKeys | None = None
        self.token = b""
        self.peer_window = 0

    def on_answer(self, mtype: int, body: bytes) -> bytes:
        """Check the server's ACCEPT (or REJECT); returns the CONFIRM to send. Raises HandshakeError."""
        if mtype == REJECT:
            reason = body.decode("utf-8", "replace")[:200]
            if reason == "wrong_worker":
                raise HandshakeError("another worker of the target answered", "wrong_worker")
            raise HandshakeError(f"the target peer rejected the session: {reason}")
        if mtype != ACCEPT:
            raise HandshakeError(f"unexpected handshake message type {mtype}", "malformed")
        try:
            eph = body[:32]
            window, _slot, _worker = _WINDOW_SLOT.unpack_from(body, 32 + NONCE_SIZE)
            pos = 32 + NONCE_SIZE + _WINDOW_SLOT.size
            token = body[pos : pos + TOKEN_SIZE]
            peer_id, pos = _read_lp(body, pos + TOKEN_SIZE)
            signed, signature = body[:pos], body[pos:]
        except (struct.error, IndexError):
            raise HandshakeError("malformed ACCEPT", "malformed") from None
        if peer_id != self.hello.server_peer_id:
            raise HandshakeError(f"the answer came from {peer_id}, not {self.hello.server_peer_id}")
        accept_prefix = PREFIX.pack(MAGIC, ACCEPT, len(body))
        if len(signature) != SIG_SIZE or len(token) != TOKEN_SIZE or not _verify(
                self._server_key, signature, SERVER_CONTEXT + self.first_message + accept_prefix + signed):
            raise HandshakeError(f"{peer_id}'s signature does not verify with its configured key")
        transcript = self.first_message + accept_prefix + body
        try:
            shared = self._ephemeral.exchange(X25519PublicKey.from_public_bytes(eph))
        except ValueError:
            raise HandshakeError("bad ephemeral key", "malformed") from None
        self.keys, self.token, self.peer_window = _derive(shared, transcript), token, window
        return message(CONFIRM, self._key.sign(CLIENT_CONTEXT + transcript))


class ServerHandshake:
    """The side that accepts (the target peer). ``peer_key(peer_id)`` returns a configured peer's key or None."""

    def __init__(self, key: Ed25519PrivateKey, local_peer_id: str, peer_key: Callable[[str], bytes | None],
                 window: int, token: bytes, *, worker: int = 0, workers: int = 1) -> None:
        self._key = key
        self._worker, self._workers = worker, workers
        self._local = local_peer_id
        self._peer_key = peer_key
        self._window = window
        self._token = token
        self._ephemeral = X25519PrivateKey.generate()
        self.hello: Hello | None = None
        self.keys: SessionKeys | None = None
        self.peer_window = 0
        self._transcript = b""
        self._client_key = b""
        self._shared = b""

    def on_hello(self, mtype: int, body: bytes) -> bytes:
        """Answer a HELLO with ACCEPT; raises HandshakeError (send ``reject(err)``) when it must be refused."""
        if mtype != HELLO:
            raise HandshakeError(f"expected HELLO, got message type {mtype}", "malformed")
        try:
            eph = body[:32]
            window, slot, want = _WINDOW_SLOT.unpack_from(body, 32 + NONCE_SIZE)
            pos = 32 + NONCE_SIZE + _WINDOW_SLOT.size
            client_id, pos = _read_lp(body, pos)
            server_id, pos = _read_lp(body, pos)
            service_id, pos = _read_lp(body, pos)
        except (struct.error, IndexError):
            raise HandshakeError("malformed HELLO", "malformed") from None
        if pos != len(body) or len(eph) != 32:
            raise HandshakeError("malformed HELLO", "malformed")
        client_key = self._peer_key(client_id)
        if client_key is None:
            raise HandshakeError(f"{client_id} is not a configured peer", "unknown_peer")
        if server_id != self._local:
            raise HandshakeError(f"the session is for {server_id}, this is {self._local}", "wrong_target")
        if want != ANY_WORKER and self._workers > 1 and want % self._workers != self._worker:
            raise HandshakeError(f"worker {want % self._workers} is wanted, this is {self._worker}", "wrong_worker")
        try:
            self._shared = self._ephemeral.exchange(X25519PublicKey.from_public_bytes(eph))
        except ValueError:
            raise HandshakeError("bad ephemeral key", "malformed") from None
        self.hello = Hello(client_peer_id=client_id, server_peer_id=server_id, service_id=service_id, slot=slot,
                           window=window, want=want)
        self.peer_window = window
        self._client_key = client_key
        signed = (_x25519_public(self._ephemeral) + os.urandom(NONCE_SIZE)
                  + _WINDOW_SLOT.pack(self._window, slot, self._worker) + self._token + _lp(self._local))
        hello_message = message(HELLO, body)
        accept_prefix = PREFIX.pack(MAGIC, ACCEPT, len(signed) + SIG_SIZE)
        signature = self._key.sign(SERVER_CONTEXT + hello_message + accept_prefix + signed)
        accept = accept_prefix + signed + signature
        self._transcript = hello_message + accept
        return accept

    def on_confirm(self, mtype: int, body: bytes) -> SessionKeys:
        if mtype != CONFIRM or self.hello is None:
            raise HandshakeError(f"expected CONFIRM, got message type {mtype}", "malformed")
        if not _verify(self._client_key, body, CLIENT_CONTEXT + self._transcript):
            raise HandshakeError(f"{self.hello.client_peer_id}'s signature does not verify", "bad_signature")
        self.keys = _derive(self._shared, self._transcript)
        return self.keys


def reject(reason: str) -> bytes:
    return message(REJECT, reason.encode("utf-8", "replace")[:200])


class ControlMac:
    """Authenticates control frames in ``encryption: none`` (BLAKE2b-128, keyed per direction).

    The MAC covers an implicit per-direction sequence number, so a control frame cannot be dropped, reordered
    or replayed without the next check failing; a failure ends the session.
    """

    __slots__ = ("_send", "_recv", "_send_seq", "_recv_seq")

    def __init__(self, send_key: bytes, recv_key: bytes) -> None:
        # keyed once; each MAC copies the keyed state (cheaper than keying again: one compression less)
        self._send = hashlib.blake2b(key=send_key, digest_size=MAC_SIZE)
        self._recv = hashlib.blake2b(key=recv_key, digest_size=MAC_SIZE)
        self._send_seq = self._recv_seq = 0

    def seal(self, header_and_payload: bytes) -> bytes:
        self._send_seq += 1
        mac = self._send.copy()
        mac.update(_SEQ.pack(self._send_seq))
        mac.update(header_and_payload)
        return mac.digest()

    def verify(self, header_and_payload: bytes, mac: bytes) -> bool:
        self._recv_seq += 1
        expected = self._recv.copy()
        expected.update(_SEQ.pack(self._recv_seq))
        expected.update(header_and_payload)
        return hmac.compare_digest(expected.digest(), mac)


def control_mac(keys: SessionKeys, *, client: bool) -> ControlMac:
    if client:
        return ControlMac(keys.client_to_server, keys.server_to_client)
    return ControlMac(keys.server_to_client, keys.client_to_server)


def lane_proof(lane_key: bytes, token: bytes, stream_id: int, lane_id: int) -> bytes:
    """What a lane's first message carries to prove it belongs to stream ``stream_id`` of the session ``token``
    names: only the two ends of that session hold its lane key (``lanes``)."""
    return hashlib.blake2b(token + struct.pack("!IQ", stream_id, lane_id), key=lane_key,
                           digest_size=MAC_SIZE).digest()
