"""A public cloud (cloud bursting) through an Apache Libcloud compute driver.

:class:`LibcloudProvider` wraps a libcloud ``NodeDriver`` (EC2; in tests
pointed at ``moto_server`` on loopback) behind :class:`ComputeProvider`:

* libcloud is blocking: every call runs in a worker thread
  (``asyncio.to_thread``), each thread with its own driver instance (libcloud
  connections are not thread-safe).
* Stratus image names map to the cloud's image ids (AMIs) and Stratus
  instance types to cloud sizes through :class:`~federation.model.PublicCloudConfig`;
  an unmapped image or size is a refusal.
* Every node is tagged at creation (``TagSpecification``) with
  ``stratus-vm-id``, ``stratus-idempotency-key``, ``stratus-image`` and
  ``stratus-instance-type``.  A create first looks for a live node with the
  same idempotency key and returns it, so a retried create (after a timeout or
  a 500 that came *after* the cloud made the node) makes no second node.  The
  key is also sent as EC2's ``ClientToken`` (when at most 64 ASCII characters).
* 5xx, 429 and throttling (``RequestLimitExceeded``, ``Throttling``...) and
  connection errors are retried with backoff (tenacity); then the cloud counts
  as failed (``SiteFailed``), after a best-effort removal of any node tagged
  with the request's key.  Other 4xx answers are refusals (``SiteRefused``).
* Addresses the cloud reports are data only; this module never connects to a
  VM (no health check, ping or SSH).

moto quirk (``moto_server`` 5.x with libcloud 3.x's EC2 driver)
---------------------------------------------------------------

moto answers with ``xmlns="http://ec2.amazonaws.com/doc/2016-11-15"``; libcloud
looks elements up in ``http://ec2.amazonaws.com/doc/2016-11-15/`` (trailing
slash, ``libcloud.compute.drivers.ec2.NAMESPACE``).  Unfixed, nothing
matches and nothing fails loudly: ``list_nodes()`` and ``list_images()``
return ``[]``, ``create_node()`` returns ``[]`` *although moto made the
instance* (so a naive retry makes a second one), ``destroy_node()`` returns
False although the instance was terminated.  Error bodies carry the same
namespace, so libcloud's ``findall("Errors/Error")`` finds nothing and every
error becomes ``BaseHTTPError('')`` with the EC2 error code lost.

The fix lives at the adapter edge, in :class:`NamespaceTolerantEC2Response`:
``parse_body`` rewrites every ``{http://ec2.amazonaws.com/doc/<version>}`` tag
(with or without the slash) to libcloud's ``NAMESPACE``, and ``parse_error``
strips the namespace before libcloud's own error parsing runs.  The
connection and driver subclasses only plug that response class in.  With
signature version 4 (``signature_version="4"``, needed for a custom host)
create, list and destroy then work.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from xml.etree import ElementTree as StdET

from libcloud.common.exceptions import BaseHTTPError
from libcloud.common.types import InvalidCredsError, LibcloudError
from libcloud.compute.base import Node, NodeDriver, NodeImage, NodeSize
from libcloud.compute.drivers.ec2 import NAMESPACE, EC2Connection, EC2NodeDriver, EC2Response
from libcloud.compute.types import NodeState

from federation.errors import SiteFailed, SiteRefused, VMNotFound
from federation.model import CloudSize, PublicCloudConfig
from federation.providers.base import ComputeProvider, ProviderVM, VMCreateRequest, VMState
from federation.providers.retry import RetryPolicy

log = logging.getLogger(__name__)

T = TypeVar("T")

TAG_VM_ID = "stratus-vm-id"
TAG_KEY = "stratus-idempotency-key"
TAG_IMAGE = "stratus-image"
TAG_INSTANCE_TYPE = "stratus-instance-type"

#: EC2 instance states that still hold a VM (``list_vms`` and the idempotency lookup).
LIVE_EC2_STATES = ["pending", "running", "stopping", "stopped"]

#: EC2 ``instanceState/name`` -> VMState.
EC2_STATE_MAP: dict[str, VMState] = {
    "pending": VMState.PENDING,
    "running": VMState.RUNNING,
    "shutting-down": VMState.SHUTDOWN,
    "stopping": VMState.SHUTDOWN,
    "stopped": VMState.STOPPED,
    "terminated": VMState.DONE,
}

#: libcloud NodeState -> VMState, for drivers without a raw EC2 state.
NODE_STATE_MAP: dict[str, VMState] = {
    NodeState.RUNNING: VMState.RUNNING,
    NodeState.STARTING: VMState.BOOT,
    NodeState.REBOOTING: VMState.BOOT,
    NodeState.PENDING: VMState.PENDING,
    NodeState.STOPPING: VMState.SHUTDOWN,
    NodeState.STOPPED: VMState.STOPPED,
    NodeState.SUSPENDED: VMState.SUSPENDED,
    NodeState.PAUSED: VMState.SUSPENDED,
    NodeState.TERMINATED: VMState.DONE,
    NodeState.ERROR: VMState.FAILED,
    NodeState.UNKNOWN: VMState.UNKNOWN,
}

_THROTTLE_MARKERS = (
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "ServiceUnavailable",
    "InternalError",
    "InternalFailure",
)
_EC2_NS = re.compile(r"^\{http://ec2\.amazonaws\.com/doc/[0-9-]+/?\}")
_LIBCLOUD_NS = "{" + NAMESPACE + "}"
_ANY_NS = re.compile(r"^\{[^}]*\}")


def normalise_ec2_namespace(root: Any) -> None:
    """Rewrite every EC2 namespace in the tree under ``root`` to the one libcloud expects."""
    for element in root.iter():
        tag = element.tag
        if isinstance(tag, str) and tag.startswith("{http://ec2.amazonaws.com/doc/"):
            element.tag = _EC2_NS.sub(_LIBCLOUD_NS, tag)


class NamespaceTolerantEC2Response(EC2Response):
    """libcloud's EC2 response, tolerant of moto's namespace without the trailing slash."""

    def parse_body(self) -> Any:
        body = super().parse_body()
        if hasattr(body, "iter"):
            normalise_ec2_namespace(body)
        return body

    def parse_error(self) -> Any:
        if not (self.status == 403 and str(self.body).startswith("Failure: 403 Forbidden")):
            try:
                root = StdET.fromstring(str(self.body or ""))
            except (StdET.ParseError, TypeError, ValueError):
                text = str(self.body or "").strip().replace("\n", " ")[:200]
                return f"HTTP {self.status}: {text}" if text else f"HTTP {self.status}"
            for element in root.iter():
                if isinstance(element.tag, str):
                    element.tag = _ANY_NS.sub("", element.tag)
            self.body = StdET.tostring(root, encoding="unicode")
        return super().parse_error()


class NamespaceTolerantEC2Connection(EC2Connection):
    responseCls = NamespaceTolerantEC2Response


class NamespaceTolerantEC2NodeDriver(EC2NodeDriver):
    """libcloud's EC2 driver with the namespace-tolerant response (works against moto and AWS)."""

    connectionCls = NamespaceTolerantEC2Connection


