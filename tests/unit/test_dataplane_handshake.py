"""Opening a session (``arctic.dataplane.handshake``): mutual identity, fresh keys, no replay, no oracle."""

from __future__ import annotations

import pytest
from arctic.dataplane import handshake
from arctic.dataplane.handshake import ClientHandshake, HandshakeError, Hello, ServerHandshake
from arctic.dataplane.keys import raw_public_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

KA, KB, KR = (Ed25519PrivateKey.generate() for _ in range(3))
A, B = "peer_01HZY3K8J5Q2W9V4XN7R6T0AAA", "peer_01HZY3K8J5Q2W9V4XN7R6T0BBB"
SVC = "svc_01HZY3K8J5Q2W9V4XN7R6T0S01"
KEYS = {A: raw_public_key(KA), B: raw_public_key(KB)}


def hello(**kw) -> Hello:
    return Hello(**{"client_peer_id": A, "server_peer_id": B, "service_id": SVC, "slot": 3, "window": 65536, **kw})


def server(worker: int = 0, workers: int = 1) -> ServerHandshake:
    return ServerHandshake(KB, B, KEYS.get, 131072, bytes([worker, workers]) + bytes(14), worker=worker,
                           workers=workers)


def run(client: ClientHandshake, srv: ServerHandshake) -> None:
    mtype, body, rest = handshake.split_message(client.first_message)
    assert rest == b""
    accept = srv.on_hello(mtype, body)
    confirm = client.on_answer(*handshake.split_message(accept)[:2])
    srv.on_confirm(*handshake.split_message(confirm)[:2])


def test_both_sides_derive_the_same_keys_and_learn_each_other():
    client, srv = ClientHandshake(KA, hello(), KEYS[B]), server()
    run(client, srv)
    assert client.keys == srv.keys and client.keys is not None
    assert srv.hello == hello() and client.peer_window == 131072 and srv.peer_window == 65536
    assert len({client.keys.client_to_server, client.keys.server_to_client, client.keys.lane}) == 3


def test_every_session_gets_fresh_keys():
    first, second = ClientHandshake(KA, hello(), KEYS[B]), ClientHandshake(KA, hello(), KEYS[B])
    run(first, server())
    run(second, server())
    assert first.keys != second.keys


def test_an_unknown_client_is_rejected_before_any_signature():
    rogue = ClientHandshake(KR, hello(client_peer_id="peer_01HZY3K8J5Q2W9V4XN7R6T0RRR"), KEYS[B])
    with pytest.raises(HandshakeError) as err:
        server().on_hello(*handshake.split_message(rogue.first_message)[:2])
    assert err.value.reason == "unknown_peer"


def test_a_client_claiming_another_identity_fails_at_confirm():
    liar = ClientHandshake(KR, hello(), KEYS[B])  # says it is A, holds another key
    srv = server()
    accept = srv.on_hello(*handshake.split_message(liar.first_message)[:2])
    confirm = liar.on_answer(*handshake.split_message(accept)[:2])
    with pytest.raises(HandshakeError) as err:
        srv.on_confirm(*handshake.split_message(confirm)[:2])
    assert err.value.reason == "bad_signature"


def test_a_server_without_the_target_key_is_refused_by_the_client():
    client = ClientHandshake(KA, hello(), KEYS[B])
    impostor = ServerHandshake(KR, B, KEYS.get, 65536, bytes(16))
    accept = impostor.on_hello(*handshake.split_message(client.first_message)[:2])
    with pytest.raises(HandshakeError):
        client.on_answer(*handshake.split_message(accept)[:2])


def test_a_replayed_hello_and_confirm_do_not_open_a_session():
    client, srv = ClientHandshake(KA, hello(), KEYS[B]), server()
    accept = srv.on_hello(*handshake.split_message(client.first_message)[:2])
    confirm = client.on_answer(*handshake.split_message(accept)[:2])
    replay = server()
    replay.on_hello(*handshake.split_message(client.first_message)[:2])  # a fresh ACCEPT the attacker cannot sign for
    with pytest.raises(HandshakeError):
        replay.on_confirm(*handshake.split_message(confirm)[:2])


def test_a_session_for_another_peer_is_rejected():
    client = ClientHandshake(KA, hello(server_peer_id="peer_01HZY3K8J5Q2W9V4XN7R6T0CCC"), KEYS[B])
    with pytest.raises(HandshakeError) as err:
        server().on_hello(*handshake.split_message(client.first_message)[:2])
    assert err.value.reason == "wrong_target"


def test_the_wanted_worker_is_honoured_and_any_worker_takes_255():
    wants_one = ClientHandshake(KA, hello(want=5), KEYS[B]).first_message  # 5 % 2 == 1
    with pytest.raises(HandshakeError) as err:
        server(worker=0, workers=2).on_hello(*handshake.split_message(wants_one)[:2])
    assert err.value.reason == "wrong_worker"
    server(worker=1, workers=2).on_hello(*handshake.split_message(wants_one)[:2])
    anyone = ClientHandshake(KA, hello(), KEYS[B]).first_message
    server(worker=0, workers=2).on_hello(*handshake.split_message(anyone)[:2])


def test_a_rejection_reaches_the_client_as_an_error_with_its_reason():
    client = ClientHandshake(KA, hello(), KEYS[B])
    with pytest.raises(HandshakeError) as err:
        client.on_answer(*handshake.split_message(handshake.reject("wrong_worker"))[:2])
    assert err.value.reason == "wrong_worker"


def test_control_macs_verify_in_sequence_only():
    client, srv = ClientHandshake(KA, hello(), KEYS[B]), server()
    run(client, srv)
    out, inp = handshake.control_mac(client.keys, client=True), handshake.control_mac(srv.keys, client=False)
    first, second = out.seal(b"frame one"), out.seal(b"frame two")
    assert inp.verify(b"frame one", first)
    assert not inp.verify(b"frame one", first)  # played again: the sequence moved on
    fresh = handshake.control_mac(srv.keys, client=False)
    assert not fresh.verify(b"frame two", second)  # out of order


def test_a_lane_proof_binds_session_stream_and_lane():
    token, key = bytes(range(16)), bytes(32)
    proof = handshake.lane_proof(key, token, 7, 1)
    assert proof == handshake.lane_proof(key, token, 7, 1)
    assert proof not in {handshake.lane_proof(key, token, 9, 1), handshake.lane_proof(key, token, 7, 2),
                         handshake.lane_proof(bytes(31) + b"x", token, 7, 1)}


@pytest.mark.parametrize("data", [b"XXXX\x01\x00\x00", b"ARC2\x01\xff\xff"], ids=["magic", "too-long"])
def test_messages_that_are_not_ours_are_refused(data):
    with pytest.raises(HandshakeError):
        handshake.split_message(data)
