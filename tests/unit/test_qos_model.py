"""Class blocks, slot priorities and token-bucket sizes: the numbers the data plane and tc must agree on."""

from __future__ import annotations

import pytest
from arctic.ids import new_id
from arctic.netconf.qos_model import (
    BLOCK,
    MAX_BLOCK,
    MAX_SLOTS,
    QosError,
    QosService,
    allocate_class_bases,
    burst_bytes,
    home_block,
    leaf_queue_bytes,
    priority_of,
    quantum_bytes,
    slot_minors,
    slot_rate_bps,
)


def colliding_ids(n: int) -> list[str]:
    """``n`` ids (in creation order) that hash to the same home block."""
    by_block: dict[int, list[str]] = {}
    i = 0
    while True:
        sid = f"svc_{i:026d}"
        same = by_block.setdefault(home_block(sid), [])
        same.append(sid)
        if len(same) == n:
            return same
        i += 1


def test_a_service_keeps_its_block_when_others_are_added() -> None:
    first = new_id("svc")
    before = allocate_class_bases([first])
    after = allocate_class_bases([first, *(new_id("svc") for _ in range(50))], keep=before)
    assert after[first] == before[first]
    assert len(set(after.values())) == 51, "every service has its own block"


def test_allocation_without_memory_is_deterministic() -> None:
    ids = [new_id("svc") for _ in range(20)]
    assert allocate_class_bases(ids) == allocate_class_bases(list(reversed(ids)))


def test_a_collision_goes_to_the_newer_service_so_a_restart_reproduces_it() -> None:
    older, newer = colliding_ids(2)
    live = allocate_class_bases([older, newer], keep=allocate_class_bases([older]))
    assert live[older] == home_block(older) * BLOCK
    assert live[newer] == (home_block(newer) % MAX_BLOCK + 1) * BLOCK
    assert allocate_class_bases([older, newer]) == live, "after a restart (no memory) nothing moves"


def test_a_kept_block_survives_even_when_its_home_is_free_again() -> None:
    older, newer = colliding_ids(2)
    both = allocate_class_bases([older, newer])
    only_newer = allocate_class_bases([newer], keep=both)
    assert only_newer[newer] == both[newer], "connections of the newer service keep their priorities"


def test_slot_minors_stay_in_the_block_and_map_to_the_normal_pfifo_fast_band() -> None:
    base = 7 * BLOCK
    minors = slot_minors(base, MAX_SLOTS)
    assert len(set(minors)) == MAX_SLOTS == 16
    assert all(base < m < base + BLOCK for m in minors)
    assert all(m & 15 >= 8 for m in minors), "priority & 15 in 8..15 is band 1, like priority 0"


def test_slot_priorities_are_major_61_and_the_slot_minor() -> None:
    assert priority_of(0x2A28) == 0x612A28


@pytest.mark.parametrize("mbps", [1, 10, 50, 100, 1000, 10_000, 100_000])
def test_burst_is_at_least_2_ms_of_the_rate(mbps: int) -> None:
    rate = mbps * 1_000_000
    assert burst_bytes(rate) >= rate / 8 * 0.002
    assert burst_bytes(rate) >= 16 * 1024


def test_burst_matches_the_documented_figures() -> None:
    assert [burst_bytes(m * 1_000_000) for m in (10, 50, 100, 1000)] == [16384, 16384, 25_000, 250_000]


@pytest.mark.parametrize("mbps", [1, 10, 100, 1000, 100_000])
def test_quantum_covers_a_whole_gso_packet_and_stays_below_the_kernel_warning(mbps: int) -> None:
    q = quantum_bytes(mbps * 1_000_000)
    assert 68_130 < q <= 200_000


def test_slot_rates_and_queues_are_bounded() -> None:
    assert slot_rate_bps(10_000_000, 16) == 625_000
    assert slot_rate_bps(1_000_000, 16) >= 8_000
    assert leaf_queue_bytes(1_000_000) == 256 * 1024
    assert leaf_queue_bytes(1_000_000_000) == 6_250_000
    assert leaf_queue_bytes(100_000_000_000) == 8 * 1024 * 1024


@pytest.mark.parametrize("kwargs, needle", [
    ({"rate_mbps": -1}, "whole number of Mbps"),
    ({"rate_mbps": 1.5}, "whole number of Mbps"),
    ({"rate_mbps": True}, "whole number of Mbps"),
    ({"rate_mbps": 2_000_000}, "whole number of Mbps"),
    ({"classid_minor_base": 33}, "multiple of 32"),
    ({"classid_minor_base": 0}, "multiple of 32"),
    ({"classid_minor_base": 0x10000}, "multiple of 32"),
    ({"slots": 0}, "slots must be"),
    ({"slots": 17}, "slots must be"),
    ({"service_id": ""}, "service_id"),
    ({"service_id": "svc_a\nqdisc del dev eth0 root"}, "service_id"),
])
def test_bad_service_parameters_are_refused_with_a_clear_message(kwargs: dict, needle: str) -> None:
    args = {"service_id": "svc_x", "rate_mbps": 50, "classid_minor_base": 64, "slots": 16} | kwargs
    with pytest.raises(QosError, match=needle):
        QosService(**args)


def test_more_services_than_blocks_is_refused() -> None:
    with pytest.raises(QosError, match="cannot be shaped"):
        allocate_class_bases(f"svc_{i}" for i in range(MAX_BLOCK + 1))
