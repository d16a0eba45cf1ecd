"""The libcloud edge of the public-cloud provider: EC2 driver, state table, error reading.

Used by :class:`~federation.providers.cloud.LibcloudProvider` only.

State table
-----------

:data:`CLOUD_STATE_MAP` maps both EC2's instance-state names
(``DescribeInstances``' ``instanceState/name``) and libcloud's
``NodeState`` values (for drivers that give no raw state) to
:class:`core.vm_state.VmState`; anything else is ``unknown``.

Readiness: a cloud VM is ``ready`` when EC2's own status checks of the
running instance (``DescribeInstanceStatus``: system status and instance
status both ``ok``) pass. That is the cloud's signal; nothing here ever
connects to a VM (no ping, no SSH: moto's 54.x/10.x addresses are data only).

moto quirk (``moto_server`` 5.x with libcloud 3.x's EC2 driver)
---------------------------------------------------------------

moto answers with ``xmlns="http://ec2.amazonaws.com/doc/2016-11-15"``; libcloud
looks elements up in ``http://ec2.amazonaws.com/doc/2016-11-15/`` (trailing
slash, ``libcloud.compute.drivers.ec2.NAMESPACE``). Unfixed, nothing
matches and nothing fails loudly: ``list_nodes()`` and ``list_images()``
return ``[]``, ``create_node()`` returns ``[]`` *although moto made the
instance* (so a naive retry makes a second one), ``destroy_node()`` returns
False although the instance was terminated. Error bodies carry the same
namespace, so libcloud's ``findall("Errors/Error")`` finds nothing and every
error becomes ``BaseHTTPError('')`` with the EC2 error code lost.

The fix is :class:`NamespaceTolerantEC2Response`: ``parse_body`` rewrites
every ``{http://ec2.amazonaws.com/doc/<version>}`` tag (with or without the
slash) to libcloud's ``NAMESPACE``, and ``parse_error`` strips the namespace
before libcloud's own error parsing runs. The connection and driver
subclasses only plug that response class in. With signature version 4
(``signature_version="4"``, needed for a custom host) every call then works.
"""

from __future__ import annotations

import re
from typing import Any
from xml.etree import ElementTree as StdET

from libcloud.common.exceptions import BaseHTTPError
from libcloud.common.types import InvalidCredsError
from libcloud.compute.base import Node, NodeDriver
from libcloud.compute.drivers.ec2 import NAMESPACE, EC2Connection, EC2NodeDriver, EC2Response
from libcloud.compute.types import NodeState

from core.vm_state import VmState
from federation.errors import SiteRefused
from federation.model import PublicCloudConfig

#: EC2 instance-state names and libcloud ``NodeState`` values -> :class:`VmState`.
CLOUD_STATE_MAP: dict[str, VmState] = {
    # EC2 instance states (the raw state of the EC2 driver's nodes)
    "pending": VmState.PENDING,
    "running": VmState.RUNNING,
    "shutting-down": VmState.SHUTDOWN,  # being terminated
    "stopping": VmState.SHUTDOWN,  # being stopped (clean shutdown)
    "stopped": VmState.STOPPED,  # off, disk kept; killing it terminates it
    "terminated": VmState.DONE,
    # libcloud NodeState values ("pending", "running", "stopping", "stopped",
    # "terminated" are spelt as above and mean the same)
    NodeState.STARTING.value: VmState.BOOT,
    NodeState.REBOOTING.value: VmState.BOOT,
    NodeState.SUSPENDED.value: VmState.SUSPENDED,
    NodeState.PAUSED.value: VmState.SUSPENDED,
    NodeState.ERROR.value: VmState.FAILED,
    NodeState.MIGRATING.value: VmState.RUNNING,  # live migration: the guest keeps running
    NodeState.NORMAL.value: VmState.RUNNING,  # some drivers' word for a running node
    NodeState.RECONFIGURING.value: VmState.UNKNOWN,  # a provider-side change, no counterpart
    NodeState.UPDATING.value: VmState.UNKNOWN,
    NodeState.UNKNOWN.value: VmState.UNKNOWN,
}

#: EC2 instance states that still hold a VM (``list_vms`` and the idempotency lookup).
LIVE_EC2_STATES = ["pending", "running", "stopping", "stopped"]
#: ... and those of a VM that is gone or going (``list_vms(include_done=True)``).
GONE_EC2_STATES = ["shutting-down", "terminated"]

