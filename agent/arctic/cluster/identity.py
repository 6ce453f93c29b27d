"""The peer's Ed25519 identity: the key that signs its replicated records, handshakes and access tokens.

The private key lives in one PKCS8 PEM file (``<data_dir>/peer.key``). Whoever reads it can impersonate
the peer, so it is created with mode 0600 from the first byte (never chmod-ed after the fact) and a
key file that group or others can access is refused at load time, the way ssh treats private keys.

Public keys travel as base64 (standard alphabet, with padding) of the raw 32 bytes: 44 characters
ending in ``=``. The same encoding is used for licence issuer keys.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY_FILE_MODE = 0o600
RAW_KEY_BYTES = 32


class IdentityError(Exception):
    """The identity key cannot be created or used; the message says which file and what to do."""


@dataclass(frozen=True)
class Identity:
    private_key: Ed25519PrivateKey
    public_key_b64: str

    @classmethod
    def from_private_key(cls, key: Ed25519PrivateKey) -> Identity:
        return cls(key, public_key_to_b64(key.public_key()))

    @classmethod
    def generate(cls) -> Identity:
        """A fresh in-memory identity (tests, tools); ``create_identity`` is the persistent one."""
        return cls.from_private_key(Ed25519PrivateKey.generate())

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def sign(self, data: bytes) -> bytes:
        """Ed25519 signature (64 bytes) over ``data``."""
        return self.private_key.sign(data)

    def private_pem(self) -> bytes:
        return private_key_to_pem(self.private_key)


def private_key_to_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def private_key_from_pem(pem: bytes | str, *, source: str = "key") -> Ed25519PrivateKey:
    """Load an unencrypted PKCS8 PEM Ed25519 private key; ``source`` names it in error messages."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as err:
        raise IdentityError(f"{source} is not an unencrypted PKCS8 PEM private key ({err})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise IdentityError(f"{source} is a {type(key).__name__}, expected an Ed25519 private key")
    return key


def public_key_to_b64(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    """Decode a base64 raw Ed25519 public key; ``ValueError`` says what is wrong with it."""
    if not isinstance(text, str):
        raise ValueError(f"public key must be a base64 string, got {type(text).__name__}")
    shown = text if len(text) <= 60 else text[:57] + "..."
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            f"public key {shown!r} is not valid base64 (expected 44 characters ending in '=')") from None
    if len(raw) != RAW_KEY_BYTES:
        raise ValueError(
            f"public key {shown!r} decodes to {len(raw)} bytes; an Ed25519 public key is 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def verify_signature(public_key: str | Ed25519PublicKey, data: bytes, sig: bytes) -> bool:
    """True when ``sig`` is a valid Ed25519 signature of ``data`` by ``public_key`` (base64 or key object).

    Never raises: a malformed key or signature (which may come from a remote peer) is simply not valid.
    """
    if not isinstance(data, (bytes, bytearray)) or not isinstance(sig, (bytes, bytearray)):
        return False
    try:
        key = public_key if isinstance(public_key, Ed25519PublicKey) else public_key_from_b64(public_key)
        key.verify(bytes(sig), bytes(data))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private_key_file(path: str | Path, pem: bytes, *, what: str = "identity key") -> None:
    """Write ``pem`` to a new file with mode 0600, atomically, refusing to replace an existing file.

    The bytes go to a 0600 temporary file in the same directory which is then hard-linked into place:
    ``link`` fails if the name exists (no overwrite, even racing another writer) and readers never see
    a half-written key.
    """
    path = Path(path)
    exists = f"{what} {path} already exists; refusing to overwrite it (move it away first)"
    if path.exists() or path.is_symlink():
        raise IdentityError(exists)
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
        os.chmod(path.parent, 0o700)  # mkdir's mode is filtered by the umask
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
    try:
        try:
            os.fchmod(fd, KEY_FILE_MODE)  # O_CREAT's mode only ever loses bits to the umask; make it exact
            view = memoryview(pem)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise IdentityError(exists) from None
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def create_identity(path: str | Path) -> Identity:
    """Generate a new identity and store it at ``path`` (mode 0600). Refuses to overwrite a key."""
    identity = Identity.generate()
    write_private_key_file(path, identity.private_pem())
    return identity


def read_private_key_file(path: str | Path, *, what: str = "identity key") -> bytes:
    """Read a private key file, refusing one that group or others can access (like ssh does)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise IdentityError(f"{what} {path} does not exist") from None
    except OSError as err:
        raise IdentityError(f"cannot open {what} {path}: {err.strerror or err}") from None
    try:
        st = os.fstat(fd)  # check the file we actually opened, not whatever the name points to later
        if not stat.S_ISREG(st.st_mode):
            raise IdentityError(f"{what} {path} is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise IdentityError(
                f"{what} {path} has mode {mode:04o}: it must not be accessible by group or others; "
                f"fix it with 'chmod 600 {path}' (and check nobody else copied it)"
            )
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def load_identity(path: str | Path) -> Identity:
    """Load the identity stored by ``create_identity``; ``IdentityError`` explains any refusal."""
    pem = read_private_key_file(path)
    return Identity.from_private_key(private_key_from_pem(pem, source=f"identity key {path}"))
