"""LibcloudProvider against moto_server: the namespace quirk, idempotent creates, retries.

A small aiohttp app on loopback sits in front of moto when a test needs the
cloud to answer 500 or to throttle (``RequestLimitExceeded``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

import aiohttp
import pytest
from aiohttp import web
from libcloud.common.exceptions import BaseHTTPError
from libcloud.compute.base import NodeImage
from libcloud.compute.drivers.ec2 import NAMESPACE, EC2NodeDriver

from core.vm_state import VmState
from federation.attempts import place_with_failover
from federation.bursting import BurstAction, BurstPolicy
from federation.errors import SiteFailed, SiteRefused
from federation.model import (
    Candidate,
    CloudSize,
    HostCapacity,
    PlacementRequest,
    PublicCloudConfig,
    SiteCapacity,
)
from federation.placement import Placer
from federation.providers.base import ProviderVM
from federation.providers.cloud import (
    TAG_KEY,
    LibcloudProvider,
    make_driver,
)
from federation.providers.retry import RetryPolicy
from tests.federation.cloud_helpers import moto_instances, vm_request

FAST = RetryPolicy(attempts=3, initial_wait=0.01, max_wait=0.05)
Serve = Callable[[web.Application], Awaitable[str]]
ConfigFor = Callable[..., PublicCloudConfig]

THROTTLED = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
    "<Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message>"
    "</Error></Errors><RequestID>r-1</RequestID></Response>"
)


def flaky_proxy(
    upstream: str, fail: Callable[[str, int], web.Response | None]
) -> tuple[web.Application, list[str]]:
    """An EC2 endpoint that forwards to ``upstream`` unless ``fail(action, n)`` answers instead.

    ``n`` counts the requests for that action so far (1-based).  When
    ``fail`` returns a response *after* the upstream call (``forward_then_fail``
    actions), the cloud did the work but the client never hears of it.
    """
    actions: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        params = dict(request.query)
        if body:
            params.update({k: v[0] for k, v in parse_qs(body.decode()).items()})
        action = params.get("Action", "?")
        actions.append(action)
        n = actions.count(action)
        answer = fail(action, n)
        if answer is not None and answer.headers.get("X-Forward-First") != "1":
            return answer
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in {"host", "content-length"}
        }
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method, upstream + request.path_qs, data=body, headers=headers
            ) as resp,
        ):
            payload = await resp.read()
            status = resp.status
            ctype = resp.headers.get("Content-Type", "text/xml")
        if answer is not None:  # the upstream did it; the client hears an error
            return web.Response(status=answer.status, text=answer.text)
        return web.Response(body=payload, status=status, headers={"Content-Type": ctype})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app, actions


def throttled() -> web.Response:
    return web.Response(status=503, text=THROTTLED, content_type="text/xml")


def server_error() -> web.Response:
    return web.Response(status=500, text="Internal Server Error", content_type="text/plain")


# -- the moto quirk ----------------------------------------------------------------------


def test_unfixed_libcloud_driver_silently_sees_nothing_from_moto(moto: str) -> None:
    """What breaks without the adapter: moto's namespace lacks libcloud's trailing slash."""
    host, port = moto.removeprefix("http://").split(":")
    plain = EC2NodeDriver(
        "AKIDTESTING", "testing", host=host, port=int(port), secure=False, signature_version="4"
    )
    raw = plain.connection.request("/", params={"Action": "DescribeImages"}).object
    assert raw.tag == "{" + NAMESPACE.rstrip("/") + "}DescribeImagesResponse"
    assert plain.list_images() == []  # 1000+ images in moto, none found
    fixed = make_driver(
        PublicCloudConfig("aws", host=host, port=int(port), secure=False, key="k", secret="s")
    )
    assert len(fixed.list_images()) > 100


def test_errors_keep_their_ec2_code(moto: str, cloud_config_for: ConfigFor) -> None:
    """Unfixed, moto's namespaced error body gives ``BaseHTTPError('')``; fixed, the code shows."""
    driver = make_driver(cloud_config_for(moto))
    with pytest.raises(BaseHTTPError, match=r"^InvalidInstanceID\.NotFound: "):
        driver.list_nodes(ex_node_ids=["i-0123456789abcdef0"])


# -- tags, ids and listing -----------------------------------------------------------------