_THROTTLE_MARKERS = (
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "ServiceUnavailable",
    "InternalError",
    "InternalFailure",
)
_NOT_FOUND_CODES = frozenset({"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"})
_EC2_NS = re.compile(r"^\{http://ec2\.amazonaws\.com/doc/[0-9-]+/?\}")
_LIBCLOUD_NS = "{" + NAMESPACE + "}"
_ANY_NS = re.compile(r"^\{[^}]*\}")
_CODE = re.compile(r"^([A-Za-z][A-Za-z0-9.]*): ")


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


def error_message(exc: BaseException) -> str:
    """A one-line description of a libcloud or transport error, with its HTTP status."""
    message = getattr(exc, "message", None) or str(exc)
    code = getattr(exc, "code", None)
    text = str(message).strip().replace("\n", "; ")[:300]
    return f"HTTP {code}: {text}" if code is not None else text


def ec2_code(exc: BaseException) -> str | None:
    """The EC2 error code of a libcloud error (``"InvalidInstanceID.NotFound"``), if any."""
    match = _CODE.match(str(getattr(exc, "message", "") or ""))
    return match.group(1) if match else None


def refusal(site: str, op: str, exc: BaseHTTPError) -> SiteRefused:
    """A 4xx answer of the cloud as a refusal, keeping its HTTP status and EC2 error code.

    EC2's ``IncorrectInstanceState`` (the VM is not in a state for that) is
    409 ``invalid_state``, what a site answers in the same case.
    """
    code = ec2_code(exc) or "cloud_refused"
    status = exc.code if isinstance(exc.code, int) and 400 <= exc.code < 500 else 409
    if code.startswith("IncorrectInstanceState") or code == "IncorrectState":
        status, code = 409, "invalid_state"
    return SiteRefused(site, f"{op}: {error_message(exc)}", status=status, code=code)


def is_transient(exc: BaseException) -> bool:
    """Connection errors, timeouts, 5xx, 429 and throttling answers are worth retrying."""
    if isinstance(exc, InvalidCredsError):
        return False
    if isinstance(exc, BaseHTTPError):
        code = exc.code if isinstance(exc.code, int) else 0
        return code >= 500 or code == 429 or any(m in str(exc.message) for m in _THROTTLE_MARKERS)
    # requests' exceptions derive from OSError, as do socket errors and timeouts.
    return isinstance(exc, OSError)


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, BaseHTTPError) and ec2_code(exc) in _NOT_FOUND_CODES


def instances_status_ok(driver: NodeDriver, instance_ids: list[str]) -> set[str]:
    """The instances among ``instance_ids`` whose EC2 status checks both pass.

    Only the EC2 driver has status checks; for others the set is empty.
    """
    if not instance_ids or not isinstance(driver, EC2NodeDriver):
        return set()
    ns = _LIBCLOUD_NS
    ok: set[str] = set()
    for start in range(0, len(instance_ids), 100):  # at most 100 ids per call
        params = {"Action": "DescribeInstanceStatus"}
        for n, instance_id in enumerate(instance_ids[start : start + 100], start=1):
            params[f"InstanceId.{n}"] = instance_id
        root = driver.connection.request(driver.path, params=params).object
        for item in root.findall(f"{ns}instanceStatusSet/{ns}item"):
            system = item.findtext(f"{ns}systemStatus/{ns}status")
            instance = item.findtext(f"{ns}instanceStatus/{ns}status")
            instance_id = item.findtext(f"{ns}instanceId")
            if instance_id and system == "ok" and instance == "ok":
                ok.add(instance_id)
    return ok


def find_node(driver: NodeDriver, instance_id: str) -> Node | None:
    """The node with this id, or None (an unknown but well-formed id)."""
    for node in driver.list_nodes(ex_node_ids=[instance_id]):
        if node.id == instance_id:
            return node
    return None


def live_nodes_tagged(driver: NodeDriver, tag: str, value: str) -> list[Node]:
    """Live nodes (see :data:`LIVE_EC2_STATES`) tagged ``tag=value``, oldest first."""
    nodes = driver.list_nodes(
        ex_filters={f"tag:{tag}": value, "instance-state-name": list(LIVE_EC2_STATES)}
    )
    return sorted(nodes, key=lambda n: (str(n.extra.get("launch_time") or ""), n.id))


def with_readiness(driver: NodeDriver, nodes: list[Node]) -> list[tuple[Node, bool]]:
    """Each node with whether it is ready: running and passing the cloud's status checks."""
    running = [str(n.id) for n in nodes if n.extra.get("status") == "running"]
    ok = instances_status_ok(driver, running)
    return [(n, str(n.id) in ok) for n in nodes]
