"""Reed-Solomon forward error correction for KCP datagrams (zfec), and the loss estimate that drives it.

Why: on a lossy long path an ARQ waits at least one round trip to repair a loss, and KCP's window stays pinned
behind the hole meanwhile; ``m`` parity shards per ``k`` data shards let the receiver rebuild up to ``m`` lost
datagrams of a group at once. The layout is kcp-go's (so it can be read next to kcptun)::

    data shard    seqid u32 | flag u16 = 0xF1 | size u16 (= 2 + len(packet)) | KCP packet
    parity shard  seqid u32 | flag u16 = 0xF2 | Reed-Solomon parity over the group's [size | packet | zero pad]

(little-endian). Shard ``seqid % (k+m)`` is its index in group ``seqid // (k+m)``; indices below ``k`` are data.
Data shards go to KCP at once; when a group has ``k`` shards but misses data, the missing data is rebuilt and
fed too. Groups more than ``KEEP`` behind the newest are forgotten.

Adaptive parity (``mode="auto"``): parity costs ``m/k`` more datagrams (30 % at 10+3), which only pays when
datagrams are actually lost. The receiver estimates the loss it sees from the data shards' sequence numbers
(``LossMeter``) and reports it back in every sealed datagram's header; the sender adds parity while that
report is at least ``AUTO_ON`` and stops below ``AUTO_OFF`` (hysteresis). ``bench/kcp`` measures fixed 10+3
against auto against none.
"""

from __future__ import annotations

import struct
import time

import zfec

DATA_FLAG, PARITY_FLAG = 0xF1, 0xF2
_DATA = struct.Struct("<IHH")
_PARITY = struct.Struct("<IH")
HEADER_SIZE = _DATA.size
KEEP = 3
AUTO_ON = 0.01  # loss at which auto mode starts sending parity
AUTO_OFF = 0.003
STALE_GROUP = 0.2  # seconds: a group that waits longer for its last data shard is sent without parity


