#!/usr/bin/python
# Copyright: Arctic contributors
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
module: arctic_service_info
short_description: List Arctic services and their routes
description:
  - Read services (C(GET /v1/services)), optionally filtered by peer, or one service with its routes.
  - Never changes anything and always reports C(changed=false).
version_added: 0.1.0
author:
  - Arctic contributors (!UNKNOWN)
extends_documentation_fragment:
  - arctic.fleet.connection
  - arctic.fleet.attributes
  - arctic.fleet.attributes.action_group
  - arctic.fleet.attributes.info_module
options:
  service:
    description:
      - Id or name of one service; it is returned with its routes. A missing service is not an
        error; RV(exists) is then V(false).
    type: str
  source_peer:
    description: Only services whose traffic enters at this peer (id or name).
    type: str
  target_peer:
    description: Only services whose traffic leaves at this peer (id or name).
    type: str
  include_routes:
    description:
      - Return every listed service in its detailed form, with C(routes) (one extra request per service).
    type: bool
    default: false
seealso:
  - module: arctic.fleet.arctic_service
"""

EXAMPLES = r"""
- name: One service with its routes in precedence order
  arctic.fleet.arctic_service_info:
    service: branch-web
  register: web

- name: Everything that leaves at the branch peer
  arctic.fleet.arctic_service_info:
    target_peer: branch
    include_routes: true
  register: to_branch
"""

RETURN = r"""
services:
  description: The matching services as the agent returns them (with C(routes) when detailed).
  returned: always
  type: list
  elements: dict
  sample:
    - {id: svc_01HZX3J9V6Q4G7W1T6B8Y2N5KC, name: branch-web, source_peer_id: peer_01HZX3H1C5M2S8J3Q9W4E7R6TA,
       target_peer_id: peer_01HZX3H8D0A6P1K5V2N9F3G4HB, transport_type: tcp, requires_interface: true,
       fully_transparent: false, bandwidth_limit_mbps: 1000, route_count: 2}
exists:
  description: Whether O(service) was found.
  returned: when O(service) is set
  type: bool
service:
  description: The service named by O(service) with its C(routes), or null.
  returned: when O(service) is set
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.arctic.fleet.plugins.module_utils.arctic_api import (
    ArcticApiError,
    ArcticClient,
    arctic_argument_spec,
    arctic_module_kwargs,
)


def main() -> None:
    argument_spec = arctic_argument_spec()
    argument_spec.update(
        service=dict(type="str"),
        source_peer=dict(type="str"),
        target_peer=dict(type="str"),
        include_routes=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True, **arctic_module_kwargs())
    params = module.params
    client = ArcticClient(module)
    try:
        filters = {}
        for option in ("source_peer", "target_peer"):
            if params[option]:
                filters[option + "_id"] = client.resolve_peer(params[option])["id"]
        result: dict = {"changed": False}
        if params["service"]:
            found = client.find_service(params["service"])
            if found is not None and any(found.get(k) != v for k, v in filters.items()):
                found = None
            result.update(exists=found is not None, service=found, services=[found] if found else [])
        else:
            services = client.services(**filters)
            if params["include_routes"]:
                services = [client.service(s["id"]) for s in services]
            result["services"] = services
        module.exit_json(**result)
    except ArcticApiError as error:
        error.fail(module)


if __name__ == "__main__":
    main()
