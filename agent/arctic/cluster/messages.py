"""Signed peer-to-peer messages: ``{"msg": {...}, "sig": base64}``.

Every control message between peers (handshake, gossip) is signed by its sender's identity key and
carries the sender id and a timestamp; receivers check the signature against the key they trust
for that sender and refuse stale messages.
"""

from __future__ import annotations

import base64
import secrets
import time

from arctic.cluster.identity import Identity, verify_signature
from arctic.cluster.replication import canonical

MAX_SKEW_SECONDS = 300


class MessageError(Exception):
    """A message that must be refused; ``str(err)`` is the reason."""


def seal(identity: Identity, sender: str, msg: dict) -> dict:
    body = dict(msg, sender=sender, sent_at=time.time(), nonce=secrets.token_hex(16))
    return {"msg": body, "sig": base64.b64encode(identity.sign(canonical(body))).decode()}


def open_sealed(packet: object, public_key_for) -> dict:
    """Verify a sealed packet; ``public_key_for(sender_id)`` returns the trusted key or None."""
    if not isinstance(packet, dict) or not isinstance(packet.get("msg"), dict) or not isinstance(
            packet.get("sig"), str):
        raise MessageError("malformed message: expected {msg, sig}")
    msg = packet["msg"]
    sender = msg.get("sender")
    key = public_key_for(sender) if isinstance(sender, str) else None
    if key is None:
        raise MessageError(f"message from unknown peer {sender!r}")
    try:
        sig = base64.b64decode(packet["sig"], validate=True)
    except ValueError:
        raise MessageError("malformed signature") from None
    if not verify_signature(key, canonical(msg), sig):
        raise MessageError(f"invalid signature on message from {sender}")
    sent_at = msg.get("sent_at")
    if not isinstance(sent_at, (int, float)) or abs(time.time() - sent_at) > MAX_SKEW_SECONDS:
        raise MessageError(f"stale or future message from {sender} (clock skew over {MAX_SKEW_SECONDS}s?)")
    return msg