class FecEncoder:
    """Wraps each KCP packet as a data shard; every ``k`` data shards, ``m`` parity shards follow (if wanted)."""

    def __init__(self, k: int, m: int, mode: str = "on") -> None:
        self.k, self.m, self.n = k, m, k + m
        self.mode = mode  # "on" | "auto" | "off"
        self._encoder = zfec.Encoder(k, self.n)
        self._parity_ids = tuple(range(k, self.n))
        self._wrap = (0xFFFFFFFF // self.n) * self.n
        self.next = 0
        self._shards: list[memoryview] = []
        self._longest = 0
        self._last = time.monotonic()
        self.parity_on = mode == "on"
        self.parity_sent = 0

    def observe_loss(self, loss: float) -> None:
        """The peer's report of the loss on our direction (auto mode switches parity with it)."""
        if self.mode == "auto":
            if loss >= AUTO_ON:
                self.parity_on = True
            elif loss < AUTO_OFF:
                self.parity_on = False

    def encode(self, packet: bytes) -> list[bytes]:
        size = len(packet) + 2
        shard = _DATA.pack(self.next, DATA_FLAG, size) + packet
        out = [shard]
        now = time.monotonic()
        if self.mode == "off":
            self.next = (self.next + 1) % self._wrap
            if self.next % self.n == self.k:
                self.next = (self.next + self.m) % self._wrap  # keep groups aligned: indices >= k are parity
            return out
        self.next = (self.next + 1) % self._wrap
        self._shards.append(memoryview(shard)[6:])
        self._longest = max(self._longest, size)
        if len(self._shards) == self.k:
            if self.parity_on and now - self._last < STALE_GROUP:
                longest = self._longest
                blocks = [b if len(b) == longest else bytes(b) + bytes(longest - len(b)) for b in self._shards]
                for parity in self._encoder.encode(blocks, self._parity_ids):
                    out.append(_PARITY.pack(self.next, PARITY_FLAG) + parity)
                    self.next = (self.next + 1) % self._wrap
                    self.parity_sent += 1
            else:
                self.next = (self.next + self.m) % self._wrap
            self._shards = []
            self._longest = 0
        self._last = now
        return out


class LossMeter:
    """Loss of data shards seen on this direction, over windows of ``SAMPLE`` expected shards (smoothed)."""

    SAMPLE = 512

    def __init__(self, k: int, m: int) -> None:
        self.k, self.n = k, k + m
        self._start: int | None = None
        self._highest = 0
        self._received = 0
        self.loss = 0.0

    def _position(self, seqid: int) -> int:
        """How many data shards precede ``seqid`` (parity positions do not count)."""
        group, index = divmod(seqid, self.n)
        return group * self.k + min(index, self.k)

    def data_shard(self, seqid: int) -> None:
        position = self._position(seqid)
        if self._start is None or position < self._start:
            self._start, self._highest, self._received = position, position, 0
        self._received += 1
        self._highest = max(self._highest, position + 1)
        expected = self._highest - self._start
        if expected >= self.SAMPLE:
            sample = max(0.0, 1.0 - self._received / expected)
            self.loss = sample if self.loss == 0.0 else 0.7 * self.loss + 0.3 * sample
            self._start, self._received = self._highest, 0

    def report(self) -> int:
        """The loss as one byte (x/256), for the header of the next sealed datagram."""
        return min(255, int(self.loss * 256 + 0.5))


class FecDecoder:
    """Data shards out at once; missing data rebuilt when a group has ``k`` shards."""

    def __init__(self, k: int, m: int) -> None:
        self.k, self.m, self.n = k, m, k + m
        self._decoder = zfec.Decoder(k, self.n)
        self._groups: dict[int, dict[int, memoryview]] = {}
        self._done: set[int] = set()
        self._newest = 0
        self.recovered = 0
        self.meter = LossMeter(k, m)

    def decode(self, datagram: bytes) -> list[memoryview]:
        """The KCP packets in ``datagram`` (a shard): its own if data, plus any it lets us rebuild."""
        if len(datagram) < 6:
            return []
        seqid, flag = _PARITY.unpack_from(datagram)
        view = memoryview(datagram)
        out: list[memoryview] = []
        if flag == DATA_FLAG:
            if len(datagram) < HEADER_SIZE:
                return []
            size = int.from_bytes(datagram[6:8], "little")
            if not 2 <= size <= len(datagram) - 6:
                return []
            out.append(view[8 : 6 + size])
            self.meter.data_shard(seqid)
        elif flag != PARITY_FLAG:
            return []
        group, index = divmod(seqid, self.n)
        if group in self._done:
            return out
        shards = self._groups.get(group)
        if shards is None:
            shards = self._groups[group] = {}
            if group > self._newest:
                self._newest = group
                for old in [g for g in self._groups if g < group - KEEP]:
                    del self._groups[old]
                if len(self._done) > 256:
                    self._done = {g for g in self._done if g >= group - 64}
        shards[index] = view[6:]
        if len(shards) >= self.k:
            if sum(1 for i in shards if i < self.k) < self.k:
                out.extend(self._rebuild(shards))
            del self._groups[group]
            self._done.add(group)
        return out

    def _rebuild(self, shards: dict[int, memoryview]) -> list[memoryview]:
        chosen = sorted(shards.items())[: self.k]
        longest = max(len(b) for _, b in chosen)
        blocks = [b if len(b) == longest else bytes(b) + bytes(longest - len(b)) for _, b in chosen]
        try:
            rebuilt = self._decoder.decode(blocks, [i for i, _ in chosen])
        except (ValueError, zfec.Error):
            return []
        out = []
        for index in range(self.k):
            if index not in shards and index < len(rebuilt):
                block = rebuilt[index]
                size = int.from_bytes(block[:2], "little")
                if 2 <= size <= len(block):
                    out.append(memoryview(block)[2:size])
                    self.recovered += 1
        return out
