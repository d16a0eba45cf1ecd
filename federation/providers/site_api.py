"""The one typed async client of the site agent's API (``/api/v1``), used by the peer provider.

:class:`SiteApi` has one method per site endpoint; requests and answers are
the shapes of :mod:`core.resources`, so the client and the site cannot
disagree on a field. Transport, authentication, retries and the mapping of
errors live in :mod:`federation.providers.site_http` (read its docstring):
404 -> ``ProviderNotFound``, other 4xx -> ``SiteRefused`` (the site's status
and code kept), 401, 5xx, 429 and unreachable after retries -> ``SiteFailed``;
an answer that does not match its shape is ``SiteFailed`` too.

Identity: a ``SiteApi`` acts as the broker's own account at the site
(``token``); :meth:`SiteApi.as_user` returns one acting for an
authenticated user (every request then carries a delegation assertion made
by ``signer``), over the same connection pool.

Endpoints::

    GET    /health                                   health()
    POST   /vms              (Idempotency-Key)       create_vm(spec, idempotency_key=)
    GET    /vms?all=&include_done=&via=              list_vms(query, via=)
    GET    /vms/{id}?wait=&timeout=                  get_vm(id, wait=, timeout=)
    DELETE /vms/{id}?force=                          kill_vm(id, force=)
    POST   /vms/{id}/stop    {save}                  stop_vm(id, save=)
    POST   /vms/{id}/reboot                          reboot_vm(id)
    GET    /vms/{id}/console?tail=                   console(id, tail=)
    GET    /vms/{id}/events                          events(id)
    GET    /vms/{id}/disks                           vm_disks(id)
    POST   /vms/{id}/disks                           attach_disk(id, disk)
    DELETE /vms/{id}/disks/{device}                  detach_disk(id, device)
    POST   /volumes          (Idempotency-Key)       create_volume(body, idempotency_key=)
    GET    /volumes?tag=&visibility=&owner=&all=&via= list_volumes(query, via=)
    GET    /volumes/{id}?wait=&timeout=              get_volume(id, wait=, timeout=)
    PATCH  /volumes/{id}                             update_volume(id, changes)
    DELETE /volumes/{id}                             delete_volume(id)
    POST   /volumes/{id}/attach                      attach_volume(id, body)
    POST   /volumes/{id}/detach                      detach_volume(id, body)
    GET    /networks, /networks/{name}               list_networks(), get_network(name)
    GET    /images, /images/{name}                   list_images(), get_image(name)
    POST   /images                                   register_image(body)
    DELETE /images/{name}                            delete_image(name)
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from auth.delegation import DelegatedUser
from core.resources.images import ImageDeleted, ImageList, ImagePublic, ImageRegister, SaveAs
from core.resources.networks import NetworkDetail, NetworkList, NetworkPublic
from core.resources.vms import (
    ConsoleOutput,
    ConsoleQuery,
    StopRequest,
    VmCreate,
    VmEventList,
    VmEventPublic,
    VmList,
    VmListQuery,
    VmPublic,
    VmShowQuery,
)
from core.resources.volumes import (
    DiskAttach,
    VmDisk,
    VmDiskList,
    VolumeAttach,
    VolumeCreate,
    VolumeDetach,
    VolumeList,
    VolumeListQuery,
    VolumePublic,
    VolumeUpdate,
)
from core.vm_state import VmState
from federation.errors import SiteFailed
from federation.providers.retry import RetryPolicy
from federation.providers.site_http import WAIT_MARGIN, RequestSigner, SiteHttp

M = TypeVar("M", bound=BaseModel)

_VM_STATES = frozenset(s.value for s in VmState)


class SiteHealth(BaseModel):
    """``GET /health``: the site's liveness, name and software version."""

    status: str
    site: str
    version: str


def _seg(value: str) -> str:
    """One path segment, quoted (an id like ``../admin`` stays one segment)."""
    return quote(value, safe="")


def _lenient_vm(data: Any) -> Any:
    """A VM resource whose unknown ``state`` reads as ``unknown``.

    A newer site may report a state this broker does not know; the VM stays
    readable (its state shows ``unknown``) instead of the whole answer being
    rejected as malformed.
    """
    state = data.get("state") if isinstance(data, dict) else None
    if isinstance(state, str) and state not in _VM_STATES:
        return {**data, "state": VmState.UNKNOWN.value}
    return data


def _body(model: BaseModel) -> dict[str, Any]:
    """A request model as the site takes it: only the fields that differ from their defaults."""
    return model.model_dump(mode="json", exclude_defaults=True)


