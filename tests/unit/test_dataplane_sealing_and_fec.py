"""The KCP transport's datagram layers: sealing (AEAD, replay window, rekeying) and Reed-Solomon FEC."""

from __future__ import annotations

import os
import random

import pytest
from arctic.dataplane import fec, sealing
from arctic.dataplane.sealing import Opener, ReplayWindow, Sealer

KEY = os.urandom(32)


def pair(key: bytes = KEY) -> tuple[Sealer, Opener]:
    return Sealer(key, peer_index=7), Opener(key)


def test_a_sealed_datagram_opens_once_with_its_type_and_payload():
    sealer, opener = pair()
    datagram = sealer.seal(16, b"payload")
    assert opener.open(datagram) == (16, 0, b"payload")
    assert opener.open(datagram) is None and opener.dropped["replayed"] == 1


def test_any_flipped_bit_is_refused_as_forged():
    sealer, opener = pair()
    datagram = bytearray(sealer.seal(16, os.urandom(100)))
    for position in (0, 5, 20, len(datagram) - 1):  # header (associated data), body, tag
        bad = bytearray(datagram)
        bad[position] ^= 0x01
        assert opener.open(bytes(bad)) is None
    assert opener.dropped["forged"] + opener.dropped["replayed"] == 4
    assert opener.open(bytes(datagram)) is not None  # the real one still opens: forgeries poisoned nothing


def test_garbage_and_another_key_are_refused():
    sealer, opener = pair()
    assert opener.open(b"short") is None and opener.dropped["malformed"] == 1
    other = Sealer(os.urandom(32), 7)
    assert opener.open(other.seal(16, b"x")) is None and opener.dropped["forged"] == 1
    assert opener.open(sealer.seal(16, b"x")) is not None


def test_reordered_datagrams_open_within_the_window_and_not_beyond():
    sealer, opener = pair()
    datagrams = [sealer.seal(16, bytes([i % 256])) for i in range(sealing.WINDOW + 10)]
    assert opener.open(datagrams[-1]) is not None
    assert opener.open(datagrams[20]) is not None  # 2,069 behind the newest: inside the window
    assert opener.open(datagrams[5]) is None and opener.dropped["replayed"] == 1  # beyond it: refused


def test_the_replay_window_accepts_each_counter_once_in_any_order():
    window = ReplayWindow()
    counters = list(range(1, 3000))
    random.Random(1).shuffle(counters)
    accepted = 0
    for counter in counters + counters[:100]:
        if window.fresh(counter):
            window.seen(counter)
            accepted += 1
    assert accepted <= 2999  # never a counter twice, old ones beyond the window refused


def test_rekeying_moves_both_sides_to_new_keys_and_old_keys_are_forgotten(monkeypatch):
    monkeypatch.setattr(sealing, "REKEY_PACKETS", 100)
    sealer, opener = pair()
    first = sealer.seal(16, b"epoch 0")
    for _ in range(250):
        assert opener.open(sealer.seal(16, b"x")) is not None
    assert sealer.epoch == 2 and opener.epoch == 2
    assert opener.open(first) is None  # an epoch-0 datagram (even unseen) opens no more
    assert 0 not in opener._keys


def test_fec_rebuilds_up_to_m_lost_data_shards_of_a_group():
    encoder, decoder = fec.FecEncoder(10, 3, "on"), fec.FecDecoder(10, 3)
    packets = [os.urandom(random.Random(i).randint(20, 1300)) for i in range(10)]
    shards = [s for p in packets for s in encoder.encode(p)]
    assert len(shards) == 13 and encoder.parity_sent == 3
    arrived, rebuilt = [], []
    for index, shard in enumerate(shards):
        if index in (1, 4, 9):  # three data shards lost
            continue
        own, extra = decoder.decode(shard)
        arrived += [bytes(own)] if own is not None else []
        rebuilt += [bytes(p) for p in extra]
    assert sorted(arrived + rebuilt) == sorted(packets) and decoder.recovered == 3
    assert sorted(rebuilt) == sorted(packets[i] for i in (1, 4, 9))  # told apart: they arrive late


def test_fec_cannot_rebuild_more_than_m_losses_but_delivers_what_arrived():
    encoder, decoder = fec.FecEncoder(10, 3, "on"), fec.FecDecoder(10, 3)
    shards = [s for i in range(10) for s in encoder.encode(bytes([i]) * 50)]
    decoded = [decoder.decode(s) for i, s in enumerate(shards) if i not in (0, 1, 2, 3)]
    assert sum(own is not None for own, _ in decoded) == 6 and not any(rebuilt for _, rebuilt in decoded)
    assert decoder.recovered == 0


