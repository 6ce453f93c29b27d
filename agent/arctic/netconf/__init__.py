"""Desired kernel state -> text rendered from ``templates/`` -> applied (nft, pyroute2, tc).

Data-plane plumbing (this file's neighbours):

* ``desired``     - the input: ``DesiredState`` / ``ServiceSpec`` / ``RouteSpec`` (pure dataclasses) + ``validate``;
* ``constants``   - table, chain, fwmark/mask, routing table, rule priority, interface naming;
* ``ruleset``     - routes in precedence order -> ``table inet arctic`` (runs of one shape become set lookups);
* ``nft``         - the ``nft`` command: one atomic transaction, list, check;
* ``policy``      - ``ip rule fwmark`` + ``local 0/0 dev lo`` routes (pyroute2);
* ``sysctl``      - ip_forward / rp_filter, applied and recorded so they can be put back;
* ``interfaces``  - per-service MACVLAN on the target peer (parent choice, static address or DHCP);
* ``dhcp``, ``dhcp_client`` - one supervised pyroute2 DHCP client per DHCP-addressed service interface;
* ``netplan``     - persistent YAML for the service interfaces;
* ``applier``     - ``KernelApplier``: the one object that touches the kernel (caller's network namespace);
* ``reconciler``  - ``Reconciler``: plan (dry run + diff), apply (only what differs, drift repair), teardown.

Shaping (``qos_*``) lives here too and follows the same render-then-apply pattern.
"""

from .desired import DesiredState, RouteSpec, ServiceSpec
from .errors import DesiredStateError, InterfaceError, NetconfError, NftError, PolicyRoutingError
from .interfaces import InterfaceStatus

__all__ = [
    "DesiredState", "DesiredStateError", "InterfaceError", "InterfaceStatus", "NetconfError", "NftError",
    "PolicyRoutingError", "RouteSpec", "ServiceSpec",
]
