"""Value objects, the error mapping and the retry policy."""

from __future__ import annotations

import pytest
from tenacity import RetryCallState

from federation.errors import (
    QueueError,
    SiteFailed,
    SiteRefused,
    VMNotFound,
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
from federation.providers.base import VMCreateRequest, VMState, parse_state
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
        ({"network": "wan"}, "'wan' is not a valid NetworkType"),
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
        network="public",  # type: ignore[arg-type]
        vo="atlas",
        groups={"/atlas/higgs"},  # type: ignore[arg-type]
        sites=["a", "b", "a"],  # type: ignore[arg-type]
        preferred_sites=["b", "b"],  # type: ignore[arg-type]
    )
    assert r.network is NetworkType.PUBLIC
    assert r.sites == ("a", "b")
    assert r.preferred_sites == ("b",)
    assert r.vos == frozenset({"atlas", "/atlas/higgs"})
    assert r.pinned


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"instance_type": "m1.small", "vcpus": 1}, "not both"),
        ({"instance_type": None, "vcpus": 1}, "vcpus and memory_mib"),
        ({"idempotency_key": ""}, "required"),
    ],
)
def test_vm_create_request_validation(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "vm_id": "v",
        "idempotency_key": "k",
        "image": "i",
        "name": "n",
        "instance_type": "m1.small",
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        VMCreateRequest(**args)  # type: ignore[arg-type]


def test_state_parsing_is_closed() -> None:
    assert parse_state("RUNNING") is VMState.RUNNING
    assert parse_state("exploded") is VMState.UNKNOWN
    assert not VMState.DONE.is_active and VMState.STOPPED.is_active


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
        (VMNotFound("s", "no VM x"), 404, "not_found"),
        (SiteRefused("s", "full"), 409, "site_refused"),
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
