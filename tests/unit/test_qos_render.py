"""The tc batch text Arctic renders: full builds, live changes and removals, read as the kernel would get them."""

from __future__ import annotations

import re

import pytest
from arctic.netconf.qos_model import QosError, QosService
from arctic.netconf.qos_render import (
    HtbClass,
    InstalledLeaf,
    LeafQdisc,
    plan_changes,
    plan_rebuild,
    render_plan,
    render_qos,
    service_classes,
)

BASE = 0x40  # 61:40, slots 61:48..4f and 61:58..5f


def svc(rate: int, base: int = BASE, sid: str = "svc_a", slots: int = 16) -> QosService:
    return QosService(sid, rate, base, slots)


def commands(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def installed(*services: QosService) -> tuple[list[HtbClass], dict[int, InstalledLeaf]]:
    """What the kernel would report after Arctic applied these services (bursts are not reported)."""
    classes, leaves = [], {}
    for s in services:
        for c in service_classes(s):
            classes.append(HtbClass(c.minor, c.parent_minor, c.rate_bps, c.ceil_bps, 0, c.quantum, c.prio))
            if c.parent_minor is not None:
                leaves[c.minor] = InstalledLeaf("bfifo", {"limit": int(LeafQdisc("bfifo").options(s.rate_bps)[6:])})
    return classes, leaves


def test_a_limited_service_renders_a_root_a_service_class_and_its_slots() -> None:
    lines = commands(render_qos("eth1", [svc(50)]))
    assert lines[0] == "qdisc add dev eth1 root handle 61: htb default 0"
    assert lines[1] == ("class add dev eth1 parent 61: classid 61:40 htb rate 50000000bit ceil 50000000bit "
                        "burst 16384 cburst 16384 quantum 73728")
    slots = [line for line in lines if line.startswith("class add dev eth1 parent 61:40 ")]
    assert len(slots) == 16
    assert slots[0] == ("class add dev eth1 parent 61:40 classid 61:48 htb rate 3125000bit ceil 50000000bit "
                        "burst 16384 cburst 16384 prio 0 quantum 73728")
    leaves = [line for line in lines if line.startswith("qdisc replace")]
    assert len(leaves) == 16 and leaves[0] == "qdisc replace dev eth1 parent 61:48 bfifo limit 312500"
    assert "# service svc_a: 50 Mbit/s, 16 flow slots" in render_qos("eth1", [svc(50)])


def test_unlimited_services_get_no_class_and_alone_render_nothing() -> None:
    assert render_qos("eth1", [svc(0)]) == ""
    text = render_qos("eth1", [svc(0), svc(20, base=0x80, sid="svc_b")])
    assert "61:40" not in text and "classid 61:80" in text


def test_every_class_id_is_rendered_in_hex_like_tc_expects() -> None:
    text = render_qos("eth1", [svc(10, base=0x2A20, slots=2)])
    assert re.findall(r"classid (\S+)", text) == ["61:2a20", "61:2a28", "61:2a29"]


def test_two_services_with_one_block_are_refused() -> None:
    with pytest.raises(QosError, match="same class block"):
        render_qos("eth1", [svc(10), svc(20, sid="svc_b")])


def test_a_bad_interface_name_is_refused() -> None:
    with pytest.raises(QosError, match="interface name"):
        render_qos("eth1; reboot", [svc(10)])


def test_a_fair_leaf_replaces_the_fifo_when_the_kernel_has_one() -> None:
    text = render_qos("eth1", [svc(50, slots=1)], leaf=LeafQdisc("fq_codel"))
    assert "qdisc replace dev eth1 parent 61:48 fq_codel\n" in text


def test_a_rate_update_is_class_change_only_so_connections_and_queues_stay() -> None:
    classes, leaves = installed(svc(50))
    lines = commands(render_plan(plan_changes("eth1", classes, leaves, [svc(20)])))
    assert lines and all(line.startswith(("class change", "qdisc replace")) for line in lines)
    assert lines[0].startswith("class change dev eth1 parent 61: classid 61:40 htb rate 20000000bit ceil 20000000bit")
    assert sum(line.startswith("class change dev eth1 parent 61:40 ") for line in lines) == 16
    assert "qdisc del" not in "\n".join(lines) and "class del" not in "\n".join(lines)


def test_nothing_is_rendered_when_the_kernel_already_matches() -> None:
    classes, leaves = installed(svc(50), svc(30, base=0x80, sid="svc_b"))
    assert render_plan(plan_changes("eth1", classes, leaves, [svc(50), svc(30, base=0x80, sid="svc_b")])) == ""


def test_removing_one_service_deletes_its_slots_before_its_class_and_keeps_the_other() -> None:
    classes, leaves = installed(svc(50), svc(30, base=0x80, sid="svc_b"))
    lines = commands(render_plan(plan_changes("eth1", classes, leaves, [svc(30, base=0x80, sid="svc_b")])))
    assert all(line.startswith("class del dev eth1 classid 61:") for line in lines)
    deleted = [line.rsplit(" ", 1)[1] for line in lines]
    assert deleted[-1] == "61:40" and len(deleted) == 17
    assert not any(d.startswith("61:8") or d.startswith("61:9") for d in deleted)


def test_setting_0_on_the_last_limited_service_removes_the_root() -> None:
    classes, leaves = installed(svc(50))
    assert commands(render_plan(plan_changes("eth1", classes, leaves, [svc(0)]))) == ["qdisc del dev eth1 root"]
    assert commands(render_plan(plan_changes("eth1", classes, leaves, []))) == ["qdisc del dev eth1 root"]


def test_adding_a_service_adds_only_its_classes() -> None:
    classes, leaves = installed(svc(50))
    lines = commands(render_plan(plan_changes("eth1", classes, leaves, [svc(50), svc(10, base=0x80, sid="b")])))
    assert all(("61:8" in line or "61:9" in line) for line in lines)
    assert sum(line.startswith("class add") for line in lines) == 17
    assert "root" not in "\n".join(lines)


def test_a_drifted_leaf_qdisc_is_replaced() -> None:
    classes, leaves = installed(svc(50))
    leaves[0x48] = InstalledLeaf("pfifo", {"limit": 1000})
    assert commands(render_plan(plan_changes("eth1", classes, leaves, [svc(50)]))) == [
        "qdisc replace dev eth1 parent 61:48 bfifo limit 312500"]


def test_the_rebuild_plan_recreates_what_was_read_parents_first() -> None:
    classes, leaves = installed(svc(50, slots=2))
    lines = commands(render_plan(plan_rebuild("eth1", list(reversed(classes)), leaves)))
    assert lines[0] == "qdisc add dev eth1 root handle 61: htb default 0"
    assert lines[1].startswith("class add dev eth1 parent 61: classid 61:40 htb rate 50000000bit")
    assert lines[-1] == "qdisc replace dev eth1 parent 61:49 bfifo limit 312500"
