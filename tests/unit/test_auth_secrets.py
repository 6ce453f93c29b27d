"""Client ids and secrets: shapes, hashing at rest, verification."""

from __future__ import annotations

import re

from arctic.auth.secrets import hash_secret, new_client_id, new_secret, verify_secret
from arctic.ids import parse_id


def test_client_ids_are_typed_ulids():
    client_id = new_client_id()
    assert client_id.startswith("cli_") and parse_id("cli", client_id) == client_id
    assert new_client_id() != client_id


def test_secrets_are_sec_plus_43_base64url_chars_and_unique():
    secret = new_secret()
    assert re.fullmatch(r"sec_[A-Za-z0-9_-]{43}", secret)
    assert len({new_secret() for _ in range(50)}) == 50


def test_the_stored_hash_is_not_the_secret_and_verifies_it():
    secret = new_secret()
    stored = hash_secret(secret)
    assert stored.startswith("sha256:") and secret not in stored and len(stored) == len("sha256:") + 64
    assert verify_secret(secret, stored)


def test_wrong_or_malformed_inputs_do_not_verify():
    stored = hash_secret(new_secret())
    assert not verify_secret(new_secret(), stored)
    assert not verify_secret("", stored)
    assert not verify_secret(None, stored)  # type: ignore[arg-type]
    assert not verify_secret("sec_x", "sec_x")  # a plaintext value in the store is never accepted
    assert not verify_secret("sec_x", "md5:" + "0" * 32)
