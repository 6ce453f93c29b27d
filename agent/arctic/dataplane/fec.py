"""Reed-Solomon forward error correction for KCP datagrams (zfec), and the loss estimate that drives it.

Why: on a lossy long path an ARQ waits at least one round trip to repair a loss, and KCP's window stays pinned
behind the hole meanwhile; ``m`` parity shards per ``k`` data shards let the receiver rebuild up to ``m`` lost
datagrams of a group at once. The layout is kcp-go's (so it can be read next to kcptun)::

    data shard    seqid u32 | flag u16 = 0xF1 | size u16 (= 2 + len(packet)) | KCP packet
    parity shard  seqid u32 | flag u16 = 0xF2 | Reed-Solomon parity over the group's [size | packet | zero pad]

    short parity  seqid u32 | flag u16 = 0xF3 | count u16 | parity over the group's first ``count`` data shards

(little-endian). Shard ``seqid % (k+m)`` is its index in group ``seqid // (k+m)``; indices below ``k`` are data.
Data shards go to KCP at once; when a group has ``k`` shards but misses data, the missing data is rebuilt and
fed too. Groups more than ``KEEP`` behind the newest are forgotten.

Short groups (our extension): parity only comes after ``k`` data shards, so a small message sent when nothing
follows it would have none, and its loss would cost a retransmission timeout: the tail latency of interactive
traffic on a lossy path. When the sender has nothing more queued (``flush_partial``), the open group is closed
early: its parity is computed as if the missing data shards were empty (all zeros), and says how many data
shards the group really has. The receiver rebuilds from any ``count`` of the group's shards, the empty ones
being known. A one-packet message then travels with ``m`` parity copies of itself.

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

DATA_FLAG, PARITY_FLAG, SHORT_PARITY_FLAG = 0xF1, 0xF2, 0xF3
_DATA = struct.Struct("<IHH")
_PARITY = struct.Struct("<IH")
_SHORT = struct.Struct("<IHH")
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
        self.groups_closed_early = 0

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
                out += self._parity(PARITY_FLAG)
            else:
                self.next = (self.next + self.m) % self._wrap
            self._shards = []
            self._longest = 0
        self._last = now
        return out

    def flush_partial(self) -> list[bytes]:
        """Close the open group now, with its parity (short parity), if parity is on and the group has data.

        Called when the sender has nothing more to send for now: the group would otherwise wait for shards that
        are not coming, and its data would travel unprotected."""
        if not self._shards or not self.parity_on:
            return []
        out = self._parity(SHORT_PARITY_FLAG)
        self.groups_closed_early += 1
        self._shards = []
        self._longest = 0
        return out

    def _parity(self, flag: int) -> list[bytes]:
        """The ``m`` parity shards of the open group (missing data shards count as empty); moves ``next`` to the
        start of the following group."""
        count, longest = len(self._shards), self._longest
        blocks = [b if len(b) == longest else bytes(b) + bytes(longest - len(b)) for b in self._shards]
        blocks += [bytes(longest)] * (self.k - count)
        group_start = (self.next - count) % self._wrap  # the open group's data shards are its first ``count``
        out = []
        for index, parity in zip(self._parity_ids, self._encoder.encode(blocks, self._parity_ids), strict=True):
            seqid = (group_start + index) % self._wrap
            if flag == SHORT_PARITY_FLAG:
                out.append(_SHORT.pack(seqid, flag, count) + parity)
            else:
                out.append(_PARITY.pack(seqid, flag) + parity)
            self.parity_sent += 1
        self.next = (group_start + self.n) % self._wrap
        return out


class LossMeter:
    """Loss of data shards seen on this direction, over windows of ``SAMPLE`` expected shards (smoothed), or
    of at least ``SAMPLE_MIN`` shards once ``SAMPLE_SECONDS`` have passed: sparse traffic (small messages, which
    need parity the most) would otherwise wait many seconds for its first estimate."""

    SAMPLE = 512
    SAMPLE_MIN = 64
    SAMPLE_SECONDS = 1.0

    def __init__(self, k: int, m: int) -> None:
        self.k, self.n = k, k + m
        self._start: int | None = None
        self._highest = 0
        self._received = 0
        self._empty = 0
        self._since = time.monotonic()
        self.loss = 0.0

    def _position(self, seqid: int) -> int:
        """How many data shards precede ``seqid`` (parity positions do not count)."""
        group, index = divmod(seqid, self.n)
        return group * self.k + min(index, self.k)

    def data_shard(self, seqid: int) -> None:
        position = self._position(seqid)
        if self._start is None or position < self._start:
            self._start, self._highest, self._received, self._empty = position, position, 0, 0
        self._received += 1
        self._highest = max(self._highest, position + 1)
        expected = self._highest - self._start - self._empty
        if expected >= self.SAMPLE or (
                expected >= self.SAMPLE_MIN and time.monotonic() - self._since >= self.SAMPLE_SECONDS):
            sample = max(0.0, 1.0 - self._received / expected)
            self.loss = sample if self.loss == 0.0 else 0.7 * self.loss + 0.3 * sample
            self._start, self._received, self._empty = self._highest, 0, 0
            self._since = time.monotonic()

    def empty_shards(self, count: int) -> None:
        """A short group's data positions that were never sent: neither expected nor lost."""
        self._empty += count

    def report(self) -> int:
        """The loss as one byte (x/256), for the header of the next sealed datagram."""
        return min(255, int(self.loss * 256 + 0.5))


