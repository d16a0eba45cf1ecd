"""The filters of placement: whether a site can take a request, and why not.

:func:`passes` is the hot path (True or False); :func:`check` says why a
site fails (a :class:`~federation.model.Rejection`) and :func:`choose_pool`
which pool a site would give the VM. They read the per-site aggregates of
:class:`~federation.placement_index.SiteEntry`.

Filters (a site failing any of them is *rejected* with a
:class:`~federation.model.Rejection`):

=================  ==========================================================
code               the site is rejected when
=================  ==========================================================
unknown_site       the user named it but it never reported capacity
unavailable        it reported ``available=False`` (maintenance, draining)
stale              its last heartbeat is older than ``heartbeat_timeout``
location           one of the request's ``location`` tags is missing or differs
vo_not_allowed     it restricts VOs and none of the user's VO/groups is allowed
no_pool            it has no pool named ``network`` ("no pool named X"), or
                   that pool is of another type than ``network_type``, or it
                   has no pool at all and an ``address`` was asked for
no_free_address    the named pool has no free address ("no free address in
                   pool X")
address            ``address`` is not in the pool's CIDR ("address A is not in
                   pool X (cidr)")
network            it has no pool of ``network_type`` with a free address
image              the image is neither cached nor fetchable there
static_image       an image of ``static_images`` is neither cached nor
                   fetchable ("static disk image I not available")
host_tags          no host carries every tag of ``host_tags`` ("no host with
                   tags ...")
capacity           no *single* host (with those tags) has the vCPUs and the
                   RAM free at once
=================  ==========================================================

A candidate carries the pool the site must receive (``Candidate.network``,
see :func:`choose_pool`): the named pool; for a
``network_type`` request the site's default pool of that type, else its
first one, with a free address; for an ``address`` alone the site's default
pool.
"""

from __future__ import annotations

from bisect import bisect_left
from ipaddress import IPv4Address

from federation.model import PlacementRequest, RejectCode, Rejection
from federation.placement_index import SiteEntry


def choose_pool(entry: SiteEntry, req: PlacementRequest) -> tuple[str | None, Rejection | None]:
    """The pool ``entry``'s site gives a VM of ``req``, or why it cannot give one.

    Only meaningful when ``req.needs_address``. A site that reports no pools
    (only free addresses per type) can take a ``network_type`` request
    without an address; its pool is then None (the site picks).
    """
    pools = entry.cap.pools
    if req.type_only is not None and pools:
        chosen = entry.type_pool.get(req.type_only)  # the common case: one lookup
        if chosen is not None:
            return chosen, None
    address = req.address_ip
    if req.network is not None:
        pool = pools.get(req.network)
        if pool is None:
            return None, Rejection(RejectCode.NO_POOL, f"no pool named {req.network}")
        if req.network_type is not None and pool.type is not req.network_type:
            message = f"pool {req.network} is {pool.type}, not {req.network_type}"
            return None, Rejection(RejectCode.NO_POOL, message)
        return _in_pool(entry, req.network, address)
    if req.network_type is not None:
        kind = req.network_type
        if not pools:
            if address is None and entry.type_free.get(kind, 0) > 0:
                return None, None
            return None, Rejection(RejectCode.NETWORK, f"no free {kind} address")
        if address is None:
            chosen = entry.type_pool.get(kind)  # the default, else first, pool with a free address
            if chosen is None:
                return None, Rejection(RejectCode.NETWORK, f"no free {kind} address")
            return chosen, None
        holding = [n for n, pool in pools.items() if pool.type is kind and address in pool.cidr]
        if not holding:
            message = f"address {address} is not in any {kind} pool"
            return None, Rejection(RejectCode.ADDRESS, message)
        return next((n for n in holding if pools[n].default), holding[0]), None
    default = entry.cap.default_pool
    if default is None:
        message = f"site has no address pool (address {address} requested)"
        return None, Rejection(RejectCode.NO_POOL, message)
    return _in_pool(entry, default, address)


#: No own images at a site.
_NONE: frozenset[str] = frozenset()


def _in_pool(
    entry: SiteEntry, name: str, address: IPv4Address | None
) -> tuple[str | None, Rejection | None]:
    pool = entry.cap.pools[name]
    if address is not None:
        if address not in pool.cidr:
            message = f"address {address} is not in pool {name} ({pool.cidr})"
            return None, Rejection(RejectCode.ADDRESS, message)
        return name, None
    if entry.pool_free.get(name, 0) <= 0:
        return None, Rejection(RejectCode.NO_FREE_ADDRESS, f"no free address in pool {name}")
    return name, None


def _stale(entry: SiteEntry, now: float, timeout: float | None) -> bool:
    beat = entry.cap.last_heartbeat
    return timeout is not None and beat is not None and now - beat > timeout