@pytest.mark.parametrize(("sent", "lost"), [(1, {0, 1, 2}), (3, {0, 2, 5}), (9, {3, 8, 9})])
def test_a_group_closed_early_is_rebuilt_from_as_many_shards_as_it_has_data(sent, lost):
    """A pause closes the open group with short parity: a lone small message travels with m parity copies."""
    encoder, decoder = fec.FecEncoder(10, 3, "on"), fec.FecDecoder(10, 3)
    packets = [os.urandom(random.Random(i).randint(20, 1300)) for i in range(sent)]
    shards = [s for p in packets for s in encoder.encode(p)] + encoder.flush_partial()
    assert len(shards) == sent + 3 and encoder.flush_partial() == []  # nothing open any more
    delivered = []
    for index, shard in enumerate(shards):
        if index not in lost:
            own, rebuilt = decoder.decode(shard)
            delivered += ([bytes(own)] if own is not None else []) + [bytes(p) for p in rebuilt]
    assert sorted(delivered) == sorted(packets) and decoder.recovered == len(lost & set(range(sent)))
    after = os.urandom(100)  # the next group starts on a group boundary and works as usual
    own, _ = decoder.decode(encoder.encode(after)[0])
    assert bytes(own) == after


@pytest.mark.parametrize("loss", [0.0, 0.05])
def test_short_groups_need_parity_on_and_their_empty_shards_are_not_counted_as_lost_or_sent(loss):
    encoder, decoder = fec.FecEncoder(10, 3, "auto"), fec.FecDecoder(10, 3)
    first = encoder.encode(b"z" * 40)
    assert encoder.flush_partial() == []  # auto mode, no loss reported: no parity
    decoder.decode(first[0])
    encoder.observe_loss(0.05)
    rng = random.Random(3)
    for _ in range(6000):  # sparse messages: one data shard per group
        for shard in encoder.encode(b"m" * 64) + encoder.flush_partial():
            if rng.random() >= loss:
                decoder.decode(shard)
    assert loss * 0.7 <= decoder.meter.loss <= loss * 1.3, decoder.meter.loss


def test_auto_mode_sends_parity_only_while_the_peer_reports_loss():
    encoder = fec.FecEncoder(10, 3, "auto")
    assert sum(len(encoder.encode(b"x" * 100)) for _ in range(10)) == 10  # no loss reported: no parity
    encoder.observe_loss(0.05)
    assert sum(len(encoder.encode(b"x" * 100)) for _ in range(10)) == 13
    encoder.observe_loss(0.005)  # between the thresholds: stays on (hysteresis)
    assert sum(len(encoder.encode(b"x" * 100)) for _ in range(10)) == 13
    encoder.observe_loss(0.0)
    assert sum(len(encoder.encode(b"x" * 100)) for _ in range(10)) == 10


@pytest.mark.parametrize("mode", ["on", "auto", "off"])
def test_the_loss_meter_measures_lost_data_shards_in_every_mode(mode):
    encoder, decoder = fec.FecEncoder(10, 3, mode), fec.FecDecoder(10, 3)
    rng = random.Random(2)
    for _ in range(6000):
        for shard in encoder.encode(b"y" * 200):
            if rng.random() >= 0.05:
                decoder.decode(shard)
    assert 0.035 <= decoder.meter.loss <= 0.065, decoder.meter.loss
    assert decoder.meter.report() == round(decoder.meter.loss * 256)


def _kcp_pair():
    """Two ikcp ends (siokcp) in memory: what each one sends is collected, delivered by the test."""
    from siokcp import KCPConnection

    wires: dict[str, list[bytes]] = {"a": [], "b": []}
    ends = {}
    for name in ("a", "b"):
        end = KCPConnection(7, lambda data, name=name: wires[name].append(bytes(data)) or 0, lambda _msg: None)
        end.nodelay(1, 10, 2, 1)
        end.update(1000)
        ends[name] = end
    return ends["a"], ends["b"], wires


@pytest.mark.parametrize("rebuilt", [False, True])
def test_a_packet_rebuilt_by_fec_delivers_and_acknowledges_but_never_clocks_the_rtt(rebuilt):
    from arctic.dataplane.transports.kcp import unclocked

    a, b, wires = _kcp_pair()
    a.send(b"hello")
    a.current = 1000
    a.flush()
    b.current = 1100
    b.receive_data(wires["a"].pop())
    b.flush()
    ack = wires["b"].pop()
    a.current = 1900  # the ACK comes 900 ms late, as one rebuilt from a parity group may
    a.receive_data(unclocked(memoryview(ack)) if rebuilt else ack)
    assert a.waitsnd() == 0  # acknowledged either way
    assert (a.rx_srtt, a.rx_rto <= 200) == ((0, True) if rebuilt else (900, False))
    buf = bytearray(64)
    assert bytes(buf[: b.next_event_into(buf)]) == b"hello"


def test_sparse_traffic_gets_a_loss_estimate_within_a_second(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(fec.time, "monotonic", lambda: clock[0])
    meter = fec.LossMeter(10, 3)
    received = [seqid for seqid in range(130) if seqid % 13 < 10 and seqid % 10 != 3]  # 1 data shard in 10 lost
    for seqid in received[:60]:
        meter.data_shard(seqid)
    assert meter.loss == 0.0  # too few shards for an estimate yet
    clock[0] += 1.5
    for seqid in received[60:]:
        meter.data_shard(seqid)
    assert 0.05 <= meter.loss <= 0.15, meter.loss
