"""The rules that need a lookup (``arctic.api.rules``), each against a fake catalog: what passes, and what is refused
with which code, status and exact message. The write handlers (``StoreCatalog``) and the dry run (``plan.Draft``)
give these rules the same lookups; ``test_plan_api.py`` shows both answer alike."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from arctic.api.plan import Draft
from arctic.api.rules import (
    Catalog,
    StoreCatalog,
    check_desired_addresses_free,
    check_name_free,
    check_route_pair_free,
    check_service_limit,
    existing_route,
    existing_service,
)
from arctic.errors import ApiError
from arctic.store.records import Route, Service

WEB = "svc_01KBYMNEVYN9NC4M3RB3ZGN4R1"
DB = "svc_01KBYMNEVYN9NC4M3RB3ZGN4R2"
PEER_B = "peer_01KBYMNEVYN9NC4M3RB3ZGN4RB"
PEER_C = "peer_01KBYMNEVYN9NC4M3RB3ZGN4RC"


def service(sid: str, name: str | None = None, *, target: str = PEER_B, interface: bool = True,
            v4: str | None = None, v6: str | None = None, routes: tuple[tuple[str | None, str | None], ...] = ()):
    svc = Service(id=sid, name=name, source_peer_id="peer_01KBYMNEVYN9NC4M3RB3ZGN4RA", target_peer_id=target,
                  transport_type="tcp", requires_interface=interface, desired_ipv4_cidr=v4, desired_ipv6_cidr=v6,
                  fully_transparent=False, bandwidth_limit_mbps=0, interface_name=None, interface_mac=None,
                  interface_ipv4_cidr=None, interface_ipv6_cidr=None, next_route_id=len(routes) + 1,
                  created_at="2026-12-01T00:00:00Z", updated_at="2026-12-01T00:00:00Z")
    svc.routes = [Route(sid, index, 100, src, dst, index, svc.created_at, svc.created_at)
                  for index, (src, dst) in enumerate(routes, start=1)]
    return svc


@dataclass
class FakeCatalog:
    """Just the lookups, over a list: no store, no Flask."""

    services: list[Service] = field(default_factory=list)
    limit: int = 10
    peers: dict[str, str] = field(default_factory=lambda: {PEER_B: "agent-b"})

    def service_by_id(self, service_id: str) -> Service | None:
        return next((s for s in self.services if s.id == service_id), None)

    def service_id_named(self, name: str) -> str | None:
        return next((s.id for s in self.services if s.name == name), None)

    def service_count(self) -> int:
        return len(self.services)

    def service_limit(self) -> int:
        return self.limit

    def interface_services_of(self, target_peer_id: str) -> list[Service]:
        return [s for s in self.services if s.target_peer_id == target_peer_id and s.requires_interface]

    def route_id_matching(self, service_id: str, source_cidr: str | None, dest_cidr: str | None) -> int | None:
        found = self.service_by_id(service_id)
        return next((r.id for r in (found.routes if found else [])
                     if (r.source_cidr, r.dest_cidr) == (source_cidr, dest_cidr)), None)

    def peer_name(self, peer_id: str) -> str | None:
        return self.peers.get(peer_id)


def refused(call, *args, **kwargs) -> tuple[int, str, str]:
    with pytest.raises(ApiError) as info:
        call(*args, **kwargs)
    return info.value.status, info.value.code, info.value.message


@pytest.mark.parametrize("implementation", [StoreCatalog, Draft, FakeCatalog])
def test_the_store_the_draft_and_the_fake_each_offer_every_lookup_of_the_catalog(implementation):
    lookups = {name for name in vars(Catalog) if not name.startswith("_")}
    assert lookups == {"service_by_id", "service_id_named", "service_count", "service_limit",
                       "interface_services_of", "route_id_matching", "peer_name"}
    assert all(callable(getattr(implementation, name, None)) for name in lookups)


# --- services ---------------------------------------------------------------------------------------------------

def test_an_existing_service_is_found_by_its_id_or_bare_ulid_and_an_unknown_one_is_404():
    catalog = FakeCatalog([service(WEB, "web")])
    assert existing_service(catalog, WEB).name == "web"
    assert existing_service(catalog, WEB.removeprefix("svc_").lower()).id == WEB
    for ref in (DB, "web"):
        assert refused(existing_service, catalog, ref) == (
            404, "NOT_FOUND", f"service not found: {ref} (list services with 'arctic services list')")


def test_a_free_name_no_name_or_the_services_own_name_passes():
    catalog = FakeCatalog([service(WEB, "web"), service(DB, None)])
    check_name_free(catalog, "api")
    check_name_free(catalog, None)
    check_name_free(catalog, "web", current=catalog.services[0])
    check_name_free(catalog, "api", current=catalog.services[1])


def test_a_name_another_service_has_is_409_on_create_and_on_rename():
    catalog = FakeCatalog([service(WEB, "web"), service(DB, "db")])
    expected = (409, "ALREADY_EXISTS", "a service named 'web' already exists")
    assert refused(check_name_free, catalog, "web") == expected
    assert refused(check_name_free, catalog, "web", current=catalog.services[1]) == expected


def test_one_more_service_passes_below_the_limit_and_is_422_at_it():
    check_service_limit(FakeCatalog([service(WEB)], limit=2))
    assert refused(check_service_limit, FakeCatalog([service(WEB), service(DB)], limit=2)) == (
        422, "SERVICE_LIMIT_EXCEEDED", "licence allows 2 services and all are in use across the cluster: delete "
        "unused services or upgrade the licence ('arctic license show')")


def test_an_address_free_on_its_target_passes():
    catalog = FakeCatalog([service(WEB, "web", v4="192.168.100.10/24"),
                           service(DB, target=PEER_C, v4="192.168.100.11/24"),
                           service("svc_01KBYMNEVYN9NC4M3RB3ZGN4R3", interface=False, v4="192.168.100.12/24")])
    for v4 in ("192.168.100.11/24", "192.168.100.12/24", None):  # other target; no interface; nothing asked
        check_desired_addresses_free(catalog, {"target_peer_id": PEER_B, "desired_ipv4_cidr": v4})
    check_desired_addresses_free(catalog, {"target_peer_id": PEER_C, "desired_ipv4_cidr": "192.168.100.10/24"})
    own = catalog.services[0]  # an update keeping its own address, with another prefix length
    check_desired_addresses_free(catalog, vars(own) | {"desired_ipv4_cidr": "192.168.100.10/25"}, current=own)


def test_an_address_another_interface_service_of_the_target_desires_is_409_naming_field_holder_and_peer():
    catalog = FakeCatalog([service(WEB, "web", v4="192.168.100.10/24"), service(DB, v6="fd00:100::10/64")])
    assert refused(check_desired_addresses_free, catalog,
                   {"target_peer_id": PEER_B, "desired_ipv4_cidr": "192.168.100.10/25"}) == (
        409, "ALREADY_EXISTS", f"desired_ipv4_cidr: 192.168.100.10 is already the address of service {WEB} (web) on "
        "peer agent-b; choose another address or update that service")
    catalog.peers = {}  # a peer without a name is named by its id; a holder without a name by its id alone
    mover = catalog.services[0]
    assert refused(check_desired_addresses_free, catalog, vars(mover) | {"desired_ipv6_cidr": "fd00:100::10/80"},
                   current=mover) == (
        409, "ALREADY_EXISTS", f"desired_ipv6_cidr: fd00:100::10 is already the address of service {DB} on peer "
        f"{PEER_B}; choose another address or update that service")


# --- routes -----------------------------------------------------------------------------------------------------

def test_an_existing_route_is_found_and_an_unknown_one_is_404_with_a_hint():
    svc = service(WEB, routes=((None, "10.0.0.0/8"),))
    assert existing_route(svc, 1).dest_cidr == "10.0.0.0/8"
    assert refused(existing_route, svc, 2) == (
        404, "NOT_FOUND", f"route 2 not found in {WEB} (list them with 'arctic routes list --service {WEB}')")


def test_a_new_pair_or_a_route_keeping_its_own_pair_passes():
    catalog = FakeCatalog([service(WEB, routes=((None, "10.0.0.0/8"), ("10.1.0.0/16", None))),
                           service(DB, routes=((None, "192.168.0.0/16"),))])
    check_route_pair_free(catalog, WEB, {"dest_cidr": "192.168.0.0/16"})  # another service's pair
    check_route_pair_free(catalog, WEB, {"source_cidr": "10.0.0.0/8"})  # the same CIDR on the other side
    check_route_pair_free(catalog, WEB, {"source_cidr": None, "dest_cidr": "10.0.0.0/8", "priority": 5}, route_id=1)


def test_a_pair_another_route_of_the_service_has_is_409_with_the_add_or_the_update_text():
    catalog = FakeCatalog([service(WEB, routes=((None, "10.0.0.0/8"), ("10.1.0.0/16", None)))])
    assert refused(check_route_pair_free, catalog, WEB, {"dest_cidr": "10.0.0.0/8", "priority": 1}) == (
        409, "ALREADY_EXISTS", f"route 1 of {WEB} already matches source any / destination 10.0.0.0/8; update it "
        "instead")
    assert refused(check_route_pair_free, catalog, WEB, {"source_cidr": "10.1.0.0/16", "dest_cidr": None}) == (
        409, "ALREADY_EXISTS", f"route 2 of {WEB} already matches source 10.1.0.0/16 / destination any; update it "
        "instead")
    assert refused(check_route_pair_free, catalog, WEB, {"source_cidr": None, "dest_cidr": "10.0.0.0/8"},
                   route_id=2) == (409, "ALREADY_EXISTS", f"route 1 of {WEB} already has these CIDRs")
