"""A public cloud (cloud bursting) through an Apache Libcloud compute driver.

:class:`LibcloudProvider` wraps a libcloud ``NodeDriver`` (EC2; in tests
pointed at ``moto_server`` on loopback) behind :class:`ComputeProvider`.
The EC2 specifics (the moto namespace fix, :data:`CLOUD_STATE_MAP`, error
codes, status checks) are in :mod:`federation.providers.ec2`.

* libcloud is blocking: every call runs in a worker thread
  (``asyncio.to_thread``), each thread with its own driver instance (libcloud
  connections are not thread-safe).
* The create body is the site's (``VMCreateRequest.spec``). Stratus image
  names map to the cloud's image ids (AMIs) and instance types to cloud sizes
  through :class:`~federation.model.PublicCloudConfig`; an unmapped image or
  size is a refusal. SSH keys, context and user data become the instance's
  user data for cloud-init (:mod:`federation.providers.cloud_spec`). What a
  public cloud cannot honour (Stratus volumes, read-only volumes, static
  disks, an address pool or address, host tags, a sharing group) is refused
  with 422 ``not_supported_by_cloud`` before anything is made.
* Nodes are tagged (``stratus-vm-id``, ``stratus-idempotency-key``,
  ``stratus-image``, ``stratus-instance-type``); a create first looks for a
  live node with its key, so a retry after a lost answer makes no second node
  (the key also goes in EC2's ``ClientToken`` when it fits).
* 5xx, 429, throttling and connection errors are retried with backoff; then
  the cloud counts as failed (``SiteFailed``), after a best-effort removal of
  any node tagged with a failed create's key. Other 4xx answers are
  refusals (``SiteRefused`` with the HTTP status and the EC2 error code).

Optional operations: what EC2 and moto really do: ``stop`` (a clean
shutdown; the VM stays ``stopped`` until killed, where a site's is ``done``;
no save as image), ``reboot``, ``console`` and ``wait`` (polling; ``ready``
is EC2's status checks passing). Volumes, disks, networks, images and events
are Stratus resources a public cloud does not have.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from libcloud.common.exceptions import BaseHTTPError
from libcloud.common.types import InvalidCredsError, LibcloudError
from libcloud.compute.base import Node, NodeDriver, NodeImage, NodeSize
from libcloud.compute.types import NodeState

from core.resources.images import SaveAs
from core.resources.vms import ConsoleOutput, VmCreate
from core.vm_state import VmState, parse_state
from federation.errors import ProviderNotFound, SiteFailed, SiteRefused
from federation.model import CloudSize, PublicCloudConfig
from federation.providers.base import (
    ComputeProvider,
    Operation,
    ProviderVM,
    VMCreateRequest,
    WaitFor,
)
from federation.providers.cloud_spec import UserDataTooLarge, cloud_user_data, unsupported_parts
from federation.providers.ec2 import (
    CLOUD_STATE_MAP,
    GONE_EC2_STATES,
    LIVE_EC2_STATES,
    NamespaceTolerantEC2NodeDriver,
    error_message,
    find_node,
    is_not_found,
    is_transient,
    live_nodes_tagged,
    make_driver,
    refusal,
    with_readiness,
)
from federation.providers.retry import RetryPolicy

__all__ = [
    "CLOUD_STATE_MAP",
    "TAG_IMAGE",
    "TAG_INSTANCE_TYPE",
    "TAG_KEY",
    "TAG_VM_ID",
    "LibcloudProvider",
    "NamespaceTolerantEC2NodeDriver",
    "make_driver",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

TAG_VM_ID = "stratus-vm-id"
TAG_KEY = "stratus-idempotency-key"
TAG_IMAGE = "stratus-image"
TAG_INSTANCE_TYPE = "stratus-instance-type"

NOT_SUPPORTED = "not_supported_by_cloud"


class LibcloudProvider(ComputeProvider):
    """A public cloud as a :class:`ComputeProvider`; ``name`` is the cloud's name.

    ``driver_factory`` builds one driver per worker thread (default:
    :func:`~federation.providers.ec2.make_driver`). ``retry`` governs retries
    of transient errors; ``poll_interval`` the seconds between looks while
    :meth:`wait_vm` waits.
    """

    kind = "cloud"
    operations = frozenset({Operation.STOP, Operation.REBOOT, Operation.CONSOLE, Operation.WAIT})

    def __init__(
        self,
        config: PublicCloudConfig,
        *,
        retry: RetryPolicy | None = None,
        driver_factory: Callable[[], NodeDriver] | None = None,
        timeout: float = 30.0,
        poll_interval: float = 1.0,
    ) -> None:
        self.name = config.name
        self.config = config
        self._retry = retry or RetryPolicy()
        self._poll = poll_interval
        if driver_factory is None:
            make_driver(config, timeout=timeout)  # validate the configuration now
            self._factory: Callable[[], NodeDriver] = lambda: make_driver(config, timeout=timeout)
        else:
            self._factory = driver_factory
        self._local = threading.local()

    # -- plumbing -------------------------------------------------------------

    def _driver(self) -> NodeDriver:
        driver = getattr(self._local, "driver", None)
        if driver is None:
            driver = self._factory()
            self._local.driver = driver
        return driver

    async def _invoke(self, op: str, fn: Callable[[NodeDriver], T]) -> T:
        """Run ``fn(driver)`` in a thread, retrying transient errors.

        Raises ``SiteFailed`` when retries are exhausted or credentials are
        rejected; a 4xx ``BaseHTTPError`` propagates for the caller to map.
        """
        policy = self._retry
        try:
            async for attempt in policy.retrying(is_transient):
                with attempt:
                    return await asyncio.to_thread(lambda: fn(self._driver()))
        except InvalidCredsError as exc:
            raise SiteFailed(
                self.name, f"{op}: credentials rejected: {error_message(exc)}"
            ) from exc
        except (BaseHTTPError, OSError) as exc:
            if is_transient(exc):
                raise SiteFailed(
                    self.name, f"{op}: {error_message(exc)} after {policy.attempts} attempts"
                ) from exc
            raise
        except LibcloudError as exc:
            raise SiteFailed(self.name, f"{op}: {error_message(exc)}") from exc
        raise AssertionError("unreachable: the retry loop returns or raises")

    async def _on_node(self, op: str, provider_id: str, fn: Callable[[NodeDriver], T]) -> T:
        """:meth:`_invoke` for an operation on one node: not found -> ``ProviderNotFound``,
        other 4xx -> ``SiteRefused``."""
        try:
            return await self._invoke(op, fn)
        except BaseHTTPError as exc:
            if is_not_found(exc):
                raise ProviderNotFound(self.name, f"no VM {provider_id}") from exc
            raise refusal(self.name, op, exc) from exc

    def _size_of(self, instance_type: str | None) -> CloudSize | None:
        return self.config.sizes.get(instance_type) if instance_type else None

    def _to_vm(self, node: Node, ready: bool = False) -> ProviderVM:
        extra: Mapping[str, Any] = node.extra or {}
        tags: Mapping[str, str] = extra.get("tags") or {}
        raw = extra.get("status")
        if not isinstance(raw, str):
            raw = str(node.state)
        itype = tags.get(TAG_INSTANCE_TYPE)
        size = self._size_of(itype)
        state = parse_state(raw, CLOUD_STATE_MAP)
        addresses = tuple(a for a in [*(node.public_ips or ()), *(node.private_ips or ())] if a)
        return ProviderVM(
            site=self.name,
            provider_id=str(node.id),
            name=str(tags.get("Name") or node.name or node.id),
            state=state,
            ready=ready and state is VmState.RUNNING,
            image=tags.get(TAG_IMAGE),
            instance_type=itype,
            vcpus=size.vcpus if size else None,
            memory_mib=size.memory_mib if size else None,
            addresses=addresses,
            vm_id=tags.get(TAG_VM_ID),
            idempotency_key=tags.get(TAG_KEY),
            raw_state=raw,
            price_per_hour=size.price_per_hour if size else None,
            created_at=getattr(node, "created_at", None),
            extra={
                "cloud_image": extra.get("image_id"),
                "cloud_size": extra.get("instance_type"),
                "availability_zone": extra.get("availability"),
                "launch_time": extra.get("launch_time"),
            },
        )

    def _sizing(self, spec: VmCreate) -> tuple[str, CloudSize]:
        itype, vcpus, memory = spec.sizing()
        wanted = None if spec.vcpus is not None else itype
        sized = self.config.size_for(wanted, vcpus, memory)
        if sized is None:
            what = wanted or f"{vcpus} CPUs / {memory} MiB"
            raise SiteRefused(self.name, f"no size on {self.name} for {what}", code="no_size")
        return sized

    # -- required ---------------------------------------------------------------

    async def create_vm(self, request: VMCreateRequest) -> ProviderVM:
        spec = request.spec
        parts = unsupported_parts(spec)
        if parts:
            raise SiteRefused(
                self.name,
                f"a public cloud cannot honour {', '.join(parts)} (Stratus site resources)",
                status=422,
                code=NOT_SUPPORTED,
            )
        image_id = self.config.images.get(spec.image)
        if image_id is None:
            raise SiteRefused(
                self.name, f"image {spec.image} is not available on {self.name}", code="no_image"
            )
        itype, size = self._sizing(spec)
        try:
            user_data = cloud_user_data(spec)
        except UserDataTooLarge as exc:
            raise SiteRefused(self.name, str(exc), status=422, code=NOT_SUPPORTED) from exc
        key = request.idempotency_key
        tags = {TAG_VM_ID: request.vm_id, TAG_KEY: key, TAG_IMAGE: spec.image}
        tags[TAG_INSTANCE_TYPE] = itype
        client_token = key if len(key) <= 64 and key.isascii() and key.isprintable() else None

        def find_or_create(driver: NodeDriver) -> Node:
            existing = live_nodes_tagged(driver, TAG_KEY, key)
            if existing:
                for extra_node in existing[1:]:  # never keep two for one key
                    driver.destroy_node(extra_node)
                return existing[0]
            node_size = NodeSize(
                id=size.size_id,
                name=size.size_id,
                ram=size.memory_mib,
                disk=0,
                bandwidth=None,
                price=size.price_per_hour,
                driver=driver,
            )
            kwargs: dict[str, Any] = {"ex_metadata": tags}
            if client_token is not None:
                kwargs["ex_clienttoken"] = client_token
            if user_data is not None:
                kwargs["ex_userdata"] = user_data
            created = driver.create_node(
                name=request.name,
                size=node_size,
                image=NodeImage(image_id, image_id, driver),
                **kwargs,
            )
            if not isinstance(created, Node):
                # The cloud answered 200 but names no instance (what the unfixed
                # namespace quirk looks like): a failure; the cleanup removes
                # whatever the cloud may have made under this key.
                raise LibcloudError(
                    f"the cloud's answer to RunInstances names no instance: {created!r}"
                )
            return created

        try:
            node = await self._invoke("create", find_or_create)
        except SiteFailed:
            await self._cleanup(key)
            raise
        except BaseHTTPError as exc:
            await self._cleanup(key)
            raise refusal(self.name, "create", exc) from exc
        return self._to_vm(node)

    async def _cleanup(self, key: str) -> None:
        """Best effort: remove any node tagged with ``key`` (a failed create leaves nothing)."""

        def remove(driver: NodeDriver) -> int:
            nodes = live_nodes_tagged(driver, TAG_KEY, key)
            for node in nodes:
                driver.destroy_node(node)
            return len(nodes)

        try:
            removed = await asyncio.to_thread(lambda: remove(self._driver()))
        except (BaseHTTPError, OSError, LibcloudError) as exc:
            log.warning(
                "%s: could not clean up after a failed create (key %s): %s", self.name, key, exc
            )
            return
        if removed:
            log.info(
                "%s: removed %d node(s) left by a failed create (key %s)", self.name, removed, key
            )

    async def get_vm(self, provider_id: str) -> ProviderVM:
        def get(driver: NodeDriver) -> tuple[Node, bool] | None:
            node = find_node(driver, provider_id)
            return None if node is None else with_readiness(driver, [node])[0]

        found = await self._on_node("get", provider_id, get)
        if found is None:
            raise ProviderNotFound(self.name, f"no VM {provider_id}")
        return self._to_vm(*found)

    async def list_vms(self, *, include_done: bool = False) -> list[ProviderVM]:
        states = LIVE_EC2_STATES + (GONE_EC2_STATES if include_done else [])
        filters = {"tag-key": TAG_VM_ID, "instance-state-name": states}

        def listing(driver: NodeDriver) -> list[tuple[Node, bool]]:
            return with_readiness(driver, driver.list_nodes(ex_filters=filters))

        try:
            found = await self._invoke("list", listing)
        except BaseHTTPError as exc:
            raise SiteFailed(self.name, f"list: {error_message(exc)}") from exc
        return [self._to_vm(node, ready) for node, ready in found]

    async def kill_vm(self, provider_id: str, *, force: bool = False) -> ProviderVM | None:
        # ``force`` changes nothing here: a cloud VM has no pending save to drop.
        def destroy(driver: NodeDriver) -> Node | None:
            driver.destroy_node(Node(provider_id, provider_id, NodeState.UNKNOWN, [], [], driver))
            return find_node(driver, provider_id)

        try:
            node = await self._invoke("kill", destroy)
        except BaseHTTPError as exc:
            if is_not_found(exc):
                return None
            raise SiteFailed(self.name, f"kill {provider_id}: {error_message(exc)}") from exc
        return None if node is None else self._to_vm(node)

    # -- optional operations ------------------------------------------------------

    async def _running_node(
        self, op: str, provider_id: str, act: Callable[[NodeDriver, Node], object]
    ) -> ProviderVM:
        """Apply ``act`` (operation ``op``) to a running node; 409 ``invalid_state`` if it
        is not running."""

        def run(driver: NodeDriver) -> Node:
            node = find_node(driver, provider_id)
            if node is None:
                raise ProviderNotFound(self.name, f"no VM {provider_id}")
            state = parse_state(node.extra.get("status", node.state), CLOUD_STATE_MAP)
            if state is not VmState.RUNNING:
                raise SiteRefused(
                    self.name,
                    f"VM {provider_id} is {state}: {op} needs a running VM",
                    code="invalid_state",
                )
            act(driver, node)
            return find_node(driver, provider_id) or node

        return self._to_vm(await self._on_node(op, provider_id, run))

    async def stop_vm(self, provider_id: str, *, save: SaveAs | None = None) -> ProviderVM:
        if save is not None:
            raise SiteRefused(
                self.name,
                "saving a VM's disk as a Stratus image is not possible on a public cloud",
                status=422,
                code=NOT_SUPPORTED,
            )
        return await self._running_node("stop", provider_id, lambda d, n: d.stop_node(n))

    async def reboot_vm(self, provider_id: str) -> ProviderVM:
        return await self._running_node("reboot", provider_id, lambda d, n: d.reboot_node(n))

    async def console(self, provider_id: str, *, tail: int) -> ConsoleOutput:
        def output(driver: NodeDriver) -> str:
            node = Node(provider_id, provider_id, NodeState.UNKNOWN, [], [], driver)
            text = driver.ex_get_console_output(node).get("output")  # type: ignore[attr-defined]
            return str(text or "")

        data = (await self._on_node("console", provider_id, output)).encode()
        text = data[-tail:].decode(errors="replace")
        return ConsoleOutput(vm_id=provider_id, output=text, truncated=len(data) > tail)

    async def wait_vm(self, provider_id: str, until: WaitFor, timeout: float) -> ProviderVM:
        deadline = time.monotonic() + timeout
        while True:
            vm = await self.get_vm(provider_id)
            reached = vm.ready if until == "ready" else vm.state is VmState.RUNNING
            left = deadline - time.monotonic()
            if reached or vm.state.is_terminal or left <= 0:
                return vm
            await asyncio.sleep(min(self._poll, left))