async def test_nodes_are_tagged_and_listing_shows_the_cloud_as_site(
    moto: str, cloud_config_for: ConfigFor
) -> None:
    cloud = LibcloudProvider(cloud_config_for(moto), retry=FAST)
    req = vm_request("key-tags")
    vm = await cloud.create_vm(req)
    assert vm.provider_id.startswith("i-")
    assert vm.site == "aws-test"
    assert vm.instance_type == "m1.small" and vm.price_per_hour == pytest.approx(0.0116)
    assert (vm.vcpus, vm.memory_mib) == (1, 1024)
    (node,) = moto_instances(moto)
    assert node[2][TAG_KEY] == "key-tags"
    assert node[2]["stratus-vm-id"] == req.vm_id
    listed = await cloud.list_vms()
    assert [(v.site, v.provider_id, v.state) for v in listed] == [
        ("aws-test", vm.provider_id, VmState.RUNNING)
    ]


async def test_list_ignores_nodes_not_made_by_stratus(
    moto: str, cloud_config_for: ConfigFor
) -> None:
    driver = make_driver(cloud_config_for(moto))
    size = next(s for s in driver.list_sizes() if s.id == "t2.micro")
    driver.create_node(name="other", size=size, image=NodeImage("ami-03cf127a", "x", driver))
    cloud = LibcloudProvider(cloud_config_for(moto), retry=FAST)
    assert await cloud.list_vms() == []


async def test_size_chosen_by_cpu_and_ram_and_unmapped_size_refused(
    moto: str, cloud_config_for: ConfigFor
) -> None:
    cloud = LibcloudProvider(cloud_config_for(moto), retry=FAST)
    vm = await cloud.create_vm(vm_request(instance_type=None, vcpus=2, memory_mib=2048))
    assert vm.instance_type == "m1.large"
    with pytest.raises(SiteRefused, match="no size"):
        await cloud.create_vm(vm_request(instance_type=None, vcpus=64, memory_mib=1024))
    with pytest.raises(SiteRefused, match=r"no size on aws-test for m1\.xlarge"):
        await cloud.create_vm(vm_request(instance_type="m1.xlarge"))
    assert len(moto_instances(moto)) == 1


# -- retries, throttling, idempotency under failure -------------------------------------


async def test_retried_create_after_lost_answer_makes_one_node(
    moto: str, serve: Serve, cloud_config_for: ConfigFor
) -> None:
    """moto makes the instance but the client hears 500: the retry finds it by its tag."""

    def fail(action: str, n: int) -> web.Response | None:
        if action == "RunInstances" and n == 1:
            return web.Response(status=500, text="lost", headers={"X-Forward-First": "1"})
        return None

    app, actions = flaky_proxy(moto, fail)
    url = await serve(app)
    cloud = LibcloudProvider(cloud_config_for(url), retry=FAST)
    vm = await cloud.create_vm(vm_request("key-lost-answer"))
    nodes = moto_instances(moto)
    assert len(nodes) == 1
    assert nodes[0][0] == vm.provider_id
    assert actions.count("RunInstances") == 1  # the second try found the node, made none
    # and a later retry of the same request still returns the same node
    again = await cloud.create_vm(vm_request("key-lost-answer"))
    assert again.provider_id == vm.provider_id
    assert len(moto_instances(moto)) == 1


async def test_throttled_calls_are_retried_then_succeed(
    moto: str, serve: Serve, cloud_config_for: ConfigFor
) -> None:
    def fail(action: str, n: int) -> web.Response | None:
        return throttled() if n == 1 else None

    app, actions = flaky_proxy(moto, fail)
    cloud = LibcloudProvider(cloud_config_for(await serve(app)), retry=FAST)
    vm = await cloud.create_vm(vm_request())
    assert vm.state in (VmState.PENDING, VmState.RUNNING)
    lookup, run = "DescribeInstances", "RunInstances"
    assert actions == [lookup, lookup, run, lookup, run]  # each throttled once, then retried
    assert len(moto_instances(moto)) == 1


@pytest.mark.parametrize("answer", [throttled, server_error], ids=["throttled", "500"])
async def test_cloud_that_keeps_failing_is_retried_then_skipped(
    answer: Callable[[], web.Response], serve: Serve, cloud_config_for: ConfigFor
) -> None:
    app, actions = flaky_proxy("http://127.0.0.1:9", lambda action, n: answer())
    cloud = LibcloudProvider(cloud_config_for(await serve(app)), retry=FAST)
    with pytest.raises(SiteFailed) as info:
        await cloud.create_vm(vm_request())
    assert f"after {FAST.attempts} attempts" in info.value.reason
    # FAST.attempts lookups, then one best-effort cleanup lookup
    assert actions == ["DescribeInstances"] * (FAST.attempts + 1)
    with pytest.raises(SiteFailed):
        await cloud.list_vms()
    with pytest.raises(SiteFailed):
        await cloud.kill_vm("i-0123456789abcdef0")


