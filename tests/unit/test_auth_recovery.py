"""Break-glass recovery token: a fresh 0600 file at each start, compared in constant time."""

from __future__ import annotations

import os
import re
import stat

from arctic.auth.recovery import matches_recovery_token, write_recovery_token


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_token_is_43_base64url_chars_written_to_a_0600_file(tmp_path):
    path = tmp_path / "recovery.token"
    token = write_recovery_token(path)
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)
    assert path.read_text().strip() == token
    assert _mode(path) == 0o600


def test_every_start_replaces_the_token(tmp_path):
    path = tmp_path / "recovery.token"
    first = write_recovery_token(path)
    second = write_recovery_token(path)
    assert first != second and path.read_text().strip() == second
    assert not matches_recovery_token(first, second)
    assert [p.name for p in tmp_path.iterdir()] == ["recovery.token"]  # no temporary files left


def test_a_loose_existing_file_is_replaced_by_a_0600_one(tmp_path):
    path = tmp_path / "recovery.token"
    path.write_text("old")
    os.chmod(path, 0o644)
    write_recovery_token(path)
    assert _mode(path) == 0o600


def test_missing_parent_directory_is_created_0700(tmp_path):
    path = tmp_path / "etc-arctic" / "recovery.token"
    write_recovery_token(path)
    assert _mode(path.parent) == 0o700 and _mode(path) == 0o600


def test_existing_parent_directory_keeps_its_mode(tmp_path):
    parent = tmp_path / "etc"
    parent.mkdir()
    os.chmod(parent, 0o755)
    write_recovery_token(parent / "recovery.token")
    assert _mode(parent) == 0o755


def test_matching_accepts_only_the_current_token():
    assert matches_recovery_token("abc", "abc")
    assert matches_recovery_token("abc\n", "abc")  # copied from the file with its newline
    assert not matches_recovery_token("abd", "abc")
    assert not matches_recovery_token("", "abc")
    assert not matches_recovery_token(None, "abc")
    assert not matches_recovery_token("", "")  # no token written yet: nothing matches