class FecDecoder:
    """Data shards out at once; missing data rebuilt when a group has as many shards as it has data shards."""

    def __init__(self, k: int, m: int) -> None:
        self.k, self.m, self.n = k, m, k + m
        self._decoder = zfec.Decoder(k, self.n)
        self._groups: dict[int, dict[int, memoryview]] = {}
        self._counts: dict[int, int] = {}  # data shards of the short groups seen
        self._done: set[int] = set()
        self._newest = 0
        self.recovered = 0
        self.meter = LossMeter(k, m)

    def decode(self, datagram: bytes) -> tuple[memoryview | None, list[memoryview]]:
        """The KCP packets in ``datagram`` (a shard): its own if it is a data shard, and the ones it lets us
        rebuild. They are kept apart because a rebuilt packet arrives late: its timestamps must not be taken for
        round-trip samples (``transports.kcp``)."""
        if len(datagram) < 6:
            return None, []
        seqid, flag = _PARITY.unpack_from(datagram)
        group, index = divmod(seqid, self.n)
        view = memoryview(datagram)
        own = None
        count = self.k
        if flag == DATA_FLAG:
            if len(datagram) < HEADER_SIZE or index >= self.k:
                return None, []
            size = int.from_bytes(datagram[6:8], "little")
            if not 2 <= size <= len(datagram) - 6:
                return None, []
            own = view[8 : 6 + size]
            self.meter.data_shard(seqid)
            body = view[6:]
        elif flag == PARITY_FLAG and index >= self.k:
            body = view[6:]
        elif flag == SHORT_PARITY_FLAG and index >= self.k and len(datagram) > _SHORT.size:
            count = int.from_bytes(datagram[6:8], "little")
            if not 1 <= count < self.k:
                return None, []
            body = view[_SHORT.size :]
        else:
            return None, []
        if group in self._done:
            return own, []
        shards = self._groups.get(group)
        if shards is None:
            shards = self._groups[group] = {}
            if group > self._newest:
                self._newest = group
                for old in [g for g in self._groups if g < group - KEEP]:
                    del self._groups[old]
                    self._counts.pop(old, None)
                if len(self._done) > 256:
                    self._done = {g for g in self._done if g >= group - 64}
        if count < self.k and group not in self._counts:
            self._counts[group] = count
            self.meter.empty_shards(self.k - count)  # never sent, so never lost
        shards[index] = body
        count = self._counts.get(group, self.k)
        rebuilt: list[memoryview] = []
        if len(shards) >= count:
            if sum(1 for i in shards if i < count) < count:
                rebuilt = self._rebuild(shards, count)
            del self._groups[group]
            self._counts.pop(group, None)
            self._done.add(group)
        return own, rebuilt

    def _rebuild(self, shards: dict[int, memoryview], count: int) -> list[memoryview]:
        """The missing data shards among the group's first ``count``, from ``count`` shards it has and the empty
        data shards after them (a short group)."""
        chosen = sorted(shards.items())[:count]
        longest = max(len(b) for _, b in chosen)
        blocks = [b if len(b) == longest else bytes(b) + bytes(longest - len(b)) for _, b in chosen]
        blocks += [bytes(longest)] * (self.k - count)
        try:
            rebuilt = self._decoder.decode(blocks, [i for i, _ in chosen] + list(range(count, self.k)))
        except (ValueError, zfec.Error):
            return []
        out = []
        for index in range(count):
            if index not in shards and index < len(rebuilt):
                block = rebuilt[index]
                size = int.from_bytes(block[:2], "little")
                if 2 <= size <= len(block):
                    out.append(memoryview(block)[2:size])
                    self.recovered += 1
        return out
