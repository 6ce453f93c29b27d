"""Which routes are shadowed: an earlier route in precedence order (of any service) has exactly their match."""

from __future__ import annotations

from dataclasses import dataclass

from arctic.domain.precedence import with_winners


@dataclass
class R:
    name: str
    source_cidr: str | None
    dest_cidr: str | None
    priority: int = 100
    seq: int = 0


def test_the_first_of_an_exact_duplicate_wins_and_the_others_name_it():
    a = R("a", "10.0.0.0/8", "192.168.100.0/24", priority=100, seq=1)
    b = R("b", "10.0.0.0/8", "192.168.100.0/24", priority=200, seq=2)  # higher priority: b is first
    c = R("c", "10.0.0.0/8", "192.168.100.0/24", priority=100, seq=3)
    assert [(r.name, w and w.name) for r, w in with_winners([a, b, c])] == [("b", None), ("a", "b"), ("c", "b")]


def test_overlapping_but_different_matches_are_not_shadowed():
    routes = [R("wide", "10.0.0.0/8", None), R("narrow", "10.1.0.0/16", None), R("dest", None, "10.0.0.0/8")]
    assert all(w is None for _, w in with_winners(routes))


def test_the_same_network_written_two_ways_is_the_same_match():
    routes = [R("a", None, "FD00::/64", seq=1), R("b", None, "fd00:0::/64", seq=2)]
    assert [(r.name, w and w.name) for r, w in with_winners(routes)] == [("a", None), ("b", "a")]