def _error_message(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc)
    code = getattr(exc, "code", None)
    text = str(message).strip().replace("\n", "; ")[:300]
    return f"HTTP {code}: {text}" if code is not None else text


def _transient(exc: BaseException) -> bool:
    """Connection errors, timeouts, 5xx, 429 and throttling answers are worth retrying."""
    if isinstance(exc, InvalidCredsError):
        return False
    if isinstance(exc, BaseHTTPError):
        code = exc.code if isinstance(exc.code, int) else 0
        return code >= 500 or code == 429 or any(m in str(exc.message) for m in _THROTTLE_MARKERS)
    # requests' exceptions derive from OSError, as do socket errors and timeouts.
    return isinstance(exc, OSError)


def _is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, BaseHTTPError) and (
        "InvalidInstanceID.NotFound" in str(exc.message)
        or "InvalidInstanceID.Malformed" in str(exc.message)
    )


def make_driver(config: PublicCloudConfig, *, timeout: float = 30.0) -> NodeDriver:
    """A libcloud driver for ``config``: the namespace-tolerant EC2 driver with signature v4."""
    if config.driver != "ec2":
        raise ValueError(
            f"cloud {config.name}: driver {config.driver!r} is not supported "
            "(only 'ec2'; pass driver_factory for others)"
        )
    kwargs: dict[str, Any] = {"region": config.region, "secure": config.secure, "timeout": timeout}
    if config.host is not None:
        kwargs["host"] = config.host
    if config.port is not None:
        kwargs["port"] = config.port
    return NamespaceTolerantEC2NodeDriver(
        config.key, config.secret, signature_version="4", **kwargs
    )


