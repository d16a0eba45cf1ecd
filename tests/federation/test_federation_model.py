"""Value objects, the error mapping and the retry policy."""

from __future__ import annotations

import pytest
from tenacity import RetryCallState

import federation.errors
import federation.providers.base
from core.resources.vms import VmCreate
from federation.errors import (
    OperationNotSupported,
    ProviderNotFound,
    QueueError,
    SiteFailed,
    SiteRefused,
    to_stratus_error,
)
from federation.model import (
    CloudSize,
    HostCapacity,
    NetworkType,
    PlacementRequest,
    PublicCloudConfig,
    SiteCapacity,
)
from federation.providers.base import VMCreateRequest
from federation.providers.retry import RetryPolicy


def test_site_capacity_copies_and_normalises_its_inputs() -> None:
    hosts = [HostCapacity(4, 4096)]
    images = {"debian-12"}
    cap = SiteCapacity(
        "lal",
        hosts=hosts,
        cached_images=images,  # type: ignore[arg-type]
        free_addresses={"public": 3},  # type: ignore[dict-item]
        allowed_vos=["atlas"],  # type: ignore[arg-type]
    )
    hosts.append(HostCapacity(1, 1))
    images.add("alma-9")
    assert cap.hosts == (HostCapacity(4, 4096),)
    assert cap.cached_images == frozenset({"debian-12"})
    assert cap.free_addresses == {NetworkType.PUBLIC: 3}
    assert cap.allowed_vos == frozenset({"atlas"})
    assert cap.can_get_image("debian-12") and not cap.can_get_image("alma-9")
    assert SiteCapacity("x", fetchable_images=None).can_get_image("anything")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"site": ""}, "site name"),
        ({"site": "x", "price_per_hour": -1}, "price_per_hour"),
        ({"site": "x", "free_addresses": {"wan": 1}}, "'wan' is not a valid NetworkType"),
    ],
)
def test_site_capacity_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SiteCapacity(**kwargs)  # type: ignore[arg-type]


def test_host_capacity_validation() -> None:
    with pytest.raises(ValueError):
        HostCapacity(-1, 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"vcpus": 0}, "vcpus"),
        ({"memory_mib": 0}, "memory_mib"),
        ({"image": ""}, "image"),
        ({"sites": ()}, "at least one site"),
        ({"expected_hours": 0}, "expected_hours"),
        ({"network_type": "wan"}, "'wan' is not a valid NetworkType"),
        ({"network": "Public!"}, "not a pool name"),
        ({"address": "nowhere"}, "IPv4"),
    ],
)
def test_placement_request_validation(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"vcpus": 1, "memory_mib": 512, "image": "debian-12"}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        PlacementRequest(**args)  # type: ignore[arg-type]


def test_placement_request_normalises() -> None:
    r = PlacementRequest(
        vcpus=1,
        memory_mib=512,
        image="i",
        network_type="public",  # type: ignore[arg-type]
        address="198.51.100.7",
        host_tags={"ssd"},  # type: ignore[arg-type]
        vo="atlas",
        groups={"/atlas/higgs"},  # type: ignore[arg-type]
        sites=["a", "b", "a"],  # type: ignore[arg-type]
        preferred_sites=["b", "b"],  # type: ignore[arg-type]
    )
    assert r.network_type is NetworkType.PUBLIC and r.network is None
    assert r.needs_address and r.address == "198.51.100.7"
    assert r.host_tags == frozenset({"ssd"}) and r.static_images == frozenset()
    assert r.sites == ("a", "b")
    assert r.preferred_sites == ("b",)
    assert r.vos == frozenset({"atlas", "/atlas/higgs"})
    assert r.pinned


def test_vm_create_request_takes_the_site_create_body() -> None:
    request = VMCreateRequest("b-1", "key-1", VmCreate(image="debian-12", network="lan"))
    assert (request.image, request.name, request.spec.network) == ("debian-12", "b-1", "lan")
    named = VMCreateRequest("b-2", "key-2", VmCreate(image="debian-12", name="web"))
    assert named.name == "web"
    with pytest.raises(ValueError, match="required"):
        VMCreateRequest("b-1", "", VmCreate(image="debian-12"))
    with pytest.raises(ValueError, match="count must be 1"):
        VMCreateRequest("b-1", "k", VmCreate(image="debian-12", count=2))


def test_the_old_names_are_gone() -> None:
    """One state vocabulary (core.vm_state) and one not-found error (ProviderNotFound)."""
    for gone in ("VMState", "parse_state"):
        assert not hasattr(federation.providers.base, gone)
    assert not hasattr(federation.errors, "VMNotFound")


def test_cloud_size_for() -> None:
    cloud = PublicCloudConfig(
        "c",
        sizes={
            "m1.small": CloudSize("a", 1, 1024, 0.02),
            "c1.medium": CloudSize("b", 2, 1024, 0.01),
            "m1.large": CloudSize("c", 2, 4096, 0.05),
        },
    )
    assert cloud.size_for("m1.small", 99, 99) == ("m1.small", cloud.sizes["m1.small"])
    assert cloud.size_for("nope", 1, 1) is None
    assert cloud.size_for(None, 1, 512) == ("c1.medium", cloud.sizes["c1.medium"])  # cheapest
    assert cloud.size_for(None, 2, 2048) == ("m1.large", cloud.sizes["m1.large"])
    assert cloud.size_for(None, 8, 1) is None
    with pytest.raises(ValueError):
        PublicCloudConfig("")


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (ProviderNotFound("s", "no VM x"), 404, "not_found"),
        (SiteRefused("s", "full"), 409, "site_refused"),
        (
            SiteRefused("s", "no", status=422, code="not_supported_by_cloud"),
            422,
            "not_supported_by_cloud",
        ),
        (SiteRefused("s", "odd", status=502, code="x"), 409, "x"),
        (OperationNotSupported("s", "volumes"), 409, "not_supported"),
        (SiteFailed("s", "down"), 503, "site_failed"),
        (QueueError("no such entry"), 404, "not_found"),
    ],
)
def test_error_mapping(exc: Exception, status: int, code: str) -> None:
    err = to_stratus_error(exc)  # type: ignore[arg-type]
    assert (err.status, err.code) == (status, code)


def test_provider_errors_name_the_site() -> None:
    exc = SiteRefused("lal", "no free public address")
    assert str(exc) == "site lal: no free public address"
    assert (exc.site, exc.reason) == ("lal", "no free public address")


class _Outcome:
    def __init__(self, exc: BaseException) -> None:
        self._exc = exc

    def exception(self) -> BaseException:
        return self._exc


def _state(attempt: int, exc: BaseException) -> RetryCallState:
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = attempt
    state.outcome = _Outcome(exc)  # type: ignore[assignment]
    return state


def test_retry_policy_backoff_and_retry_after() -> None:
    policy = RetryPolicy(attempts=5, initial_wait=0.5, max_wait=3.0)
    plain = RuntimeError()
    assert [policy.wait_for(_state(n, plain)) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 3.0]
    slow = RuntimeError()
    slow.retry_after = 2.5  # type: ignore[attr-defined]
    assert policy.wait_for(_state(1, slow)) == 2.5
    slow.retry_after = 60  # type: ignore[attr-defined]
    assert policy.wait_for(_state(1, slow)) == 3.0  # capped
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
