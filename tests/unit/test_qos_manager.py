"""QosManager against a simulated kernel: ownership rules, live changes, roll-back and slot priorities."""

from __future__ import annotations

import shlex

import pytest
from arctic.netconf import qos_kernel
from arctic.netconf.qos import QosError, QosManager, ServiceLink, group_by_interface, qos_text
from arctic.netconf.qos_model import QDISC_MAJOR, burst_bytes
from arctic.netconf.qos_render import BFIFO, HtbClass, InstalledLeaf, LeafQdisc

NOQUEUE = {"kind": "noqueue", "handle": "0:", "root": True}


def _minor(classid: str) -> int | None:
    major, _, minor = classid.partition(":")
    assert major == f"{QDISC_MAJOR:x}", classid
    return int(minor, 16) if minor else None


def _bits(text: str) -> int:
    assert text.endswith("bit")
    return int(text[:-3])


class FakeKernel:
    """Interprets the tc batch lines Arctic renders, so tests see the state the kernel would end in."""

    def __init__(self, **roots: dict) -> None:
        self.roots = dict(roots)
        self.classes: dict[str, dict[int, HtbClass]] = {}
        self.leaves: dict[str, dict[int, InstalledLeaf]] = {}
        self.batches: list[str] = []
        self.fail_on: str | None = None  # a batch line containing this text fails (after the lines before it)
        self.routes: dict[str, str] = {}
        self.drops: dict[str, dict[int, int]] = {}  # packets each class dropped, by interface and class minor

    def root_qdiscs(self) -> dict[str, dict]:
        return dict(self.roots)

    def htb_classes(self, dev: str) -> list[HtbClass]:
        return list(self.classes.get(dev, {}).values())

    def leaf_qdiscs(self, dev: str) -> dict[int, InstalledLeaf]:
        return dict(self.leaves.get(dev, {}))

    def class_drops(self, dev: str) -> dict[int, int]:
        return {minor: self.drops.get(dev, {}).get(minor, 0) for minor in self.classes.get(dev, {})}

    def delete_root(self, dev: str) -> None:
        self.roots[dev] = dict(NOQUEUE)
        self.classes.pop(dev, None)
        self.leaves.pop(dev, None)

    def route_dev(self, address: str) -> str:
        if address not in self.routes:
            raise QosError(f"no route to peer address {address}: RTNETLINK answers: Network is unreachable")
        return self.routes[address]

    def run_batch(self, text: str) -> None:
        self.batches.append(text)
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            if self.fail_on and self.fail_on in line:
                self.fail_on = None
                raise QosError(f"tc -batch failed: RTNETLINK answers: Invalid argument Command failed -:{line}")
            self._execute(shlex.split(line))

    def _execute(self, w: list[str]) -> None:
        dev = w[w.index("dev") + 1]
        if w[:2] == ["qdisc", "add"] and "root" in w:
            assert self.roots[dev]["handle"] == "0:", "tc would refuse: a non-default root exists"
            self.roots[dev] = {"kind": "htb", "handle": w[w.index("handle") + 1], "root": True}
            self.classes[dev], self.leaves[dev] = {}, {}
        elif w[:2] == ["qdisc", "del"]:
            self.delete_root(dev)
        elif w[:2] == ["qdisc", "replace"]:
            minor = _minor(w[w.index("parent") + 1])
            assert minor in self.classes[dev], f"no class for leaf {w}"
            kind = w[w.index("parent") + 2]
            opts = {"limit": int(w[w.index("limit") + 1])} if "limit" in w else {}
            self.leaves[dev][minor] = InstalledLeaf(kind, opts)
        elif w[0] == "class":
            minor = _minor(w[w.index("classid") + 1])
            assert minor is not None
            if w[1] == "del":
                assert not any(c.parent_minor == minor for c in self.classes[dev].values()), "class has children"
                del self.classes[dev][minor]
                self.leaves[dev].pop(minor, None)
                return
            parent = _minor(w[w.index("parent") + 1])
            assert parent is None or parent in self.classes[dev], "parent class missing"
            assert (minor in self.classes[dev]) == (w[1] == "change"), f"{w[1]} of {minor:x}"
            self.classes[dev][minor] = HtbClass(minor, parent, _bits(w[w.index("rate") + 1]),
                                                _bits(w[w.index("ceil") + 1]), 0, int(w[w.index("quantum") + 1]),
                                                int(w[w.index("prio") + 1]) if "prio" in w else None)
        else:
            raise AssertionError(f"unexpected tc command {w}")

    def rates(self, dev: str) -> set[int]:
        return {c.ceil_bps for c in self.classes.get(dev, {}).values()}


