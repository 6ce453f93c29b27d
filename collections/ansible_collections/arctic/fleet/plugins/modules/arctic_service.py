#!/usr/bin/python
# Copyright: Arctic contributors
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
module: arctic_service
short_description: Manage Arctic services (and optionally their routes)
description:
  - Create, update or delete an Arctic service, the one-way link from a source peer to a target peer
    that carries the traffic its routes select.
  - The service is identified by its unique O(name), or by O(id).
  - Options left unset are not managed; a second run with the same arguments changes nothing.
  - Inline O(routes) are reconciled by their (source CIDR, destination CIDR) pair; use
    M(arctic.fleet.arctic_route) to manage routes one at a time instead.
version_added: 0.1.0
author:
  - Arctic contributors (!UNKNOWN)
extends_documentation_fragment:
  - arctic.fleet.connection
  - arctic.fleet.attributes
  - arctic.fleet.attributes.action_group
attributes:
  check_mode:
    support: full
    details:
      - Nothing is written. The intended changes are sent to the agent's dry-run endpoint
        C(POST /v1/plan), which previews them on every peer they touch (the source peer's nftables and data
        plane, the target peer's MACVLAN and addresses); each peer's kernel diff is shown under its own header
        in RV(diff.prepared), and a peer that could not be asked is named there and in a warning.
      - Agents without C(/v1/plan) get a client-side diff only, and RV(plan.available=false) says so.
  diff_mode:
    support: full
  idempotent:
    support: full
options:
  state:
    description:
      - V(present) creates the service or brings it in line; V(absent) deletes it with its routes.
    type: str
    choices: [present, absent]
    default: present
  name:
    description:
      - Unique service name; identifies the service when O(id) is not given.
      - With O(id), renames the service.
    type: str
  id:
    description:
      - Service id (V(svc_...) or the bare ULID). When given, a missing service is an error for
        O(state=present) instead of being created.
    type: str
  source_peer:
    description:
      - Id or name of the peer where traffic enters. Defaults to the agent's local peer on creation.
      - Cannot change after creation.
    type: str
  target_peer:
    description:
      - Id or name of the peer where traffic leaves. Required to create a service.
      - Cannot change after creation.
    type: str
  transport_type:
    description:
      - Transport between the peers. The agent uses V(tcp) when it is not set on creation.
    type: str
    choices: [tcp, kcp]
  requires_interface:
    description:
      - Give the service its own MACVLAN interface on the target peer.
    type: bool
  desired_ipv4_cidr:
    description:
      - IPv4 address with prefix for the service interface, for example V(192.168.100.10/24).
      - An empty string removes it (the interface then uses DHCP).
    type: str
  desired_ipv6_cidr:
    description:
      - IPv6 address with prefix for the service interface, for example V(fd00::10/64).
      - An empty string removes it.
    type: str
  fully_transparent:
    description:
      - Transparent Mode, where the destination sees the client's own source address.
      - Needs O(transport_type=tcp) and O(requires_interface=true).
    type: bool
  bandwidth_limit_mbps:
    description:
      - Bandwidth limit in Mbit/s in each direction; V(0) means unlimited.
    type: int
  routes:
    description:
      - Routes the service must have, matched to existing ones by O(routes[].source_cidr) and
        O(routes[].dest_cidr). A matching route with another priority is updated in place.
      - Routes not listed are kept unless O(purge_routes=true).
      - Not managed when unset.
    type: list
    elements: dict
    suboptions:
      source_cidr:
        description: Source network, for example V(10.0.0.0/8).
        type: str
      dest_cidr:
        description: Destination network, for example V(192.168.100.0/24).
        type: str
      priority:
        description: Higher wins when two routes are equally specific.
        type: int
        default: 100
  purge_routes:
    description:
      - Delete routes of the service that O(routes) does not list. Ignored when O(routes) is unset.
    type: bool
    default: false
seealso:
  - module: arctic.fleet.arctic_route
  - module: arctic.fleet.arctic_service_info
"""

EXAMPLES = r"""
- name: A TCP service from the gateway to the branch office, with two routes
  arctic.fleet.arctic_service:
    agent_url: http://198.18.0.1:8080
    name: branch-web
    source_peer: gateway
    target_peer: branch
    requires_interface: true
    desired_ipv4_cidr: 192.168.100.10/24
    bandwidth_limit_mbps: 1000
    routes:
      - source_cidr: 10.0.0.0/8
        dest_cidr: 192.168.100.0/24
        priority: 100
      - source_cidr: 10.1.0.0/16
        dest_cidr: 192.168.100.0/24
        priority: 200
    purge_routes: true

- name: Lower the bandwidth limit (other settings untouched)
  arctic.fleet.arctic_service:
    name: branch-web
    bandwidth_limit_mbps: 500

- name: Connection settings once for every arctic.fleet module
  module_defaults:
    group/arctic.fleet.fleet:
      agent_url: "{{ arctic_agent_url }}"
      client_id: "{{ arctic_client_id }}"
      client_secret: "{{ arctic_client_secret }}"
  block:
    - name: Remove the service and its routes
      arctic.fleet.arctic_service:
        name: branch-web
        state: absent
"""

RETURN = r"""
service:
  description:
    - The service as the agent reports it after the change (C(GET /v1/services/{id})), with its routes.
    - In check mode, the predicted service (V(id) is null for one that would be created).
    - Null when the service is absent.
  returned: always
  type: dict
  sample:
    id: svc_01HZX3J9V6Q4G7W1T6B8Y2N5KC
    name: branch-web
    source_peer_id: peer_01HZX3H1C5M2S8J3Q9W4E7R6TA
    target_peer_id: peer_01HZX3H8D0A6P1K5V2N9F3G4HB
    transport_type: tcp
    requires_interface: true
    desired_ipv4_cidr: 192.168.100.10/24
    desired_ipv6_cidr: null
    fully_transparent: false
    bandwidth_limit_mbps: 1000
    routes:
      - {id: 1, priority: 200, source_cidr: 10.1.0.0/16, dest_cidr: 192.168.100.0/24}
      - {id: 2, priority: 100, source_cidr: 10.0.0.0/8, dest_cidr: 192.168.100.0/24}
diff:
  description: Managed fields before and after; V(state) is V(absent) for a missing service.
  returned: always
  type: dict
  contains:
    before:
      description: Normalised service before the change.
      type: dict
      returned: always
    after:
      description: Normalised service after the change (predicted in check mode).
      type: dict
      returned: always
    prepared:
      description:
        - The kernel diff of every peer the change touches, from the agent's dry run, each under a header line
          that names the peer and its id.
        - A peer that could not be asked (or would refuse the change) has a header saying so and the reason.
      type: str
      returned: in check mode, when the agent supports C(/v1/plan) and something would change
plan:
  description: The dry run of the intended changes.
  returned: in check mode, when something would change
  type: dict
  contains:
    available:
      description: Whether the agent answered C(POST /v1/plan).
      type: bool
      returned: always
    changes:
      description: The operations sent to the plan endpoint (C(service.create), C(route.add), ...).
      type: list
      elements: dict
      returned: always
    kernel_diff:
      description: Unified diff text per peer id, for every peer that answered.
      type: dict
      returned: when RV(plan.available) is true
    peers:
      description: Every peer the change touches, the agent that was asked first.
      type: list
      elements: dict
      returned: when RV(plan.available) is true
      contains:
        peer_id:
          description: The peer's id.
          type: str
          returned: always
        name:
          description: The peer's name (null when unknown).
          type: str
          returned: always
        valid:
          description: Whether that peer would accept the change; null when it could not be asked.
          type: bool
          returned: always
        diff:
          description: That peer's unified kernel diff (null when it could not be asked).
          type: str
          returned: always
        error:
          description: Why that peer could not be asked; null when it answered.
          type: str
          returned: always
    message:
      description: Why only a client-side diff is shown.
      type: str
      returned: when RV(plan.available) is false
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.arctic.fleet.plugins.module_utils.arctic_api import (
    ArcticApiError,
    ArcticResource,
    arctic_argument_spec,
    arctic_module_kwargs,
    check_network,
    id_matches,
    normalise_interface,
    route_key,
    route_view,
    sorted_routes,
)

FIELDS = ("transport_type", "requires_interface", "fully_transparent", "bandwidth_limit_mbps")
ADDRESSES = ("desired_ipv4_cidr", "desired_ipv6_cidr")


def route_body(route: dict) -> dict:
    """The API body of a route: priority plus whichever CIDRs it has."""
    body = {"priority": route["priority"]}
    for key in ("source_cidr", "dest_cidr"):
        if route.get(key) is not None:
            body[key] = route[key]
    return body


class ServiceResource(ArcticResource):
    kind = "service"
    immutable = ("source_peer_id", "target_peer_id")

    @property
    def declared_routes(self) -> list | None:
        routes = self.module.params["routes"]
        return None if routes is None else sorted_routes(routes)

    def validate(self) -> None:
        seen = {}
        for index, route in enumerate(self.module.params["routes"] or []):
            if not route.get("source_cidr") and not route.get("dest_cidr"):
                raise ArcticApiError(f"routes[{index}] needs source_cidr, dest_cidr or both", "MISSING_FIELD")
            check_network(route.get("source_cidr"), f"routes[{index}].source_cidr")
            check_network(route.get("dest_cidr"), f"routes[{index}].dest_cidr")
            key = route_key(route)
            if key in seen:
                raise ArcticApiError(
                    f"routes[{seen[key]}] and routes[{index}] have the same source_cidr and dest_cidr; "
                    "a service has one route per pair"
                )
            seen[key] = index

    def read(self) -> dict | None:
        params = self.module.params
        services = self.client.services()
        if params["id"]:
            found = [s for s in services if id_matches(s.get("id"), params["id"])]
            if not found and params["state"] == "present":
                raise ArcticApiError(
                    f"no service has id {params['id']!r}; leave out id to create the service by name",
                    "NOT_FOUND",
                    404,
                )
        else:
            found = [s for s in services if s.get("name") == params["name"]]
        return self.client.service(found[0]["id"]) if found else None

    def normalise(self, obj: dict) -> dict:
        return {
            "name": obj.get("name"),
            "source_peer_id": obj.get("source_peer_id"),
            "target_peer_id": obj.get("target_peer_id"),
            "transport_type": obj.get("transport_type") or "tcp",
            "requires_interface": bool(obj.get("requires_interface")),
            "desired_ipv4_cidr": normalise_interface(obj.get("desired_ipv4_cidr")),
            "desired_ipv6_cidr": normalise_interface(obj.get("desired_ipv6_cidr")),
            "fully_transparent": bool(obj.get("fully_transparent")),
            "bandwidth_limit_mbps": obj.get("bandwidth_limit_mbps") or 0,
            "routes": sorted_routes(obj.get("routes") or []),
        }

    def desired(self, current: dict | None) -> dict:
        params = self.module.params
        wanted = {}
        if params["name"] is not None:
            wanted["name"] = params["name"]
        for option in ("source_peer", "target_peer"):
            if params[option]:
                wanted[option + "_id"] = self.client.resolve_peer(params[option])["id"]
        for key in FIELDS:
            if params[key] is not None:
                wanted[key] = params[key]
        for key in ADDRESSES:
            if params[key] is not None:
                wanted[key] = normalise_interface(params[key])
        declared = self.declared_routes
        if declared is not None:
            if params["purge_routes"] or current is None:
                wanted["routes"] = declared
            else:
                merged = {route_key(r): route_view(r) for r in current.get("routes") or []}
                merged.update((route_key(r), r) for r in declared)
                wanted["routes"] = sorted_routes(merged.values())
        return wanted

    def create(self, desired: dict) -> dict | None:
        if "target_peer_id" not in desired:
            raise ArcticApiError(
                f"target_peer is required to create service {self.module.params['name']!r}", "MISSING_FIELD"
            )
        body = {k: v for k, v in desired.items() if k != "routes"}
        routes = [route_body(r) for r in desired.get("routes") or []]
        self.record("service.create", body)
        for route in routes:
            self.record("route.add", route)
        if self.module.check_mode:
            return dict(body, id=None, routes=desired.get("routes") or [])
        created = self.client.post("/v1/services", body)
        if routes:
            try:
                self.client.post(f"/v1/services/{created['id']}/routes", {"routes": routes})
            except ArcticApiError as error:
                error.message = (
                    f"service {body.get('name')!r} was created as {created['id']} "
                    f"but its routes were refused: {error.message}"
                )
                raise
        return self.client.service(created["id"])

    def update(self, current: dict, delta: dict, desired: dict) -> dict:
        service_id = current["id"]
        fields = {k: v for k, v in delta.items() if k != "routes"}
        if fields and self.record("service.update", fields, service_id=service_id):
            self.client.put(f"/v1/services/{service_id}", fields)
        if "routes" in delta:
            self.reconcile_routes(current)
        if self.module.check_mode:
            predicted = dict(current)
            predicted.update(desired)
            return predicted
        return self.client.service(service_id)

    def reconcile_routes(self, current: dict) -> None:
        """Update priorities in place, add missing routes, purge unlisted ones when asked."""
        service_id = current["id"]
        existing = {route_key(r): r for r in current.get("routes") or []}
        declared = {route_key(r): r for r in self.declared_routes or []}
        additions = []
        for key, route in declared.items():
            have = existing.get(key)
            if have is None:
                additions.append(route_body(route))
            elif have.get("priority") != route["priority"]:
                body = {"priority": route["priority"]}
                if self.record("route.update", body, service_id=service_id, route_id=have["id"]):
                    self.client.put(f"/v1/services/{service_id}/routes/{have['id']}", body)
        for route in additions:
            self.record("route.add", route, service_id=service_id)
        if additions and not self.module.check_mode:
            self.client.post(f"/v1/services/{service_id}/routes", {"routes": additions})
        if self.module.params["purge_routes"]:
            for key, have in existing.items():
                if key not in declared and self.record("route.delete", service_id=service_id, route_id=have["id"]):
                    self.client.delete(f"/v1/services/{service_id}/routes/{have['id']}")

    def delete(self, current: dict) -> None:
        if self.record("service.delete", service_id=current["id"]):
            self.client.delete(f"/v1/services/{current['id']}")


def main() -> None:
    argument_spec = arctic_argument_spec()
    argument_spec.update(
        state=dict(type="str", choices=["present", "absent"], default="present"),
        name=dict(type="str"),
        id=dict(type="str"),
        source_peer=dict(type="str"),
        target_peer=dict(type="str"),
        transport_type=dict(type="str", choices=["tcp", "kcp"]),
        requires_interface=dict(type="bool"),
        desired_ipv4_cidr=dict(type="str"),
        desired_ipv6_cidr=dict(type="str"),
        fully_transparent=dict(type="bool"),
        bandwidth_limit_mbps=dict(type="int"),
        routes=dict(
            type="list",
            elements="dict",
            options=dict(
                source_cidr=dict(type="str"),
                dest_cidr=dict(type="str"),
                priority=dict(type="int", default=100),
            ),
        ),
        purge_routes=dict(type="bool", default=False),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        required_one_of=[("name", "id")],
        supports_check_mode=True,
        **arctic_module_kwargs()
    )
    module.exit_json(**ServiceResource(module).run(module.params["state"]))


if __name__ == "__main__":
    main()
