"""Sealed datagrams: AEAD per UDP datagram, a replay window, and a key that moves on (the KCP transport's armour).

Every datagram of an established KCP session is AES-256-GCM sealed with the session's key for its direction
(derived in the identity handshake, ``handshake``), so a forged, altered or replayed datagram is dropped before
KCP sees it. Layout (integers big-endian)::

    offset  size  field
    0       1     type (DATA, BYE, READY: see ``transports.kcp``)
    1       1     key epoch (low 8 bits)
    2       1     loss the sender observed on the other direction, in units of 1/256 (FEC feedback)
    3       1     reserved (0)
    4       4     receiver's session index (finds the session without trusting the source address)
    8       8     counter (never repeats within a session: the AEAD nonce is epoch . 0 0 0 . counter)
    16      n+16  ciphertext and tag; the 16-byte header is the associated data

Why a counter nonce and a window (as WireGuard): AES-GCM must never see a nonce twice under one key, and
KCP may legitimately reorder datagrams. The window (2048 counters) accepts a counter once, and only after its tag
verified, so a forger cannot poison it.

Rekeying: every ``REKEY_PACKETS`` datagrams or ``REKEY_SECONDS`` (whichever comes first) the sender moves to the
next epoch, key_{e+1} = HKDF(key_e): old keys are forgotten (a key learnt later opens nothing sent before), and no
key seals more than 2^22 datagrams, far inside AES-GCM's safe use (TLS 1.3 allows 2^24.5 records). The receiver
keeps the previous epoch's key for stragglers until the next move.
"""

from __future__ import annotations

import struct
import time

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

HEADER = struct.Struct("!BBBxIQ")
HEADER_SIZE = HEADER.size
TAG_SIZE = 16
OVERHEAD = HEADER_SIZE + TAG_SIZE
WINDOW = 2048
REKEY_PACKETS = 1 << 22
REKEY_SECONDS = 120.0
_RATCHET_INFO = b"arctic/kcp/rekey/v1"


def next_key(key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_RATCHET_INFO).derive(key)


def _nonce(epoch: int, counter: int) -> bytes:
    return bytes((epoch & 0xFF, 0, 0, 0)) + counter.to_bytes(8, "big")


class ReplayWindow:
    """Counters seen lately (a sliding bitmap in one int): ``fresh`` has no side effect, ``seen`` records."""

    __slots__ = ("top", "bits")

    def __init__(self) -> None:
        self.top = 0
        self.bits = 0

    def fresh(self, counter: int) -> bool:
        if counter > self.top:
            return True
        distance = self.top - counter
        return distance < WINDOW and not (self.bits >> distance) & 1

    def seen(self, counter: int) -> None:
        if counter > self.top:
            shift = counter - self.top
            self.bits = ((self.bits << shift) | 1) & ((1 << WINDOW) - 1) if shift < WINDOW else 1
            self.top = counter
        else:
            self.bits |= 1 << (self.top - counter)


class Sealer:
    """The sending half: seals datagrams for the peer's session index, rekeying as it goes."""

    def __init__(self, key: bytes, peer_index: int) -> None:
        self._aead = AESGCM(key)
        self._key = key
        self.peer_index = peer_index
        self.epoch = 0
        self.counter = 0
        self._epoch_start = 0
        self._epoch_time = time.monotonic()
        self.loss_report = 0  # set by the receiving half: loss seen on the other direction (x/256)

    def seal(self, dtype: int, payload: bytes | memoryview) -> bytes:
        self.counter += 1
        if self.counter - self._epoch_start >= REKEY_PACKETS or (
                self.counter & 0x3FF == 0 and time.monotonic() - self._epoch_time >= REKEY_SECONDS):
            self._rekey()
        header = HEADER.pack(dtype, self.epoch & 0xFF, self.loss_report, self.peer_index, self.counter)
        return header + self._aead.encrypt(_nonce(self.epoch, self.counter), payload, header)

    def _rekey(self) -> None:
        self._key = next_key(self._key)
        self._aead = AESGCM(self._key)
        self.epoch += 1
        self._epoch_start = self.counter
        self._epoch_time = time.monotonic()


class Opener:
    """The receiving half: opens datagrams sealed by the peer, following its epochs; counts what it drops."""

    def __init__(self, key: bytes) -> None:
        self._keys = {0: AESGCM(key)}  # epoch -> cipher: the current one and its predecessor
        self._raw = {0: key}
        self.epoch = 0
        self.window = ReplayWindow()
        self.dropped = {"forged": 0, "replayed": 0, "malformed": 0}

    def open(self, datagram: bytes) -> tuple[int, int, bytes] | None:
        """(type, loss report, plaintext), or None when the datagram must be dropped (counted)."""
        if len(datagram) < OVERHEAD:
            self.dropped["malformed"] += 1
            return None
        dtype, epoch_low, loss, _index, counter = HEADER.unpack_from(datagram)
        if not self.window.fresh(counter):
            self.dropped["replayed"] += 1
            return None
        epoch = self._epoch_of(epoch_low)
        cipher = self._cipher(epoch)
        if cipher is None:
            self.dropped["forged"] += 1
            return None
        try:
            plaintext = cipher.decrypt(_nonce(epoch, counter), memoryview(datagram)[HEADER_SIZE:],
                                       datagram[:HEADER_SIZE])
        except InvalidTag:
            self.dropped["forged"] += 1
            return None
        self.window.seen(counter)
        if epoch > self.epoch:
            self._advance(epoch)
        return dtype, loss, plaintext

    def _epoch_of(self, low: int) -> int:
        """The full epoch a low byte names: the current one, the previous one, or the next one."""
        for candidate in (self.epoch, self.epoch + 1, self.epoch - 1):
            if candidate >= 0 and candidate & 0xFF == low:
                return candidate
        return -1

    def _cipher(self, epoch: int) -> AESGCM | None:
        if epoch < 0:
            return None
        cipher = self._keys.get(epoch)
        if cipher is None and epoch == self.epoch + 1:
            raw = next_key(self._raw[self.epoch])
            cipher = AESGCM(raw)
            self._keys[epoch], self._raw[epoch] = cipher, raw
        return cipher

    def _advance(self, epoch: int) -> None:
        self.epoch = epoch
        for old in [e for e in self._keys if e < epoch - 1]:  # forget everything older than the previous key
            del self._keys[old]
            del self._raw[old]