@pytest.fixture
def qos_log(subsystem_log) -> pytest.LogCaptureFixture:
    return subsystem_log("qosmgr")


@pytest.fixture
def kernel() -> FakeKernel:
    return FakeKernel(eth1=dict(NOQUEUE), eth2=dict(NOQUEUE))


@pytest.fixture
def manager(kernel: FakeKernel) -> QosManager:
    return QosManager(kernel=kernel, leaf=BFIFO)  # type: ignore[arg-type]


def test_a_limited_service_installs_arctic_root_and_17_classes(kernel: FakeKernel, manager: QosManager) -> None:
    summary = manager.apply({"eth1": {"svc_a": 50}})
    assert kernel.roots["eth1"]["handle"] == "61:"
    assert len(kernel.classes["eth1"]) == 17 and kernel.rates("eth1") == {50_000_000}
    assert summary == {"eth1": {"classes_added": 17, "classes_changed": 0, "classes_deleted": 0,
                                "leaf_qdiscs": 16}}
    assert kernel.roots["eth2"] == NOQUEUE, "an interface without a limited service is left alone"


def test_a_live_update_changes_classes_in_place(kernel: FakeKernel, manager: QosManager) -> None:
    manager.apply({"eth1": {"svc_a": 50}})
    manager.apply({"eth1": {"svc_a": 20}})
    last = kernel.batches[-1]
    assert "class change" in last and "class add" not in last and "del" not in last and "root" not in last
    assert kernel.rates("eth1") == {20_000_000}


def test_applying_the_same_state_twice_runs_no_tc_at_all(kernel: FakeKernel, manager: QosManager) -> None:
    manager.apply({"eth1": {"svc_a": 50, "svc_b": 0}})
    runs = len(kernel.batches)
    assert manager.apply({"eth1": {"svc_a": 50, "svc_b": 0}}) == {}
    assert len(kernel.batches) == runs


def test_zero_or_deletion_of_the_last_limit_removes_the_root(kernel: FakeKernel, manager: QosManager) -> None:
    manager.apply({"eth1": {"svc_a": 50}})
    manager.apply({"eth1": {"svc_a": 0}})
    assert kernel.roots["eth1"] == NOQUEUE and not kernel.classes.get("eth1")
    manager.apply({"eth1": {"svc_a": 50}})
    manager.apply({})
    assert kernel.roots["eth1"] == NOQUEUE, "an interface no longer mentioned is cleaned too"


def test_a_foreign_root_is_refused_and_the_other_interfaces_are_still_shaped(kernel: FakeKernel,
                                                                              manager: QosManager,
                                                                              qos_log) -> None:
    foreign = {"kind": "tbf", "handle": "1:", "root": True}
    kernel.roots["eth1"] = dict(foreign)
    with pytest.raises(QosError, match=r"eth1: .*tbf 1:.*did not install; refusing"):
        manager.apply({"eth1": {"svc_a": 50}, "eth2": {"svc_b": 10}})
    assert kernel.roots["eth1"] == foreign and not any("eth1" in b for b in kernel.batches)
    assert kernel.rates("eth2") == {10_000_000}
    assert "refusing to replace" in qos_log.text


def test_a_foreign_root_without_limits_is_not_an_error(kernel: FakeKernel, manager: QosManager) -> None:
    kernel.roots["eth1"] = {"kind": "tbf", "handle": "1:", "root": True}
    assert manager.apply({"eth1": {"svc_a": 0}}) == {}
    assert manager.teardown() == []


def test_a_failed_first_build_leaves_the_default_root(kernel: FakeKernel, manager: QosManager) -> None:
    kernel.fail_on = "classid 61:"  # the root was added, the first class fails
    with pytest.raises(QosError, match="Invalid argument.*restored"):
        manager.apply({"eth1": {"svc_a": 50}})
    assert kernel.roots["eth1"] == NOQUEUE


def test_a_failed_change_restores_the_previous_classes(kernel: FakeKernel, manager: QosManager) -> None:
    manager.apply({"eth1": {"svc_a": 50, "svc_b": 30}})
    before = {m: (c.parent_minor, c.rate_bps, c.ceil_bps) for m, c in kernel.classes["eth1"].items()}
    kernel.fail_on = "class add"  # svc_c's classes fail after svc_a's change went through
    with pytest.raises(QosError, match="previous shaping of eth1 was restored"):
        manager.apply({"eth1": {"svc_a": 20, "svc_b": 30, "svc_c": 10}})
    after = {m: (c.parent_minor, c.rate_bps, c.ceil_bps) for m, c in kernel.classes["eth1"].items()}
    assert after == before
    restore = kernel.batches[-1]
    assert f"burst {burst_bytes(50_000_000)}" in restore