class SiteApi:
    """The typed client of one site's API (see the module docstring).

    ``name``: the site's name (the delegation audience, the ``site`` of
    errors); ``client``: the shared ``httpx.AsyncClient`` (never closed
    here); ``base_url``: the site's root (``https://site-a.example:8440``);
    ``token``: the broker's API token at the site (None: the client
    authenticates otherwise, e.g. by its TLS certificate); ``signer``: signs
    delegation assertions (needed by :meth:`as_user`); ``retry``: the backoff
    for idempotent requests.
    """

    def __init__(
        self,
        name: str,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        token: str | None,
        signer: RequestSigner | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._http = SiteHttp(
            name,
            client,
            base_url=base_url,
            token=token,
            signer=signer,
            retry=retry or RetryPolicy(),
        )

    @classmethod
    def _over(cls, http: SiteHttp) -> SiteApi:
        api = cls.__new__(cls)
        api._http = http
        return api

    @property
    def name(self) -> str:
        return self._http.name

    @property
    def base_url(self) -> str:
        return self._http.base_url

    @property
    def user(self) -> DelegatedUser | None:
        """The user this client acts for (None: the broker's own account)."""
        return self._http.user

    @property
    def can_delegate(self) -> bool:
        """True when :meth:`as_user` can act for a user (a signer is configured)."""
        return self._http.signer is not None

    def as_user(self, user: DelegatedUser | None) -> SiteApi:
        """This client acting for ``user`` (None: as the broker's own account).

        Same connection pool, token and signer. ``ValueError`` if ``user`` is
        given and no signer is configured.
        """
        return SiteApi._over(self._http.for_user(user))

    # --- plumbing ---------------------------------------------------------------------

    def _parse(self, model: type[M], data: Any, what: str) -> M:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "body"
            raise SiteFailed(
                self.name, f"malformed answer to {what}: {where}: {first.get('msg')}"
            ) from exc

    async def _get(self, model: type[M], path: str, **kwargs: Any) -> M:
        return self._parse(model, await self._http.request("GET", path, **kwargs), f"GET {path}")

    async def _vm(self, method: str, path: str, **kwargs: Any) -> VmPublic:
        data = await self._http.request(method, path, **kwargs)
        return self._parse(VmPublic, _lenient_vm(data), f"{method} {path}")

    # --- site ---------------------------------------------------------------------------

    async def health(self) -> SiteHealth:
        return await self._get(SiteHealth, "/health")

    # --- VMs ----------------------------------------------------------------------------

    async def create_vm(self, spec: VmCreate, *, idempotency_key: str | None) -> list[VmPublic]:
        """``POST /vms`` (202): the new VMs (``spec.count`` of them), ``pending``.

        With an ``idempotency_key`` a retry returns the VMs the first try made
        (and the request is retried on transient errors); without, it is sent once.
        """
        data = await self._http.request(
            "POST", "/vms", json_body=_body(spec), idempotency_key=idempotency_key
        )
        if isinstance(data, dict) and isinstance(data.get("vms"), list):
            data = {**data, "vms": [_lenient_vm(vm) for vm in data["vms"]]}
        vms = self._parse(VmList, data, "POST /vms").vms
        if not vms:
            raise SiteFailed(self.name, "malformed answer to POST /vms: no VM in the answer")
        return vms

    async def list_vms(
        self, query: VmListQuery | None = None, *, via: str | None = None
    ) -> list[VmPublic]:
        """``GET /vms``: the caller's VMs (admins with ``all``: everyone's).

        ``via``: only the VMs this broker created (``?via=``; with ``all``, the
        broker's orphan sweep).
        """
        params: dict[str, object] = _body(query) if query is not None else {}
        params["via"] = via
        data = await self._http.request("GET", "/vms", params=params)
        if isinstance(data, dict) and isinstance(data.get("vms"), list):
            data = {**data, "vms": [_lenient_vm(vm) for vm in data["vms"]]}
        return self._parse(VmList, data, "GET /vms").vms

    async def get_vm(
        self,
        vm_id: str,
        *,
        wait: Literal["running", "ready"] | None = None,
        timeout: float = 60.0,
    ) -> VmPublic:
        """``GET /vms/{id}``; with ``wait`` the site holds the answer until the VM is
        ``wait`` (or terminal), at most ``timeout`` seconds."""
        if wait is None:
            return await self._vm("GET", f"/vms/{_seg(vm_id)}")
        query = VmShowQuery(wait=wait, timeout=timeout)
        return await self._vm(
            "GET",
            f"/vms/{_seg(vm_id)}",
            params=query.model_dump(),
            timeout=query.timeout + WAIT_MARGIN,
        )

    async def kill_vm(self, vm_id: str, *, force: bool = False) -> VmPublic:
        """``DELETE /vms/{id}``: destroyed now; the VM as it is afterwards (``done``)."""
        params = {"force": True} if force else None
        return await self._vm("DELETE", f"/vms/{_seg(vm_id)}", params=params)

    async def stop_vm(self, vm_id: str, *, save: SaveAs | None = None) -> VmPublic:
        """``POST /vms/{id}/stop`` (sent once): clean shutdown, optionally saving the disk."""
        body = _body(StopRequest(save=save))
        return await self._vm("POST", f"/vms/{_seg(vm_id)}/stop", json_body=body)

    async def reboot_vm(self, vm_id: str) -> VmPublic:
        """``POST /vms/{id}/reboot`` (sent once): hard reset of a running VM."""
        return await self._vm("POST", f"/vms/{_seg(vm_id)}/reboot")

    async def console(self, vm_id: str, *, tail: int = 65536) -> ConsoleOutput:
        query = ConsoleQuery(tail=tail)
        return await self._get(ConsoleOutput, f"/vms/{_seg(vm_id)}/console", params=_body(query))

    async def events(self, vm_id: str) -> list[VmEventPublic]:
        return (await self._get(VmEventList, f"/vms/{_seg(vm_id)}/events")).events

    async def vm_disks(self, vm_id: str) -> list[VmDisk]:
        return (await self._get(VmDiskList, f"/vms/{_seg(vm_id)}/disks")).disks

    async def attach_disk(self, vm_id: str, disk: DiskAttach) -> VmDisk:
        """``POST /vms/{id}/disks`` (sent once): hot-plug a volume or a static disk."""
        path = f"/vms/{_seg(vm_id)}/disks"
        data = await self._http.request("POST", path, json_body=_body(disk))
        return self._parse(VmDisk, data, f"POST {path}")

    async def detach_disk(self, vm_id: str, device: str) -> VmDisk:
        path = f"/vms/{_seg(vm_id)}/disks/{_seg(device)}"
        return self._parse(VmDisk, await self._http.request("DELETE", path), f"DELETE {path}")

    # --- volumes ------------------------------------------------------------------------

    async def create_volume(
        self, body: VolumeCreate, *, idempotency_key: str | None = None
    ) -> VolumePublic:
        """``POST /volumes`` (202): ``ready``, or ``creating`` while an image is copied."""
        data = await self._http.request(
            "POST", "/volumes", json_body=_body(body), idempotency_key=idempotency_key
        )
        return self._parse(VolumePublic, data, "POST /volumes")

    async def list_volumes(
        self, query: VolumeListQuery | None = None, *, via: str | None = None
    ) -> list[VolumePublic]:
        params: dict[str, object] = _body(query) if query is not None else {}
        params["via"] = via
        return (await self._get(VolumeList, "/volumes", params=params)).volumes

    async def get_volume(
        self, volume_id: str, *, wait: Literal["ready"] | None = None, timeout: float = 60.0
    ) -> VolumePublic:
        path = f"/volumes/{_seg(volume_id)}"
        if wait is None:
            return await self._get(VolumePublic, path)
        if not 0 < timeout <= 600:
            raise ValueError("timeout must be in (0, 600] seconds")
        params = {"wait": wait, "timeout": timeout}
        return await self._get(VolumePublic, path, params=params, timeout=timeout + WAIT_MARGIN)

    async def update_volume(self, volume_id: str, changes: VolumeUpdate) -> VolumePublic:
        """``PATCH /volumes/{id}`` (sent once): tag and/or visibility."""
        path = f"/volumes/{_seg(volume_id)}"
        data = await self._http.request("PATCH", path, json_body=_body(changes))
        return self._parse(VolumePublic, data, f"PATCH {path}")

    async def delete_volume(self, volume_id: str) -> None:
        """``DELETE /volumes/{id}``; ``ProviderNotFound`` if there is none."""
        await self._http.request("DELETE", f"/volumes/{_seg(volume_id)}")

    async def attach_volume(self, volume_id: str, body: VolumeAttach) -> VmDisk:
        path = f"/volumes/{_seg(volume_id)}/attach"
        data = await self._http.request("POST", path, json_body=_body(body))
        return self._parse(VmDisk, data, f"POST {path}")

    async def detach_volume(self, volume_id: str, body: VolumeDetach) -> VmDisk:
        path = f"/volumes/{_seg(volume_id)}/detach"
        data = await self._http.request("POST", path, json_body=_body(body))
        return self._parse(VmDisk, data, f"POST {path}")

    # --- networks and images ------------------------------------------------------------

    async def list_networks(self) -> list[NetworkPublic]:
        return (await self._get(NetworkList, "/networks")).networks

    async def get_network(self, name: str) -> NetworkDetail:
        return await self._get(NetworkDetail, f"/networks/{_seg(name)}")

    async def list_images(self) -> list[ImagePublic]:
        return (await self._get(ImageList, "/images")).images

    async def get_image(self, name: str) -> ImagePublic:
        return await self._get(ImagePublic, f"/images/{_seg(name)}")

    async def register_image(self, body: ImageRegister) -> ImagePublic:
        """``POST /images`` (201, sent once): registered, fetched on first use."""
        data = await self._http.request("POST", "/images", json_body=_body(body))
        return self._parse(ImagePublic, data, "POST /images")

    async def delete_image(self, name: str) -> ImageDeleted:
        path = f"/images/{_seg(name)}"
        return self._parse(ImageDeleted, await self._http.request("DELETE", path), f"DELETE {path}")
