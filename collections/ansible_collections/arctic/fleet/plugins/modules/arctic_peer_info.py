#!/usr/bin/python
# Copyright: Arctic contributors
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
module: arctic_peer_info
short_description: List the peers of an Arctic cluster
description:
  - Read the peers the agent knows (C(GET /v1/peers)), optionally one peer by id or name.
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
  peer:
    description:
      - Id (V(peer_...) or bare ULID) or name of one peer. A missing peer is not an error;
        RV(exists) is then V(false).
    type: str
  is_local:
    description:
      - Only the agent's own peer (V(true)) or only the other peers (V(false)).
    type: bool
seealso:
  - module: arctic.fleet.arctic_peer
"""

EXAMPLES = r"""
- name: All peers
  arctic.fleet.arctic_peer_info:
  register: cluster

- name: The id of the branch peer
  arctic.fleet.arctic_peer_info:
    peer: branch
  register: branch

- name: Fail early when the branch peer has not joined
  ansible.builtin.assert:
    that: branch.exists
    fail_msg: "peer 'branch' is not in the cluster"

- name: Which peer is the agent we talk to
  arctic.fleet.arctic_peer_info:
    is_local: true
  register: me
"""

RETURN = r"""
peers:
  description: The matching peers, as C(GET /v1/peers) returns them.
  returned: always
  type: list
  elements: dict
  sample:
    - {id: peer_01HZX3H1C5M2S8J3Q9W4E7R6TA, name: gateway, address: "198.18.0.1:8080", is_local: true,
       public_key: "3n1...=", created_at: "2026-01-15T10:30:00Z"}
exists:
  description: Whether O(peer) was found.
  returned: when O(peer) is set
  type: bool
peer:
  description: The peer named by O(peer), or null.
  returned: when O(peer) is set
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.arctic.fleet.plugins.module_utils.arctic_api import (
    ArcticApiError,
    ArcticClient,
    arctic_argument_spec,
    arctic_module_kwargs,
    find_one,
)


def main() -> None:
    argument_spec = arctic_argument_spec()
    argument_spec.update(peer=dict(type="str"), is_local=dict(type="bool"))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True, **arctic_module_kwargs())
    client = ArcticClient(module)
    try:
        peers = client.peers()
        if module.params["is_local"] is not None:
            peers = [p for p in peers if bool(p.get("is_local")) == module.params["is_local"]]
        result: dict = {"changed": False}
        if module.params["peer"]:
            found = find_one(peers, module.params["peer"], "peer")
            peers = [found] if found else []
            result.update(exists=found is not None, peer=found)
        result["peers"] = peers
        module.exit_json(**result)
    except ArcticApiError as error:
        error.fail(module)


if __name__ == "__main__":
    main()