def test_bad_input_changes_nothing(kernel: FakeKernel, manager: QosManager) -> None:
    for bad in ({"eth1": {"svc_a": -5}}, {"eth1": {"svc_a": "50"}}, {"bad name!": {"svc_a": 5}},
                {"eth1": ["svc_a"]}, {"eth1": {"": 5}}, {"eth1": {"svc_a\n# x": 5}}):
        with pytest.raises(QosError):
            manager.apply(bad)  # type: ignore[arg-type]
    assert kernel.batches == [] and manager.priorities() == {}


def test_a_missing_interface_with_a_limit_is_an_error(kernel: FakeKernel, manager: QosManager) -> None:
    with pytest.raises(QosError, match="eth9 does not exist"):
        manager.apply({"eth9": {"svc_a": 5}})


def test_slot_priorities_are_stable_and_known_even_while_unlimited(manager: QosManager) -> None:
    manager.apply({"eth1": {"svc_a": 0}})
    prios = manager.slot_priorities("svc_a")
    assert len(prios) == 16 and all(p >> 16 == 0x61 for p in prios)
    manager.apply({"eth1": {"svc_a": 50, **{f"svc_{i}": 5 for i in range(30)}}})
    assert manager.slot_priorities("svc_a") == prios
    assert manager.slot_priorities("svc_unknown") == []
    manager.apply({"eth1": {}})
    assert manager.slot_priorities("svc_a") == [], "a deleted service gives its block back"


def test_drops_are_summed_over_each_service_s_classes_on_every_interface(kernel: FakeKernel,
                                                                        manager: QosManager) -> None:
    kernel.roots["eth2"] = dict(NOQUEUE)
    manager.apply({"eth1": {"svc_a": 50, "svc_b": 10}, "eth2": {"svc_c": 5}})
    a_slots = [p & 0xFFFF for p in manager.slot_priorities("svc_a")]
    c_slots = [p & 0xFFFF for p in manager.slot_priorities("svc_c")]
    kernel.drops = {"eth1": {a_slots[0]: 3, a_slots[5]: 4, 0xFFF: 99}, "eth2": {c_slots[1]: 2}}
    assert manager.drops() == {"svc_a": 7, "svc_b": 0, "svc_c": 2}


def test_teardown_removes_only_arctic_roots(kernel: FakeKernel, manager: QosManager) -> None:
    kernel.roots["eth2"] = {"kind": "tbf", "handle": "1:", "root": True}
    manager.apply({"eth1": {"svc_a": 50}})
    assert manager.teardown() == ["eth1"]
    assert kernel.roots["eth1"] == NOQUEUE and kernel.roots["eth2"]["kind"] == "tbf"


def test_services_are_grouped_by_the_interface_routing_their_peer(kernel: FakeKernel) -> None:
    kernel.routes = {"198.18.0.2": "eth1", "198.18.1.2": "eth2"}
    links = [ServiceLink("svc_a", "198.18.0.2", 50), ServiceLink("svc_b", "198.18.1.2", 0),
             ServiceLink("svc_c", "198.18.0.2", 10)]
    grouped = group_by_interface(links, kernel)  # type: ignore[arg-type]
    assert grouped == {"eth1": {"svc_a": 50, "svc_c": 10}, "eth2": {"svc_b": 0}}


def test_a_peer_without_a_route_is_left_out_and_named_when_asked(kernel: FakeKernel) -> None:
    kernel.routes = {"198.18.0.2": "eth1"}
    links = [ServiceLink("svc_a", "198.18.0.2", 50), ServiceLink("svc_b", "198.18.9.9", 10)]
    unrouted: dict[str, QosError] = {}
    assert group_by_interface(links, kernel, unrouted=unrouted) == {"eth1": {"svc_a": 50}}  # type: ignore[arg-type]
    assert list(unrouted) == ["svc_b"]


def test_a_failed_tc_call_is_temporary_and_refused_input_is_not(kernel: FakeKernel, manager: QosManager) -> None:
    kernel.fail_on = "class add"
    with pytest.raises(QosError) as failed:
        kernel.run_batch = _busy(kernel.run_batch)  # type: ignore[method-assign]
        manager.apply({"eth1": {"svc_a": 50}})
    assert failed.value.temporary, "a tc call that failed may pass on the next try"
    kernel.roots["eth2"] = {"kind": "tbf", "handle": "1:", "root": True}
    with pytest.raises(QosError) as refused:
        manager.apply({"eth2": {"svc_b": 10}})
    assert not refused.value.temporary, "a root qdisc Arctic did not install stays until someone removes it"