async def test_unreachable_cloud_is_a_failure(
    closed_loopback_url: str, cloud_config_for: ConfigFor
) -> None:
    cloud = LibcloudProvider(cloud_config_for(closed_loopback_url), retry=FAST, timeout=2)
    with pytest.raises(SiteFailed) as info:
        await cloud.get_vm("i-0123456789abcdef0")
    assert f"after {FAST.attempts} attempts" in info.value.reason


async def test_run_instances_failing_after_creation_leaves_nothing(
    moto: str, serve: Serve, cloud_config_for: ConfigFor
) -> None:
    """The node is made but every try fails: the final cleanup (found by tag) removes it."""

    def fail(action: str, n: int) -> web.Response | None:
        if action == "RunInstances":  # moto makes the node, the client hears 500
            return web.Response(status=500, text="lost", headers={"X-Forward-First": "1"})
        if action == "DescribeInstances" and n in (2, 3):  # the retries' lookups fail
            return server_error()
        return None

    app, _ = flaky_proxy(moto, fail)
    cloud = LibcloudProvider(cloud_config_for(await serve(app)), retry=FAST)
    with pytest.raises(SiteFailed):
        await cloud.create_vm(vm_request("key-cleanup"))
    live = [n for n in moto_instances(moto) if n[1] not in ("terminated", "shutting-down")]
    assert live == []


# -- end to end: no site can place, burst, a throttling cloud is skipped -----------------


async def test_burst_skips_a_throttling_cloud_and_the_vm_is_listed_and_killed(
    moto: str, serve: Serve, cloud_config_for: ConfigFor
) -> None:
    app, actions = flaky_proxy("http://127.0.0.1:9", lambda action, n: throttled())
    base = cloud_config_for(await serve(app), "throttled-cloud")
    # the throttling cloud is the cheaper one, so it is tried first
    throttling = PublicCloudConfig(
        "throttled-cloud",
        key="k",
        secret="s",
        host=base.host,
        port=base.port,
        secure=False,
        images=base.images,
        sizes={"m1.small": CloudSize("t2.nano", 1, 512, 0.001)},
    )
    working = cloud_config_for(moto, "moto-cloud")
    providers = {c.name: LibcloudProvider(c, retry=FAST) for c in (throttling, working)}
    placer = Placer()
    placer.update(SiteCapacity("full-site", hosts=[HostCapacity(0, 0)], fetchable_images=None))
    request = PlacementRequest(
        vcpus=1, memory_mib=512, image="debian-12", user="alice", instance_type="m1.small"
    )
    assert not placer.decide(request).found
    policy = BurstPolicy(
        clouds=(throttling, working), allowed_users=frozenset({"alice"}), budget_per_period=5
    )
    burst = policy.decide(request, placement_found=False)
    assert burst.action is BurstAction.BURST and burst.cloud == "throttled-cloud"

    events: list[str] = []

    async def try_cloud(candidate: Candidate) -> ProviderVM:
        return await providers[candidate.site].create_vm(vm_request("burst-key"))

    vm = await place_with_failover(
        burst.as_placement(request), try_cloud, lambda site, msg: events.append(msg)
    )
    assert vm.site == "moto-cloud"
    failed = [e for e in events if "failed" in e]
    assert len(failed) == 1
    assert failed[0].startswith(
        "site throttled-cloud failed: create: HTTP 503: RequestLimitExceeded"
    )
    assert f"after {FAST.attempts} attempts" in failed[0]
    assert events[-1] == "placed on site moto-cloud"
    assert actions == ["DescribeInstances"] * (FAST.attempts + 1)  # retried, then cleanup

    listed = await providers["moto-cloud"].list_vms()
    assert [(v.site, v.provider_id) for v in listed] == [("moto-cloud", vm.provider_id)]
    assert vm.addresses  # moto's made-up addresses: reported as data, never contacted
    await providers["moto-cloud"].kill_vm(vm.provider_id)
    assert await providers["moto-cloud"].list_vms() == []
