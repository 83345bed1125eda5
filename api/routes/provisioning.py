"""The provisioning routers (issue 17), one per CLI command group, in /docs order.

Apart from the package's own list so that this group of 13 routers (docs/provisioning.md
maps each to its CLI command) is added to ``ROUTERS`` as one name.
"""
from . import (
    aliases,
    blacklists,
    carriers,
    dialplans,
    dialroutes,
    domains,
    forwarding,
    gateways,
    groups,
    media_servers,
    tokens,
    trusted,
    users,
)

__all__ = ["PROVISIONING"]

PROVISIONING = tuple(module.router for module in (users, domains, aliases, gateways, carriers, dialroutes, dialplans,
                                                  blacklists, trusted, groups, forwarding, media_servers, tokens))
