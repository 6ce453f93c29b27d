"""A blocking, hand-driven session client for lab tests: speaks the data plane's wire protocol frame by frame.

Built on the data plane's own sans-IO pieces (``handshake``, ``frames``), so a test can play a peer that does
exactly what the test wants: a rogue identity, a forged signature, a replayed handshake, a bad MAC, a stream the
session's peer may not open. Nothing here is used by the product.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

from arctic.dataplane import frames, handshake, tls
from arctic.dataplane.handshake import ClientHandshake, ControlMac, Hello
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

WINDOW = 256 * 1024


@dataclass
class Identity:
    peer_id: str
    key: Ed25519PrivateKey

    @property
    def public_raw(self) -> bytes:
        return tls.raw_public_key(self.key)


class SessionRejected(Exception):
    """The target refused the session (REJECT, a TLS failure, or it closed the connection)."""


class RawSession:
    """One session from ``me`` to ``target`` over ``sock`` (already connected to the tunnel port)."""

    def __init__(self, sock: socket.socket, me: Identity, target: Identity, *, service_id: str, encrypted: bool,
                 slot: int = 0, tls_identity: Identity | None = None) -> None:
        self.raw_sock = sock
        self.me, self.target, self.service_id = me, target, service_id
        self.sock: socket.socket = sock
        if encrypted:
            ctx = tls.client_context((tls_identity or me).key, target.public_raw)
            try:
                self.sock = ctx.wrap_socket(sock, server_hostname=tls.PEER_NAME)
            except (ssl.SSLError, OSError) as err:
                raise SessionRejected(f"TLS: {err}") from None
        self.encrypted = encrypted
        self.hs = ClientHandshake(me.key, Hello(client_peer_id=me.peer_id, server_peer_id=target.peer_id,
                                                service_id=service_id, slot=slot, window=WINDOW),
                                  target.public_raw)
        self.buffer = b""
        self.mac: ControlMac | None = None
        self.sent_hello = self.hs.first_message
        self.sent_confirm = b""

    # --- handshake -------------------------------------------------------------------------------------------------

    def _recv(self) -> bytes:
        try:
            data = self.sock.recv(1 << 16)
        except (ssl.SSLError, OSError) as err:
            raise SessionRejected(f"connection failed: {err}") from None
        if not data:
            raise SessionRejected("the target closed the connection")
        return data

    def handshake(self, *, tamper_confirm: bool = False) -> None:
        self.sock.sendall(self.sent_hello)
        answer = self.read_handshake_message()
        try:
            confirm = self.hs.on_answer(*answer)
        except handshake.HandshakeError as err:
            raise SessionRejected(str(err)) from None
        if tamper_confirm:
            confirm = confirm[:-1] + bytes([confirm[-1] ^ 1])
        self.sent_confirm = confirm
        self.sock.sendall(confirm)
        assert self.hs.keys is not None
        if not self.encrypted:
            self.mac = handshake.control_mac(self.hs.keys, client=True)

    def read_handshake_message(self) -> tuple[int, bytes]:
        while True:
            message = handshake.split_message(self.buffer)
            if message is not None:
                mtype, body, self.buffer = message
                return mtype, body
            self.buffer += self._recv()

    # --- frames --------------------------------------------------------------------------------------------------

    def control(self, ftype: int, sid: int, payload: bytes = b"") -> bytes:
        """A control frame as the real client would seal it (the caller may tamper with it before sending)."""
        if self.mac is None:
            return frames.frame(ftype, sid, payload)
        body = frames.header(ftype, sid, len(payload) + handshake.MAC_SIZE) + payload
        return body + self.mac.seal(body)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def open(self, sid: int, *, dst: tuple[str, int], src: tuple[str, int] = ("10.0.0.2", 40000),
             service_id: str | None = None) -> bytes:
        opening = frames.Open(service_id=service_id or self.service_id, src=src, dst=dst)
        frame = self.control(frames.OPEN, sid, frames.encode_open(opening))
        self.send(frame)
        return frame

    def read_frame(self) -> tuple[int, int, bytes]:
        """The next frame other than PING/PONG (answered or ignored); raises SessionRejected when the session ends."""
        while True:
            while len(self.buffer) < frames.HEADER_SIZE:
                self.buffer += self._recv()
            word, sid = frames.HEADER.unpack_from(self.buffer)
            ftype, length = word >> 24, word & 0xFFFFFF
            while len(self.buffer) < frames.HEADER_SIZE + length:
                self.buffer += self._recv()
            payload = self.buffer[frames.HEADER_SIZE : frames.HEADER_SIZE + length]
            self.buffer = self.buffer[frames.HEADER_SIZE + length :]
            if ftype != frames.DATA and self.mac is not None:
                payload = payload[: -handshake.MAC_SIZE]
                self.mac._recv_seq += 1  # the target's frames are trusted here; keep the sequence in step
            if ftype == frames.PING:
                self.send(self.control(frames.PONG, 0, payload))
                continue
            if ftype == frames.PONG:
                continue
            return ftype, sid, payload

    def verdict(self, sid: int) -> tuple[str, str]:
        """``("ok", "")`` or ``("refused", reason)`` for stream ``sid``."""
        while True:
            ftype, got, payload = self.read_frame()
            if got != sid:
                continue
            if ftype == frames.OK:
                return "ok", ""
            if ftype == frames.REFUSE:
                return "refused", frames.decode_refuse(payload)[0]
            if ftype == frames.RST:
                return "reset", payload.decode(errors="replace")

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            self.raw_sock.close()
