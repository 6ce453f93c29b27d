"""Every number and name Arctic puts into the kernel, in one place.

Operators grep for ``arctic`` (seed: ``nft list ruleset | grep arctic``), and other software on the host owns
other marks, tables and rule priorities, so each constant is chosen to be recognisable and to stay out of the
way: one nft table, one byte of the packet mark, one routing table.
"""

from __future__ import annotations

# --- nftables ---------------------------------------------------------------------------------------------------
NFT_FAMILY = "inet"  # one table for IPv4 and IPv6
NFT_TABLE = "arctic"
NFT_CHAIN = "prerouting"
# Just before the conventional mangle priority (-150), so our mark is set before other mangle chains run and
# always before routing (TPROXY must act before the routing decision).
NFT_CHAIN_PRIORITY = "mangle - 1"
# Comments on every rule and set element start with this word, so `nft list ruleset | grep arctic` explains itself.
NFT_COMMENT_PREFIX = "arctic"

# --- packet mark ------------------------------------------------------------------------------------------------
# TPROXY'd packets (and packets of our transparent sockets) carry 0x1a in the third byte of the mark. Only the
# bits under FWMARK_MASK are written (``meta mark set meta mark & ~mask | mark``), so marks that other host
# software sets in the other bytes survive.
FWMARK = 0x001A0000
FWMARK_MASK = 0x00FF0000

# --- policy routing ---------------------------------------------------------------------------------------------
# Marked packets are looked up in this table, which holds only ``local 0.0.0.0/0 dev lo`` (and ``::/0``): that
# is what makes the kernel deliver a packet for a foreign address to the local TPROXY socket.
ROUTE_TABLE = 61080
# Evaluated before ``main`` (32766); low enough to win over typical admin source-routing rules.
RULE_PRIORITY = 1080

# --- service interfaces -----------------------------------------------------------------------------------------
IFNAME_PREFIX = "arc"  # + 10 hex digits of a hash of the service id = 13 characters (IFNAMSIZ allows 15)
IFNAME_HASH_CHARS = 10
IFALIAS_PREFIX = "arctic "  # the link alias names the service: ownership proof and a hint in `ip link`
MACVLAN_MODE = "bridge"

# --- sysctls ----------------------------------------------------------------------------------------------------
RP_FILTER_LOOSE = "2"  # effective rp_filter is max(all, iface), so loose (2) relaxes even when all=1

# --- ports (defaults of DesiredState) ---------------------------------------------------------------------------
DEFAULT_TPROXY_PORT = 61080
DEFAULT_TUNNEL_PORT = 61000
