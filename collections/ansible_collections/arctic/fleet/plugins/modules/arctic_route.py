#!/usr/bin/python
# Copyright: Arctic contributors
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
module: arctic_route
short_description: Manage one route of an Arctic service
description:
  - Add, re-prioritise or delete one route of an Arctic service. Routes choose which traffic (by source
    and destination network) uses the service.
  - A route is identified within its service by the pair O(source_cidr), O(dest_cidr); give at least one.
    Changing O(priority) updates the route in place (C(PUT /v1/services/{id}/routes/{rid})).
  - To change a CIDR, delete the old route and add the new one, or declare all routes with
    O(arctic.fleet.arctic_service#module:routes) and O(arctic.fleet.arctic_service#module:purge_routes=true).
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
      - Nothing is written; the kernel diff of the agent's dry run C(POST /v1/plan) is returned in
        RV(diff.prepared) when the agent has that endpoint, one section per peer the change touches, each
        under its own header.
      - If the service itself does not exist yet (an earlier task would create it), check mode warns
        and reports the route as a change instead of failing.
  diff_mode:
    support: full
  idempotent:
    support: full
options:
  state:
    description: Whether the route must exist.
    type: str
    choices: [present, absent]
    default: present
  service:
    description: Id or name of the service the route belongs to.
    type: str
    required: true
  source_cidr:
    description: Source network in CIDR notation, for example V(10.0.0.0/8).
    type: str
  dest_cidr:
    description: Destination network in CIDR notation, for example V(192.168.100.0/24).
    type: str
  priority:
    description:
      - Higher wins when two routes are equally specific.
      - V(100) when the route is created without it; left unchanged on an existing route when unset.
    type: int
seealso:
  - module: arctic.fleet.arctic_service
"""

EXAMPLES = r"""
- name: Send 10.0.0.0/8 -> 192.168.100.0/24 through the branch-web service
  arctic.fleet.arctic_route:
    service: branch-web
    source_cidr: 10.0.0.0/8
    dest_cidr: 192.168.100.0/24
    priority: 100

- name: Prefer the more specific source network
  arctic.fleet.arctic_route:
    service: branch-web
    source_cidr: 10.1.0.0/16
    dest_cidr: 192.168.100.0/24
    priority: 200

- name: Destination-only route removed
  arctic.fleet.arctic_route:
    service: branch-web
    dest_cidr: 192.168.200.0/24
    state: absent
"""

RETURN = r"""
route:
  description:
    - The route after the change; null when absent. In check mode, the predicted route
      (V(id) is null for one that would be created).
  returned: always
  type: dict
  sample: {id: 3, service_id: svc_01HZX3J9V6Q4G7W1T6B8Y2N5KC, priority: 200,
           source_cidr: 10.1.0.0/16, dest_cidr: 192.168.100.0/24}
diff:
  description: The route before and after (V(state=absent) when missing).
  returned: always
  type: dict
  contains:
    before:
      description: Route before the change.
      type: dict
      returned: always
    after:
      description: Route after the change (predicted in check mode).
      type: dict
      returned: always
    prepared:
      description:
        - The kernel diff of every peer the change touches, from the agent's dry run, each under a header line
          that names the peer and its id; a peer that could not be asked says why.
      type: str
      returned: in check mode, when the agent supports C(/v1/plan) and something would change
plan:
  description:
    - The dry run of the intended changes, with
      RV(arctic.fleet.arctic_service#module:plan.kernel_diff) and RV(arctic.fleet.arctic_service#module:plan.peers)
      as in M(arctic.fleet.arctic_service).
  returned: in check mode, when something would change
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.arctic.fleet.plugins.module_utils.arctic_api import (
    ArcticApiError,
    ArcticResource,
    arctic_argument_spec,
    arctic_module_kwargs,
    check_network,
    route_key,
    route_view,
)

DEFAULT_PRIORITY = 100


class RouteResource(ArcticResource):
    kind = "route"

    def __init__(self, module, client=None):
        super().__init__(module, client)
        self.service: dict | None = None

    def validate(self) -> None:
        check_network(self.module.params["source_cidr"], "source_cidr")
        check_network(self.module.params["dest_cidr"], "dest_cidr")

    def read(self) -> dict | None:
        params = self.module.params
        self.service = self.client.find_service(params["service"])
        if self.service is None:
            if params["state"] == "absent":
                return None  # no service, so certainly no route
            if self.module.check_mode:
                self.module.warn(
                    f"service {params['service']!r} does not exist; "
                    "assuming an earlier task of this check-mode run creates it"
                )
                self.no_plan_reason = (
                    f"service {params['service']!r} does not exist yet, so the agent cannot dry-run its routes"
                )
                return None
            raise ArcticApiError(f"no service has id or name {params['service']!r}", "NOT_FOUND", 404)
        wanted = route_key(params)
        for route in self.service.get("routes") or []:
            if route_key(route) == wanted:
                return route
        return None

    def normalise(self, obj: dict) -> dict:
        return route_view(obj)

    def desired(self, current: dict | None) -> dict:
        params = self.module.params
        wanted = route_view(params)
        if params["priority"] is None:
            if current is not None:
                del wanted["priority"]
            else:
                wanted["priority"] = DEFAULT_PRIORITY
        return wanted

    def describe(self, current: dict | None) -> str:
        return f"route {self.module.params['source_cidr']} -> {self.module.params['dest_cidr']}"

    def _service_id(self) -> str | None:
        return self.service["id"] if self.service else None

    def create(self, desired: dict) -> dict | None:
        body = {k: v for k, v in desired.items() if v is not None}
        self.record("route.add", body, service_id=self._service_id())
        if self.module.check_mode:
            return dict(body, id=None, service_id=self._service_id())
        answer = self.client.post(f"/v1/services/{self._service_id()}/routes", {"routes": [body]})
        return self._fetch((answer or {}).get("route_ids", [None])[0])

    def update(self, current: dict, delta: dict, desired: dict) -> dict:
        path = f"/v1/services/{self._service_id()}/routes/{current['id']}"
        if self.record("route.update", delta, service_id=self._service_id(), route_id=current["id"]):
            self.client.put(path, delta)
            return self._fetch(current["id"])
        predicted = dict(current)
        predicted.update(delta)
        return predicted

    def delete(self, current: dict) -> None:
        path = f"/v1/services/{self._service_id()}/routes/{current['id']}"
        if self.record("route.delete", service_id=self._service_id(), route_id=current["id"]):
            self.client.delete(path)

    def _fetch(self, route_id: int | None) -> dict | None:
        """The route as the agent now reports it (by id, else by its CIDR pair)."""
        wanted = route_key(self.module.params)
        routes = self.client.service(self._service_id()).get("routes") or []
        for route in routes:
            if route_id is not None and route.get("id") == route_id:
                return route
        for route in routes:
            if route_key(route) == wanted:
                return route
        return None


def main() -> None:
    argument_spec = arctic_argument_spec()
    argument_spec.update(
        state=dict(type="str", choices=["present", "absent"], default="present"),
        service=dict(type="str", required=True),
        source_cidr=dict(type="str"),
        dest_cidr=dict(type="str"),
        priority=dict(type="int"),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        required_one_of=[("source_cidr", "dest_cidr")],
        supports_check_mode=True,
        **arctic_module_kwargs()
    )
    module.exit_json(**RouteResource(module).run(module.params["state"]))


if __name__ == "__main__":
    main()
