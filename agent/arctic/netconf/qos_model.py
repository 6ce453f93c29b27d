"""What a service's shaping looks like in tc terms: class ids, slot priorities and token-bucket sizes.

Pure arithmetic, no I/O, so the renderer, the applier, the data plane and the tests all agree on it.

Class-id layout under Arctic's HTB root ``61:`` (every number hex, as tc prints it)::

    61:            root qdisc (htb, ``default 0``: unclassified traffic uses the unshaped direct queue)
    61:<base>      one class per limited service, rate = ceil = the service limit
    61:<base+8..f>, 61:<base+18..1f>
                   the service's flow slots: HTB leaves, rate = limit / slots, ceil = limit, same prio and quantum,
                   so HTB's deficit round robin shares the service rate fairly between connections

``base`` is a multiple of 32 (``BLOCK``), chosen from a hash of the service id. Slot minors all have a low nibble
of 8..f: on an interface *without* Arctic's root (the peer sends through a default ``pfifo_fast``) the kernel maps
``priority & 15`` to a band, and 0, 4 and 8..15 all land in band 1, the band of ordinary traffic. So a slot
priority never promotes or demotes tunnel traffic where there is no shaping.

The data plane sets ``SO_PRIORITY = (0x61 << 16) | slot_minor`` on a service's tunnel sockets; ``htb_classify``
enqueues a packet straight into the leaf whose classid equals ``skb->priority`` (no filter needed, and this kernel
has no ``fw`` classifier anyway). A priority that names no leaf (service unlimited, class removed) falls through to
the direct queue, i.e. it is not shaped: that is how ``bandwidth_limit_mbps: 0`` lifts a limit without touching
connections.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

QDISC_MAJOR = 0x61
ROOT_HANDLE = f"{QDISC_MAJOR:x}:"
BLOCK = 32
MAX_BLOCK = 0xFFFF // BLOCK  # blocks 1..2047; block 0 is left free (61:0 is not a class)
SLOT_OFFSETS = tuple(range(8, 16)) + tuple(range(24, 32))
MAX_SLOTS = len(SLOT_OFFSETS)
DEFAULT_SLOTS = 16
MAX_RATE_MBPS = 1_000_000  # 1 Tbit/s: anything above is a typo, not a link

BURST_SECONDS = 0.002  # dataplane-anchors §4.2: HTB is accurate to ~1 % once burst >= rate x 2 ms
MIN_BURST_BYTES = 16 * 1024  # a few full frames, so low rates are not starved by timer granularity
# HTB's round robin sends a whole packet per turn even when the quantum is smaller, so a quantum below the largest
# packet turns byte fairness into packet fairness (measured: a flow with small GSO packets then gets only its
# guaranteed 1/16). A 64 KiB GSO packet counts ~68 kB with every segment's headers, hence 72 KiB.
MIN_QUANTUM = 72 * 1024
MAX_QUANTUM = 131_072  # above ~200 kB the kernel warns "quantum is big"
QUANTUM_SECONDS = 0.001
LEAF_QUEUE_SECONDS = 0.05
MIN_LEAF_QUEUE_BYTES = 256 * 1024
MAX_LEAF_QUEUE_BYTES = 8 * 1024 * 1024

_IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,14}$")
_SERVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")  # ids end up in rendered comments: no newlines


class QosError(RuntimeError):
    """Shaping could not be configured as asked; the message says what to fix and nothing was left half-done.

    ``temporary``: a ``tc``/``ip`` call failed in a way that may pass (a busy kernel, a timeout), so the caller
    should try again soon; False for what only a change of input or host fixes (bad input, a foreign root qdisc,
    no route to the peer, iproute2 missing).
    """

    def __init__(self, message: str, *, temporary: bool = False) -> None:
        super().__init__(message)
        self.temporary = temporary


@dataclass(frozen=True)
class QosService:
    """One service's limit on one interface, with the class block already allocated (see ``allocate_class_bases``).

    ``rate_mbps`` 0 means unlimited: such a service gets no class (its traffic is not shaped at all).
    """

    service_id: str
    rate_mbps: int
    classid_minor_base: int
    slots: int = DEFAULT_SLOTS

    def __post_init__(self) -> None:
        check_service_id(self.service_id)
        check_rate(self.rate_mbps, self.service_id)
        check_base(self.classid_minor_base, self.service_id)
        if isinstance(self.slots, bool) or not isinstance(self.slots, int) or not 1 <= self.slots <= MAX_SLOTS:
            raise QosError(f"service {self.service_id}: slots must be an integer from 1 to {MAX_SLOTS}, "
                           f"got {self.slots!r}")

    @property
    def limited(self) -> bool:
        return self.rate_mbps > 0

    @property
    def rate_bps(self) -> int:
        return self.rate_mbps * 1_000_000

    @property
    def slot_minors(self) -> list[int]:
        return slot_minors(self.classid_minor_base, self.slots)


def check_service_id(service_id: object) -> str:
    if not isinstance(service_id, str) or not _SERVICE_ID.fullmatch(service_id):
        raise QosError(f"service_id must be an id such as svc_01H..., got {service_id!r}")
    return service_id


def check_rate(rate_mbps: object, service_id: str = "service") -> int:
    if isinstance(rate_mbps, bool) or not isinstance(rate_mbps, int) or not 0 <= rate_mbps <= MAX_RATE_MBPS:
        raise QosError(f"{service_id}: bandwidth limit must be a whole number of Mbps from 0 (unlimited) to "
                       f"{MAX_RATE_MBPS}, got {rate_mbps!r}")
    return rate_mbps


def check_base(base: object, service_id: str = "service") -> int:
    if (isinstance(base, bool) or not isinstance(base, int) or base % BLOCK
            or not 1 <= base // BLOCK <= MAX_BLOCK):
        raise QosError(f"{service_id}: classid_minor_base must be a multiple of {BLOCK} from {BLOCK} to "
                       f"{MAX_BLOCK * BLOCK}, got {base!r}")
    return base


def check_interface(name: object) -> str:
    if not isinstance(name, str) or not _IFNAME.fullmatch(name):
        raise QosError(f"interface name {name!r} is not a valid Linux interface name (1-15 characters)")
    return name


# --- class ids and priorities ----------------------------------------------------------------------------------

def classid(minor: int) -> str:
    """``61:2a`` style text for a minor number (tc reads both halves as hex)."""
    return f"{QDISC_MAJOR:x}:{minor:x}"


def priority_of(minor: int) -> int:
    """The ``SO_PRIORITY`` / ``skb->priority`` value that selects class ``61:minor``."""
    return (QDISC_MAJOR << 16) | minor


def slot_minors(base: int, slots: int = DEFAULT_SLOTS) -> list[int]:
    return [base + off for off in SLOT_OFFSETS[:slots]]


def home_block(service_id: str) -> int:
    """Where a service's class block lives unless another service got there first (stable across restarts)."""
    digest = hashlib.sha256(service_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % MAX_BLOCK + 1


def allocate_class_bases(service_ids: Iterable[str], keep: Mapping[str, int] | None = None) -> dict[str, int]:
    """Give each service a class block; ``keep`` (the previous allocation) is honoured so nothing moves.

    A live connection carries its slot priority for its whole life, so a service's block must never change while it
    exists. New services take their hash block, or probe forward on a collision. They are placed in sorted order:
    ``svc_<ULID>`` ids sort by creation time, so even without ``keep`` (after a restart) the older service of a
    colliding pair gets the home block, exactly as it did when it was created.
    """
    wanted = sorted(set(service_ids))
    if len(wanted) > MAX_BLOCK:
        raise QosError(f"{len(wanted)} services cannot be shaped on one peer (the most is {MAX_BLOCK})")
    bases: dict[str, int] = {}
    taken: set[int] = set()
    for sid, base in sorted((keep or {}).items()):
        if sid in wanted and base not in taken:
            check_base(base, sid)
            bases[sid] = base
            taken.add(base)
    for sid in wanted:
        if sid in bases:
            continue
        block = home_block(sid)
        while block * BLOCK in taken:
            block = block % MAX_BLOCK + 1
        bases[sid] = block * BLOCK
        taken.add(block * BLOCK)
    return bases


# --- token-bucket sizes ------------------------------------------------------------------------------------------

def burst_bytes(rate_bps: int) -> int:
    """HTB burst (and cburst) for a rate: 2 ms of the rate, at least 16 KiB.

    This is also the most a shaped service can send above its rate after an idle period: a backlog drains at line
    speed for at most ``burst`` bytes (plus the packet in flight, up to 64 KiB with GSO), then the rate holds.
    """
    return max(MIN_BURST_BYTES, math.ceil(rate_bps / 8 * BURST_SECONDS))


def quantum_bytes(rate_bps: int) -> int:
    """DRR quantum of a slot: 1 ms of the service rate, at least one whole GSO packet, so flows share bytes."""
    return min(MAX_QUANTUM, max(MIN_QUANTUM, math.ceil(rate_bps / 8 * QUANTUM_SECONDS)))


def slot_rate_bps(rate_bps: int, slots: int) -> int:
    """Guaranteed rate of one slot: an equal share, so idle slots lend everything to busy ones (ceil = the limit)."""
    return max(8_000, rate_bps // slots)


def leaf_queue_bytes(rate_bps: int) -> int:
    """Byte limit of a slot's FIFO: 50 ms of the service rate, 256 KiB to 8 MiB (bounded latency and memory)."""
    return min(MAX_LEAF_QUEUE_BYTES, max(MIN_LEAF_QUEUE_BYTES, math.ceil(rate_bps / 8 * LEAF_QUEUE_SECONDS)))
