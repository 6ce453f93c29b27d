#!/usr/bin/python
# Copyright: Arctic contributors
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
module: arctic_peer
short_description: Join an Arctic agent to the cluster (or remove it)
description:
  - Ask the agent at O(agent_url) to add the agent listening at O(address) to its cluster
    (C(POST /v1/peers), which runs the peers' handshake). Both agents must carry licences of the same customer.
  - Idempotent by address; a peer already known at O(address) is left alone, except that a different
    O(name) is set on it.
  - O(state=absent) removes a remote peer from the cluster view; the agent's own (local) peer is refused.
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
    details: Nothing is written; the handshake is not attempted, so check mode cannot tell whether it would succeed.
  diff_mode:
    support: full
  idempotent:
    support: full
options:
  state:
    description: Whether the peer must be part of the cluster.
    type: str
    choices: [present, absent]
    default: present
  address:
    description:
      - V(host:port) where the other agent's API listens, for example V(198.18.0.2:8080).
        The port defaults to V(8080).
    type: str
    required: true
  name:
    description: Display name of the peer. Not managed when unset.
    type: str
seealso:
  - module: arctic.fleet.arctic_peer_info
"""

EXAMPLES = r"""
- name: Join the branch agent to the cluster through the gateway's API
  arctic.fleet.arctic_peer:
    agent_url: http://198.18.0.1:8080
    address: 198.18.0.2:8080
    name: branch

- name: Remove a decommissioned peer
  arctic.fleet.arctic_peer:
    address: 198.18.0.3:8080
    state: absent
"""

RETURN = r"""
peer:
  description: The peer as the agent reports it; null when absent. In check mode, the predicted peer.
  returned: always
  type: dict
  sample: {id: peer_01HZX3H8D0A6P1K5V2N9F3G4HB, name: branch, address: "198.18.0.2:8080",
           is_local: false, public_key: "q2v...=", created_at: "2026-01-15T10:30:00Z"}
diff:
  description: Address and name before and after (V(state=absent) when not a member).
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.arctic.fleet.plugins.module_utils.arctic_api import (
    ArcticApiError,
    ArcticResource,
    arctic_argument_spec,
    arctic_module_kwargs,
    normalise_address,
)


class PeerResource(ArcticResource):
    kind = "peer"

    def __init__(self, module, client=None):
        super().__init__(module, client)
        self.no_plan_reason = "peer membership has no kernel dry run"

    @property
    def address(self) -> str:
        return normalise_address(self.module.params["address"])

    def read(self) -> dict | None:
        for peer in self.client.peers():
            if peer.get("address") and normalise_address(peer["address"]) == self.address:
                return peer
        return None

    def normalise(self, obj: dict) -> dict:
        return {"address": normalise_address(obj.get("address") or ""), "name": obj.get("name") or ""}

    def desired(self, current: dict | None) -> dict:
        wanted = {"address": self.address}
        if self.module.params["name"] is not None:
            wanted["name"] = self.module.params["name"]
        return wanted

    def create(self, desired: dict) -> dict | None:
        if self.record("peer.add", desired):
            return self.client.post("/v1/peers", desired)
        return dict(desired, id=None, is_local=False)

    def update(self, current: dict, delta: dict, desired: dict) -> dict:
        if self.record("peer.update", delta, peer_id=current["id"]):
            return self.client.put(f"/v1/peers/{current['id']}", delta)
        predicted = dict(current)
        predicted.update(delta)
        return predicted

    def delete(self, current: dict) -> None:
        if current.get("is_local"):
            raise ArcticApiError(
                f"{self.describe(current)} at {current.get('address')} is the agent's own peer; "
                "point agent_url at another agent to remove it"
            )
        if self.record("peer.delete", peer_id=current["id"]):
            self.client.delete(f"/v1/peers/{current['id']}")


def main() -> None:
    argument_spec = arctic_argument_spec()
    argument_spec.update(
        state=dict(type="str", choices=["present", "absent"], default="present"),
        address=dict(type="str", required=True),
        name=dict(type="str"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True, **arctic_module_kwargs())
    module.exit_json(**PeerResource(module).run(module.params["state"]))


if __name__ == "__main__":
    main()