def passes(entry: SiteEntry, req: PlacementRequest, now: float, timeout: float | None) -> bool:
    """True if ``entry`` passes every filter (the hot path; :func:`check` says why not)."""
    cap = entry.cap
    if not cap.available:
        return False
    if (
        timeout is not None
        and cap.last_heartbeat is not None
        and now - cap.last_heartbeat > timeout
    ):
        return False
    if req.location:
        tags = cap.location
        for key, value in req.location.items():
            if tags.get(key) != value:
                return False
    allowed = cap.allowed_vos
    if allowed is not None and allowed.isdisjoint(req.vos):
        return False
    if req.needs_address:
        kind = req.type_only
        if kind is not None and cap.pools:
            if kind not in entry.type_pool:  # the common case, inlined: one lookup
                return False
        elif choose_pool(entry, req)[1] is not None:
            return False
    image = req.image
    own = req.own_images.get(cap.site, _NONE) if req.own_images else _NONE
    if image not in cap.cached_images and image not in own:
        fetchable = cap.fetchable_images
        if fetchable is not None and image not in fetchable:
            return False
    if req.static_images and not all(cap.can_get_image(i) or i in own for i in req.static_images):
        return False
    if req.host_tags:
        return entry.fits_tagged(req.vcpus, req.memory_mib, req.host_tags)
    sky_cpus = entry.sky_cpus
    i = bisect_left(sky_cpus, req.vcpus)
    return i < len(sky_cpus) and entry.sky_memory[i] >= req.memory_mib


def check(
    entry: SiteEntry,
    req: PlacementRequest,
    now: float,
    timeout: float | None,
    *,
    all_reasons: bool = False,
) -> Rejection | None:
    """Why ``entry`` cannot take ``req`` (None if it can).

    With ``all_reasons`` every failing filter is named in the message (the
    code is the first one's); otherwise the first failure is returned.
    """
    cap = entry.cap
    found: list[Rejection] = []

    def reject(rejection: Rejection) -> bool:
        found.append(rejection)
        return not all_reasons

    def first() -> Rejection | None:
        if not found:
            return None
        if len(found) == 1:
            return found[0]
        return Rejection(found[0].code, "; ".join(r.message for r in found))

    if not cap.available and reject(Rejection(RejectCode.UNAVAILABLE, "site is unavailable")):
        return first()
    if _stale(entry, now, timeout):
        assert cap.last_heartbeat is not None and timeout is not None
        message = f"no heartbeat for {now - cap.last_heartbeat:.0f}s (limit {timeout:.0f}s)"
        if reject(Rejection(RejectCode.STALE, message)):
            return first()
    for key, value in req.location.items():
        have = cap.location.get(key)
        if have != value:
            message = (
                f"location {key}={have} does not match constraint {key} == {value}"
                if have is not None
                else f"site has no {key} tag (constraint {key} == {value})"
            )
            if reject(Rejection(RejectCode.LOCATION, message)):
                return first()
            break
    allowed = cap.allowed_vos
    if allowed is not None and allowed.isdisjoint(req.vos):
        who = ", ".join(sorted(req.vos)) or "no VO"
        if reject(Rejection(RejectCode.VO_NOT_ALLOWED, f"VO not allowed at site ({who})")):
            return first()
    if req.needs_address:
        rejection = choose_pool(entry, req)[1]
        if rejection is not None and reject(rejection):
            return first()
    own = req.own_images.get(cap.site, _NONE)
    if (
        not cap.can_get_image(req.image)
        and req.image not in own
        and reject(Rejection(RejectCode.IMAGE, f"image {req.image} neither cached nor fetchable"))
    ):
        return first()
    for image in sorted(req.static_images):
        if not cap.can_get_image(image) and image not in own:
            message = f"static disk image {image} not available"
            if reject(Rejection(RejectCode.STATIC_IMAGE, message)):
                return first()
            break
    rejection = _capacity(entry, req)
    if rejection is not None:
        reject(rejection)
    return first()


def _capacity(entry: SiteEntry, req: PlacementRequest) -> Rejection | None:
    need = f"{req.vcpus} free CPUs and {req.memory_mib} MiB free RAM"
    if req.host_tags:
        tags = ", ".join(sorted(req.host_tags))
        hosts = entry.hosts_with(req.host_tags)
        if not hosts:
            return Rejection(RejectCode.HOST_TAGS, f"no host with tags {tags}")
        if entry.fits_tagged(req.vcpus, req.memory_mib, req.host_tags):
            return None
        most_cpus = max(entry.cpus[i] for i in hosts)
        most_memory = max(entry.memory[i] for i in hosts)
        return Rejection(
            RejectCode.CAPACITY,
            f"no host with tags {tags} has {need} (most free CPUs on such a host: "
            f"{most_cpus}, most free RAM: {most_memory} MiB)",
        )
    if entry.fits(req.vcpus, req.memory_mib):
        return None
    if not entry.sky_cpus:
        return Rejection(RejectCode.CAPACITY, "site reports no hypervisor host")
    return Rejection(
        RejectCode.CAPACITY,
        f"no host with {need} (most free CPUs on a host: {entry.max_cpus}, "
        f"most free RAM on a host: {entry.max_memory} MiB)",
    )
