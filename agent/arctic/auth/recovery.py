"""Break-glass recovery token: admin for one request, for operators who lost their credentials.

A new token is written at every agent start (the old one stops working), readable only by the agent
user. The file is replaced atomically so a reader never sees a half-written or empty token, and the
new file is 0600 from the moment it exists.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

TOKEN_BYTES = 32  # -> 43 base64url characters, no padding
FILE_MODE = 0o600
DIR_MODE = 0o700


def new_recovery_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def write_recovery_token(path: str | Path) -> str:
    """Generate a token, atomically replace ``path`` with it (mode 0600) and return it.

    A missing parent directory is created with mode 0700; an existing one is left as it is.
    Raises ``OSError`` when the file cannot be written (the agent must not start without it).
    """
    path = Path(path)
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=DIR_MODE)
        os.chmod(path.parent, DIR_MODE)  # mkdir's mode is filtered by the umask
    token = new_recovery_token()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        try:
            os.fchmod(fd, FILE_MODE)
            os.write(fd, (token + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return token


def matches_recovery_token(presented: str | None, actual: str | None) -> bool:
    """Constant-time comparison; surrounding whitespace (a copied trailing newline) is ignored."""
    if not isinstance(presented, str) or not isinstance(actual, str) or not actual:
        return False
    return hmac.compare_digest(presented.strip().encode("utf-8"), actual.encode("utf-8"))