class LibcloudProvider(ComputeProvider):
    """A public cloud as a :class:`ComputeProvider`; ``name`` is the cloud's name.

    ``driver_factory`` builds one driver per worker thread (default:
    :func:`make_driver`).  ``retry`` governs retries of transient errors.
    """

    def __init__(
        self,
        config: PublicCloudConfig,
        *,
        retry: RetryPolicy | None = None,
        driver_factory: Callable[[], NodeDriver] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.name = config.name
        self.config = config
        self._retry = retry or RetryPolicy()
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
        rejected; other libcloud errors (4xx) propagate for the caller to map.
        """
        policy = self._retry
        try:
            async for attempt in policy.retrying(_transient):
                with attempt:
                    return await asyncio.to_thread(lambda: fn(self._driver()))
        except InvalidCredsError as exc:
            raise SiteFailed(
                self.name, f"{op}: credentials rejected: {_error_message(exc)}"
            ) from exc
        except (BaseHTTPError, OSError) as exc:
            if _transient(exc):
                raise SiteFailed(
                    self.name, f"{op}: {_error_message(exc)} after {policy.attempts} attempts"
                ) from exc
            raise
        except LibcloudError as exc:
            raise SiteFailed(self.name, f"{op}: {_error_message(exc)}") from exc
        raise AssertionError("unreachable: the retry loop returns or raises")

    def _size_of(self, instance_type: str | None) -> CloudSize | None:
        return self.config.sizes.get(instance_type) if instance_type else None

    def _to_vm(self, node: Node) -> ProviderVM:
        extra: Mapping[str, Any] = node.extra or {}
        tags: Mapping[str, str] = extra.get("tags") or {}
        raw = extra.get("status")
        if isinstance(raw, str) and raw in EC2_STATE_MAP:
            state = EC2_STATE_MAP[raw]
        else:
            state = NODE_STATE_MAP.get(node.state, VMState.UNKNOWN)
            raw = str(node.state)
        itype = tags.get(TAG_INSTANCE_TYPE)
        size = self._size_of(itype)
        addresses = tuple(a for a in [*(node.public_ips or ()), *(node.private_ips or ())] if a)
        return ProviderVM(
            site=self.name,
            provider_id=str(node.id),
            name=str(tags.get("Name") or node.name or node.id),
            state=state,
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
        )

    @staticmethod
    def _live_by_key(driver: NodeDriver, key: str) -> list[Node]:
        nodes = driver.list_nodes(
            ex_filters={f"tag:{TAG_KEY}": key, "instance-state-name": list(LIVE_EC2_STATES)}
        )
        return sorted(nodes, key=lambda n: (str(n.extra.get("launch_time") or ""), n.id))

    # -- ComputeProvider ------------------------------------------------------

    async def create_vm(self, request: VMCreateRequest) -> ProviderVM:
        image_id = self.config.images.get(request.image)
        if image_id is None:
            raise SiteRefused(self.name, f"image {request.image} is not available on {self.name}")
        sized = self.config.size_for(
            request.instance_type, request.vcpus or 0, request.memory_mib or 0
        )
        if sized is None:
            what = request.instance_type or f"{request.vcpus} CPUs / {request.memory_mib} MiB"
            raise SiteRefused(self.name, f"no size on {self.name} for {what}")
        itype, size = sized
        key = request.idempotency_key
        tags = {
            TAG_VM_ID: request.vm_id,
            TAG_KEY: key,
            TAG_IMAGE: request.image,
            TAG_INSTANCE_TYPE: itype,
        }
        client_token = key if len(key) <= 64 and key.isascii() and key.isprintable() else None

        def find_or_create(driver: NodeDriver) -> Node:
            existing = self._live_by_key(driver, key)
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
            created = driver.create_node(
                name=request.name,
                size=node_size,
                image=NodeImage(image_id, image_id, driver),
                **kwargs,
            )
            if not isinstance(created, Node):
                # The cloud answered 200 but the answer names no instance (what the
                # unfixed namespace quirk looks like): a failure; the cleanup removes
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
            raise SiteRefused(self.name, _error_message(exc)) from exc
        return self._to_vm(node)

    async def _cleanup(self, key: str) -> None:
        """Best effort: remove any node tagged with ``key`` (a failed create leaves nothing)."""

        def remove(driver: NodeDriver) -> int:
            nodes = self._live_by_key(driver, key)
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
        try:
            nodes = await self._invoke("get", lambda d: d.list_nodes(ex_node_ids=[provider_id]))
        except BaseHTTPError as exc:
            if _is_not_found(exc):
                raise VMNotFound(self.name, f"no VM {provider_id}") from exc
            raise SiteFailed(self.name, f"get {provider_id}: {_error_message(exc)}") from exc
        for node in nodes:
            if node.id == provider_id:
                return self._to_vm(node)
        raise VMNotFound(self.name, f"no VM {provider_id}")

    async def list_vms(self) -> list[ProviderVM]:
        filters = {"tag-key": TAG_VM_ID, "instance-state-name": list(LIVE_EC2_STATES)}
        try:
            nodes = await self._invoke("list", lambda d: d.list_nodes(ex_filters=filters))
        except BaseHTTPError as exc:
            raise SiteFailed(self.name, f"list: {_error_message(exc)}") from exc
        return [self._to_vm(n) for n in nodes]

    async def kill_vm(self, provider_id: str) -> None:
        def destroy(driver: NodeDriver) -> bool:
            node = Node(provider_id, provider_id, NodeState.UNKNOWN, [], [], driver)
            return bool(driver.destroy_node(node))

        try:
            await self._invoke("kill", destroy)
        except BaseHTTPError as exc:
            if _is_not_found(exc):
                return
            raise SiteFailed(self.name, f"kill {provider_id}: {_error_message(exc)}") from exc
