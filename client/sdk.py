"""The Stratus Python SDK: one client for a site agent or the broker (same API shapes).

>>> from client.sdk import StratusClient
>>> with StratusClient("http://127.0.0.1:8440", token="...") as api:
...     vm = api.create_vms({"image": "busybox"})[0]
...     api.get_vm(vm["id"], wait="ready")

Responses are plain dicts (the JSON documented in ``docs/api.md``). Errors
raise :class:`client.errors.ApiError` carrying the service's error code.
"""

from __future__ import annotations

import uuid
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from client.config import Endpoint
from client.errors import ConnectionFailed
from client.transport import api_error, tls_context

API = "/api/v1"


class StratusClient:
    """Synchronous client; ``transport`` can be injected (``httpx.MockTransport``, respx)."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        cert: str | None = None,
        ca: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"User-Agent": "stratus-client/0.1"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=url.rstrip("/") + API,
            headers=headers,
            verify=tls_context(cert, ca),
            timeout=timeout,
            transport=transport,
        )

    @classmethod
    def from_endpoint(cls, endpoint: Endpoint, **kwargs: Any) -> StratusClient:
        return cls(endpoint.url, token=endpoint.token, cert=endpoint.cert, ca=endpoint.ca, **kwargs)

    def __enter__(self) -> StratusClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(
        self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        """Send a request; the decoded JSON body, or ``ApiError`` / ``ConnectionFailed``."""
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"cannot reach {self._http.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise api_error(response)
        return response.json() if response.content else None

    # --- VMs ---------------------------------------------------------------

    def create_vms(
        self, spec: dict[str, Any], *, idempotency_key: str | None = None
    ) -> list[dict[str, Any]]:
        """Create VMs; retries of the same call are safe (an Idempotency-Key is always sent)."""
        key = idempotency_key or str(uuid.uuid4())
        body = self.request("POST", "/vms", json=spec, headers={"Idempotency-Key": key})
        vms: list[dict[str, Any]] = body["vms"]
        return vms

    def list_vms(self, *, all_owners: bool = False) -> list[dict[str, Any]]:
        params = {"all": "true"} if all_owners else {}
        vms: list[dict[str, Any]] = self.request("GET", "/vms", params=params)["vms"]
        return vms

    def list_vms_with_warnings(
        self, *, all_owners: bool = False
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """VMs and the listing's warnings (a broker lists partially when a site is down)."""
        params = {"all": "true"} if all_owners else {}
        body = self.request("GET", "/vms", params=params)
        return list(body["vms"]), [str(w) for w in body.get("warnings", [])]

    def get_vm(
        self, vm_id: str, *, wait: str | None = None, wait_timeout: float = 60.0
    ) -> dict[str, Any]:
        """A VM; with ``wait`` (``running``/``ready``) the service holds the answer until then."""
        params: dict[str, Any] = {}
        timeout = None
        if wait:
            params = {"wait": wait, "timeout": wait_timeout}
            timeout = wait_timeout + 10
        vm: dict[str, Any] = self.request("GET", f"/vms/{vm_id}", params=params, timeout=timeout)
        return vm

    def kill_vm(self, vm_id: str, *, force: bool = False) -> dict[str, Any]:
        """Kill a VM; ``force`` also drops a pending save as image (else 409 ``save_pending``)."""
        params = {"force": "true"} if force else {}
        vm: dict[str, Any] = self.request("DELETE", f"/vms/{vm_id}", params=params)
        return vm

    def stop_vm(
        self, vm_id: str, *, save_as: str | None = None, save_description: str = ""
    ) -> dict[str, Any]:
        """Stop a VM cleanly; with ``save_as`` its root disk becomes that new image."""
        kwargs: dict[str, Any] = {}
        if save_as is not None:
            kwargs["json"] = {"save": {"name": save_as, "description": save_description}}
        vm: dict[str, Any] = self.request("POST", f"/vms/{vm_id}/stop", **kwargs)
        return vm

    def reboot_vm(self, vm_id: str) -> dict[str, Any]:
        vm: dict[str, Any] = self.request("POST", f"/vms/{vm_id}/reboot")
        return vm

    def console(self, vm_id: str, *, tail: int = 65536) -> str:
        output: str = self.request("GET", f"/vms/{vm_id}/console", params={"tail": tail})["output"]
        return output

    def events(self, vm_id: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self.request("GET", f"/vms/{vm_id}/events")["events"]
        return events

    # --- site ----------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        health: dict[str, Any] = self.request("GET", "/health")
        return health

    def list_images(self) -> list[dict[str, Any]]:
        return self.list_images_with_warnings()[0]

    def list_images_with_warnings(self) -> tuple[list[dict[str, Any]], list[str]]:
        """Images and the listing's warnings (a broker lists every site's, with ``sites``)."""
        body = self.request("GET", "/images")
        return list(body["images"]), [str(w) for w in body.get("warnings", [])]

    def register_image(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Register an image by URL (``docs/images.md``); it is downloaded on first use.

        At a broker ``spec`` also says where: ``site`` or ``all_sites: true``."""
        image: dict[str, Any] = self.request("POST", "/images", json=spec)
        return image

    def get_image(self, name: str, *, site: str | None = None) -> dict[str, Any]:
        """One image; ``site``: the image of that site (brokers)."""
        params = {"site": site} if site is not None else {}
        image: dict[str, Any] = self.request(
            "GET", f"/images/{quote(name, safe='')}", params=params
        )
        return image

    def delete_image(self, name: str, *, site: str | None = None) -> dict[str, Any]:
        """Delete an image; ``site``: at that site (brokers, when several have it)."""
        params = {"site": site} if site is not None else {}
        deleted: dict[str, Any] = self.request(
            "DELETE", f"/images/{quote(name, safe='')}", params=params
        )
        return deleted

    def whoami(self) -> dict[str, Any]:
        who: dict[str, Any] = self.request("GET", "/whoami")
        return who

    def list_accounts(self) -> list[dict[str, Any]]:
        accounts: list[dict[str, Any]] = self.request("GET", "/accounts")["accounts"]
        return accounts

    def account(self, name: str) -> dict[str, Any]:
        account: dict[str, Any] = self.request("GET", f"/accounts/{name}")
        return account

    def create_account(self, spec: dict[str, Any]) -> dict[str, Any]:
        account: dict[str, Any] = self.request("POST", "/accounts", json=spec)
        return account

    def update_account(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        account: dict[str, Any] = self.request("PATCH", f"/accounts/{name}", json=changes)
        return account

    def delete_account(self, name: str) -> None:
        self.request("DELETE", f"/accounts/{name}")

    def link_identity(self, name: str, identity: str, kind: str) -> dict[str, Any]:
        body = {"identity": identity, "kind": kind}
        account: dict[str, Any] = self.request("POST", f"/accounts/{name}/identities", json=body)
        return account

    def add_to_group(self, name: str, group: str, *, admin: bool = False) -> dict[str, Any]:
        body = {"group": group, "admin": admin}
        account: dict[str, Any] = self.request("POST", f"/accounts/{name}/groups", json=body)
        return account

    def remove_from_group(self, name: str, group: str) -> dict[str, Any]:
        account: dict[str, Any] = self.request("DELETE", f"/accounts/{name}/groups/{quote(group)}")
        return account

    # --- volumes, disks, networks ---------------------------------------------------

    def create_volume(
        self, spec: dict[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Create a volume (``size_gib``, ``tag``, ``visibility``, ``cow_of`` or ``image``;
        ``site`` at a broker).  Sends an ``Idempotency-Key`` (a fresh one by default): a
        broker returns the same volume for a repeated key."""
        key = idempotency_key or str(uuid.uuid4())
        volume: dict[str, Any] = self.request(
            "POST", "/volumes", json=spec, headers={"Idempotency-Key": key}
        )
        return volume

    def list_volumes(
        self,
        *,
        tag: str | None = None,
        visibility: str | None = None,
        owner: str | None = None,
        all_owners: bool = False,
    ) -> list[dict[str, Any]]:
        """Your volumes and public ones; ``tag`` is a regular expression searched in the tag."""
        return self.list_volumes_with_warnings(
            tag=tag, visibility=visibility, owner=owner, all_owners=all_owners
        )[0]

    def list_volumes_with_warnings(
        self,
        *,
        tag: str | None = None,
        visibility: str | None = None,
        owner: str | None = None,
        all_owners: bool = False,
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """Volumes and the listing's warnings (a broker lists partially when a site is down)."""
        params: dict[str, str] = {}
        if tag is not None:
            params["tag"] = tag
        if visibility is not None:
            params["visibility"] = visibility
        if owner is not None:
            params["owner"] = owner
        if all_owners:
            params["all"] = "true"
        body = self.request("GET", "/volumes", params=params)
        return list(body["volumes"]), [str(w) for w in body.get("warnings", [])]

    def get_volume(
        self, volume_id: str, *, wait: bool = False, wait_timeout: float = 60.0
    ) -> dict[str, Any]:
        """A volume; with ``wait`` the service answers once an image copy is finished."""
        params: dict[str, Any] = {"wait": "ready", "timeout": wait_timeout} if wait else {}
        volume: dict[str, Any] = self.request(
            "GET",
            f"/volumes/{quote(volume_id, safe='')}",
            params=params,
            timeout=wait_timeout + 10 if wait else None,
        )
        return volume

    def update_volume(self, volume_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        volume: dict[str, Any] = self.request(
            "PATCH", f"/volumes/{quote(volume_id, safe='')}", json=changes
        )
        return volume

    def delete_volume(self, volume_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("DELETE", f"/volumes/{quote(volume_id, safe='')}")
        return result

    def attach_volume(
        self, volume_id: str, vm_id: str, *, readonly: bool = False
    ) -> dict[str, Any]:
        """Hot-plug a volume into a running VM; the answer names the guest ``device``."""
        disk: dict[str, Any] = self.request(
            "POST",
            f"/volumes/{quote(volume_id, safe='')}/attach",
            json={"vm_id": vm_id, "readonly": readonly},
        )
        return disk

    def detach_volume(self, volume_id: str, vm_id: str | None = None) -> dict[str, Any]:
        """Hot-unplug a volume (from ``vm_id``, or the one VM of yours that has it)."""
        body = {"vm_id": vm_id} if vm_id is not None else {}
        disk: dict[str, Any] = self.request(
            "POST", f"/volumes/{quote(volume_id, safe='')}/detach", json=body
        )
        return disk

    def vm_disks(self, vm_id: str) -> list[dict[str, Any]]:
        """Volumes and static disks plugged into a VM."""
        body = self.request("GET", f"/vms/{quote(vm_id, safe='')}/disks")
        disks: list[dict[str, Any]] = body["disks"]
        return disks

    def attach_static_disk(self, vm_id: str, image: str) -> dict[str, Any]:
        """Hot-plug the image ``image`` read-only into a running VM."""
        disk: dict[str, Any] = self.request(
            "POST", f"/vms/{quote(vm_id, safe='')}/disks", json={"static_disk": image}
        )
        return disk

    def detach_disk(self, vm_id: str, device: str) -> dict[str, Any]:
        """Hot-unplug the disk at guest ``device`` (e.g. ``vdc``) from a running VM."""
        disk: dict[str, Any] = self.request(
            "DELETE", f"/vms/{quote(vm_id, safe='')}/disks/{quote(device, safe='')}"
        )
        return disk

    def list_networks(self) -> list[dict[str, Any]]:
        """Address pools with their size and free addresses."""
        return self.list_networks_with_warnings()[0]

    def list_networks_with_warnings(self) -> tuple[list[dict[str, Any]], list[str]]:
        """Pools and the listing's warnings (a broker lists every site's, with ``site``)."""
        body = self.request("GET", "/networks")
        return list(body["networks"]), [str(w) for w in body.get("warnings", [])]

    def get_network(self, name: str, *, site: str | None = None) -> dict[str, Any]:
        """One pool with its leases (every lease for admins, your own otherwise);
        ``site``: the pool of that site (brokers)."""
        params = {"site": site} if site is not None else {}
        network: dict[str, Any] = self.request(
            "GET", f"/networks/{quote(name, safe='')}", params=params
        )
        return network

    # --- federation (broker) ------------------------------------------------------

    def list_sites(self) -> list[dict[str, Any]]:
        """The broker's sites and public clouds, with status and free capacity."""
        sites: list[dict[str, Any]] = self.request("GET", "/sites")["sites"]
        return sites

    def get_site(self, name: str) -> dict[str, Any]:
        site: dict[str, Any] = self.request("GET", f"/sites/{quote(name, safe='')}")
        return site

    def list_hosts(self) -> list[dict[str, Any]]:
        hosts: list[dict[str, Any]] = self.request("GET", "/hosts")["hosts"]
        return hosts
