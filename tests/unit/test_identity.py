"""The peer's Ed25519 identity key: created private, refused when exposed, used to sign and verify."""

from __future__ import annotations

import base64
import os
import stat

import pytest
from arctic.cluster.identity import (
    Identity,
    IdentityError,
    create_identity,
    load_identity,
    public_key_from_b64,
    verify_signature,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_created_key_file_is_0600_pkcs8_pem(tmp_path):
    path = tmp_path / "peer.key"
    create_identity(path)
    assert _mode(path) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert [p.name for p in tmp_path.iterdir()] == ["peer.key"]  # no temporary file left behind


def test_key_file_is_0600_even_with_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        create_identity(tmp_path / "peer.key")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "peer.key") == 0o600


def test_missing_data_dir_is_created_private(tmp_path):
    path = tmp_path / "data" / "peer.key"
    create_identity(path)
    assert _mode(path.parent) == 0o700 and _mode(path) == 0o600


def test_create_refuses_to_overwrite_an_existing_key(tmp_path):
    path = tmp_path / "peer.key"
    first = create_identity(path)
    with pytest.raises(IdentityError, match="already exists"):
        create_identity(path)
    assert load_identity(path).public_key_b64 == first.public_key_b64


def test_loaded_identity_is_the_created_one(tmp_path):
    created = create_identity(tmp_path / "peer.key")
    loaded = load_identity(tmp_path / "peer.key")
    assert loaded.public_key_b64 == created.public_key_b64
    assert verify_signature(created.public_key_b64, b"hello", loaded.sign(b"hello"))


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_load_refuses_a_key_group_or_others_can_access(tmp_path, mode):
    path = tmp_path / "peer.key"
    create_identity(path)
    os.chmod(path, mode)
    with pytest.raises(IdentityError) as info:
        load_identity(path)
    assert f"{mode:04o}" in str(info.value) and "chmod 600" in str(info.value)


def test_load_reports_missing_and_garbage_files_clearly(tmp_path):
    with pytest.raises(IdentityError, match="does not exist"):
        load_identity(tmp_path / "nope.key")
    garbage = tmp_path / "garbage.key"
    fd = os.open(garbage, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"not a key")
    os.close(fd)
    with pytest.raises(IdentityError, match="PKCS8 PEM"):
        load_identity(garbage)


def test_public_key_is_44_char_standard_base64_of_32_raw_bytes():
    identity = Identity.generate()
    text = identity.public_key_b64
    assert len(text) == 44 and text.endswith("=")
    assert len(base64.b64decode(text, validate=True)) == 32
    assert isinstance(public_key_from_b64(text), Ed25519PublicKey)


@pytest.mark.parametrize("text, message", [
    ("not base64!", "not valid base64"),
    (base64.b64encode(b"x" * 31).decode(), "31 bytes"),
    (12345, "must be a base64 string"),
])
def test_public_key_from_b64_explains_bad_input(text, message):
    with pytest.raises(ValueError, match=message):
        public_key_from_b64(text)


def test_verify_signature_rejects_wrong_data_key_or_malformed_input():
    signer, other = Identity.generate(), Identity.generate()
    sig = signer.sign(b"payload")
    assert verify_signature(signer.public_key_b64, b"payload", sig)
    assert verify_signature(signer.public_key, b"payload", sig)
    assert not verify_signature(signer.public_key_b64, b"payload!", sig)
    assert not verify_signature(other.public_key_b64, b"payload", sig)
    assert not verify_signature("garbage", b"payload", sig)
    assert not verify_signature(signer.public_key_b64, b"payload", b"short")
    assert not verify_signature(None, b"payload", sig)  # type: ignore[arg-type]
