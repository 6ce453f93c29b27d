# Copyright: Arctic contributors
# SPDX-License-Identifier: Apache-2.0
"""Connection options and capability wording shared by every arctic.fleet module (documented once)."""

from __future__ import annotations


class ModuleDocFragment:

    DOCUMENTATION = r"""
options:
  agent_url:
    description:
      - Base URL of the Arctic agent API, for example V(http://198.18.0.1:8080).
      - Any agent of the cluster answers for the whole cluster.
      - If not set, the value of the E(ARCTIC_AGENT_URL) environment variable is used.
    type: str
    default: http://127.0.0.1:8080
  agent_token:
    description:
      - Bearer token sent as C(Authorization) header.
      - Takes precedence over O(client_id)/O(client_secret).
      - If not set, the value of the E(ARCTIC_AGENT_TOKEN) environment variable is used.
    type: str
  client_id:
    description:
      - OAuth2 client id (C(cli_...)) used to obtain a token from C(POST /v1/oauth/token)
        when O(agent_token) is not set.
      - If not set, the value of the E(ARCTIC_CLIENT_ID) environment variable is used.
    type: str
  client_secret:
    description:
      - OAuth2 client secret (C(sec_...)) that goes with O(client_id).
      - If not set, the value of the E(ARCTIC_CLIENT_SECRET) environment variable is used.
    type: str
  validate_certs:
    description:
      - Verify the agent's TLS certificate when O(agent_url) uses HTTPS.
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait for each answer from the agent.
    type: int
    default: 30
notes:
  - "Modules usually run on the controller (C(delegate_to: localhost) or C(connection: local)) and reach
    the agent over HTTP; they need only the Python standard library."
  - Refusals fail the task with the agent's own message in C(msg), its error code in C(code)
    (for example V(NOT_FOUND), V(INVALID_CIDR)) and the HTTP status in C(status).
    C(code=AGENT_UNREACHABLE) with C(status=-1) means no HTTP answer at all.
"""
