"""Rendering rules: aligned columns, documented key/value layout, UTC timestamps."""

from __future__ import annotations

from arctic.cli.output import format_timestamp, render_kv, render_table


def test_timestamps_are_shown_in_utc_in_the_documented_format() -> None:
    assert format_timestamp("2025-12-08T20:26:39+11:00") == "2025-12-08 09:26:39 UTC"
    assert format_timestamp("2025-12-31T23:59:59Z") == "2025-12-31 23:59:59 UTC"
    assert format_timestamp("2025-12-31T23:59:59.123456Z") == "2025-12-31 23:59:59 UTC"
    assert format_timestamp(None) == "-"
    assert format_timestamp("not a time") == "not a time"


def test_kv_values_start_two_columns_after_the_longest_label() -> None:
    text = render_kv([("Peer ID", "peer_1"), ("License ID", "lic_1"), ("Version", "v0.1.0")])
    assert text.splitlines() == ["Peer ID:     peer_1", "License ID:  lic_1", "Version:     v0.1.0"]


def test_kv_accepts_an_explicit_value_column() -> None:
    assert render_kv([("Max Nodes", 10)], width=16) == "Max Nodes:      10"


def test_table_columns_are_padded_and_separated_by_two_spaces() -> None:
    text = render_table(["ID", "PRIORITY", "SOURCE CIDR", "DEST CIDR"],
                        [[6, 100, "10.0.0.0/8", "192.168.100.0/24"], [7, 200, "10.1.0.0/16", None]])
    assert text.splitlines() == [
        "ID  PRIORITY  SOURCE CIDR  DEST CIDR",
        "6   100       10.0.0.0/8   192.168.100.0/24",
        "7   200       10.1.0.0/16  -",
    ]
    assert "\x1b[" not in text