def _busy(run_batch):
    def run(text: str) -> None:
        try:
            run_batch(text)
        except QosError as err:
            raise QosError(str(err), temporary=True) from err
    return run


LINKS = [ServiceLink("svc_a", "198.18.0.2", 50), ServiceLink("svc_b", "198.18.0.2", 0),
         ServiceLink("svc_c", "198.18.0.2", 20)]


def test_the_installed_shaping_reads_back_as_the_desired_text(kernel: FakeKernel, manager: QosManager) -> None:
    manager.apply({"eth1": {"svc_a": 50, "svc_b": 0, "svc_c": 20}})
    assert manager.installed_text(LINKS) == qos_text(LINKS) == (
        "shape svc_a towards 198.18.0.2: 50 Mbit/s each way\n"
        "shape svc_c towards 198.18.0.2: 20 Mbit/s each way\n")


def test_a_class_changed_by_hand_reads_back_as_what_the_kernel_has(kernel: FakeKernel, manager: QosManager) -> None:
    manager.apply({"eth1": {"svc_a": 50, "svc_b": 0, "svc_c": 20}})
    base = manager.slot_priorities("svc_a")[0] & 0xFFFF & ~31
    top = kernel.classes["eth1"][base]
    kernel.classes["eth1"][base] = HtbClass(base, None, 30_000_000, 30_000_000, 0, top.quantum)
    assert manager.installed_text(LINKS) == ("shape svc_a towards 198.18.0.2: 30 Mbit/s each way"
                                             " (16 tc classes differ from the rendered ones)\n"
                                             "shape svc_c towards 198.18.0.2: 20 Mbit/s each way\n")
    slot = base + 8
    kernel.classes["eth1"][base] = top
    kernel.classes["eth1"][slot] = HtbClass(slot, base, 1_000_000, 50_000_000, 0, top.quantum, 0)
    assert "50 Mbit/s each way (1 tc classes differ" in manager.installed_text(LINKS), \
        "a slot changed by hand shows too, though the service class is as rendered"
    manager.apply({"eth1": {"svc_a": 50, "svc_b": 0, "svc_c": 20}})
    assert manager.installed_text(LINKS) == qos_text(LINKS), "the next apply repairs it"


def test_classes_of_a_service_no_one_names_are_shown_by_class_id(kernel: FakeKernel) -> None:
    QosManager(kernel=kernel, leaf=BFIFO).apply({"eth1": {"svc_gone": 10}})  # type: ignore[arg-type]
    fresh = QosManager(kernel=kernel, leaf=BFIFO)  # type: ignore[arg-type]  # e.g. after a restart
    text = fresh.installed_text([])
    assert text.startswith("shape (class block 61:") and text.endswith(" of no service) towards eth1: 10 Mbit/s"
                                                                        " each way\n")


def test_the_leaf_qdisc_is_detected_once_and_logged_once(monkeypatch, qos_log) -> None:
    probes: list[str] = []

    def probe(kind: str) -> bool | None:
        probes.append(kind)
        return None  # the probe cannot run here: fall back to the kernel config

    monkeypatch.setattr(qos_kernel, "_leaf_cache", None)
    monkeypatch.setattr(qos_kernel, "_probe_kind", probe)
    config = "CONFIG_NET_SCH_FQ=m\n# CONFIG_NET_SCH_FQ_CODEL is not set\n"
    monkeypatch.setattr(qos_kernel, "_kernel_config", lambda: config)
    assert qos_kernel.detect_leaf_qdisc() == LeafQdisc("fq")
    assert qos_kernel.detect_leaf_qdisc() == LeafQdisc("fq")
    assert probes == ["fq_codel", "fq"]
    assert qos_log.text.count("flow slots use fq leaves") == 1


def test_without_a_fair_qdisc_the_fallback_is_a_bounded_fifo_and_says_so(monkeypatch, qos_log) -> None:
    monkeypatch.setattr(qos_kernel, "_leaf_cache", None)
    monkeypatch.setattr(qos_kernel, "_probe_kind", lambda kind: False)
    assert qos_kernel.detect_leaf_qdisc() == BFIFO
    assert "no fair-queuing qdisc" in qos_log.text
