"""The real owner of a VM or volume, as its row records it.

``owner`` is the site account of the caller (the key every visibility and
quota check uses). Beside it each row keeps who that was at the time of the
create: ``owner_identity`` (the DN, ``sub@iss`` or other identity the
caller presented, or ``federated:<broker>:<account>`` for a user a broker
vouched for), ``owner_groups`` and ``owner_fqans`` (their groups/VOs and VOMS
FQANs) and ``via``: the broker that created it on the user's behalf
(``Stratus-Delegation``), or ``None`` for a direct call. A user who made a
VM through a broker and later logs in at the site directly is the same
account, so they see it there.
"""

from __future__ import annotations

from typing import Any

from auth.principal import Principal


def owner_fields(principal: Principal) -> dict[str, Any]:
    """The owner columns of a new row made by ``principal`` (VMs and volumes alike)."""
    return {
        "owner": principal.account,
        "owner_identity": principal.identity,
        "owner_groups": sorted(principal.groups),
        "owner_fqans": list(principal.fqans),
        "via": principal.via,
    }


def actor(principal: Principal) -> str:
    """Who is acting, as the event log says it: ``erin`` or ``erin (via broker-1)``."""
    return principal.account + (f" (via {principal.via})" if principal.via else "")
