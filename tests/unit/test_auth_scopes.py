"""Scopes: short and URN forms normalise to URNs; admin grants everything; bad scopes are named."""

from __future__ import annotations

import pytest
from arctic.auth import scopes


def test_there_are_exactly_the_seven_documented_scopes():
    names = ("admin", "peers.read", "peers.write", "services.read", "services.write", "credentials.read",
             "credentials.write")
    assert list(scopes.SCOPES) == [f"urn:tillered:arctic:{name}" for name in names]


def test_short_and_urn_forms_normalise_to_urns_in_order_without_duplicates():
    given = ["peers.read", "urn:tillered:arctic:services.write", " services.read ", "peers.read"]
    assert scopes.normalise_scopes(given) == [scopes.PEERS_READ, scopes.SERVICES_WRITE, scopes.SERVICES_READ]
    assert scopes.normalise_scopes([]) == []


@pytest.mark.parametrize("bad", ["peers.admin", "urn:tillered:arctic:nope", "", "PEERS.READ",
                                 "urn:other:admin"])
def test_a_bad_scope_is_named_in_the_error_with_the_valid_choices(bad):
    with pytest.raises(ValueError) as info:
        scopes.normalise_scopes(["peers.read", bad])
    assert repr(bad) in str(info.value) and "services.write" in str(info.value)


def test_a_plain_string_is_not_mistaken_for_a_list_of_letters():
    with pytest.raises(ValueError, match="list"):
        scopes.normalise_scopes("admin")


def test_admin_grants_everything():
    assert all(scopes.grants([scopes.ADMIN], needed) for needed in scopes.SCOPES)
    assert scopes.grants(["admin"], scopes.CREDENTIALS_WRITE)


def test_a_scope_grants_itself_only():
    assert scopes.grants([scopes.SERVICES_READ], scopes.SERVICES_READ)
    assert scopes.grants(["services.read"], "urn:tillered:arctic:services.read")
    assert not scopes.grants([scopes.SERVICES_READ], scopes.SERVICES_WRITE)
    assert not scopes.grants([scopes.SERVICES_WRITE], scopes.PEERS_WRITE)
    assert not scopes.grants([scopes.PEERS_READ], scopes.ADMIN)
    assert not scopes.grants([], scopes.PEERS_READ)


def test_unknown_held_scopes_grant_nothing():
    assert not scopes.grants(["urn:tillered:arctic:everything", "root"], scopes.PEERS_READ)
