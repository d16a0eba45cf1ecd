"""What of a create body the public cloud takes: the state table, refusals, user data.

Against ``moto_server``: a refused create makes no instance; SSH keys,
context and user data reach the instance's ``UserData`` as cloud-init reads it.
"""

from __future__ import annotations

import base64
import email
import json
from collections.abc import Callable

import pytest
from libcloud.compute.types import NodeState

from core.vm_state import VmState
from federation.errors import SiteRefused
from federation.model import PublicCloudConfig
from federation.providers.cloud import CLOUD_STATE_MAP, LibcloudProvider
from federation.providers.cloud_spec import CONTEXT_PATH
from federation.providers.retry import RetryPolicy
from tests.federation.cloud_helpers import moto_driver, moto_instances, vm_request

FAST = RetryPolicy(attempts=2, initial_wait=0.01, max_wait=0.05)
ConfigFor = Callable[..., PublicCloudConfig]
VOLUME = "00000000-0000-4000-8000-000000000001"
SSH_KEY = (
    "ssh-ed25519 "
    + base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes(32)).decode()
)


def test_the_state_table_maps_every_ec2_and_libcloud_state() -> None:
    ec2 = {
        "pending": VmState.PENDING,
        "running": VmState.RUNNING,
        "shutting-down": VmState.SHUTDOWN,
        "stopping": VmState.SHUTDOWN,
        "stopped": VmState.STOPPED,
        "terminated": VmState.DONE,
    }
    assert {k: CLOUD_STATE_MAP[k] for k in ec2} == ec2
    assert {s.value for s in NodeState} <= set(CLOUD_STATE_MAP)
    assert CLOUD_STATE_MAP[NodeState.ERROR.value] is VmState.FAILED
    # A cloud never reports the broker's own states.
    assert not {VmState.QUEUED, VmState.EXPIRED} & set(CLOUD_STATE_MAP.values())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("volumes", [VOLUME]),
        ("readonly_volumes", [VOLUME]),
        ("static_disks", ["debian-12"]),
        ("network", "private"),
        ("address", "198.18.0.9"),
        ("host_tags", ["ssd"]),
        ("group", "physics"),
    ],
)
async def test_what_a_cloud_cannot_honour_is_refused_and_nothing_is_made(
    moto: str, cloud_config_for: ConfigFor, field: str, value: object
) -> None:
    cloud = LibcloudProvider(cloud_config_for(moto), retry=FAST)
    with pytest.raises(SiteRefused) as info:
        await cloud.create_vm(vm_request(**{field: value}))
    assert (info.value.status, info.value.code) == (422, "not_supported_by_cloud")
    assert field in info.value.reason
    assert moto_instances(moto) == []


def user_data_of(endpoint: str, instance_id: str) -> str:
    driver = moto_driver(endpoint)
    params = {
        "Action": "DescribeInstanceAttribute",
        "InstanceId": instance_id,
        "Attribute": "userData",
    }
    root = driver.connection.request(driver.path, params=params).object
    ns = "{http://ec2.amazonaws.com/doc/2016-11-15/}"
    encoded = root.findtext(f"{ns}userData/{ns}value")
    return base64.b64decode(encoded or "").decode()


async def test_user_data_alone_is_sent_as_it_is(moto: str, cloud_config_for: ConfigFor) -> None:
    cloud = LibcloudProvider(cloud_config_for(moto), retry=FAST)
    vm = await cloud.create_vm(vm_request(user_data="#!/bin/sh\necho hello\n"))
    assert user_data_of(moto, vm.provider_id) == "#!/bin/sh\necho hello\n"


async def test_keys_context_and_user_data_go_together_to_cloud_init(
    moto: str, cloud_config_for: ConfigFor
) -> None:
    cloud = LibcloudProvider(cloud_config_for(moto), retry=FAST)
    spec = {"ssh_keys": [SSH_KEY], "context": {"ROLE": "db'; rm -rf /"}}
    vm = await cloud.create_vm(vm_request(user_data="#!/bin/sh\necho hi\n", **spec))
    message = email.message_from_string(user_data_of(moto, vm.provider_id))
    assert message.is_multipart()
    config_part, user_part = message.get_payload()  # type: ignore[misc]
    assert config_part.get_content_type() == "text/cloud-config"
    assert user_part.get_content_type() == "text/x-shellscript"
    config_text = config_part.get_payload(decode=True).decode()
    assert config_text.startswith("#cloud-config\n")
    config = json.loads(config_text.removeprefix("#cloud-config\n"))
    assert config["ssh_authorized_keys"] == [SSH_KEY]
    (written,) = config["write_files"]
    assert written["path"] == CONTEXT_PATH
    assert json.loads(written["content"]) == {"ROLE": "db'; rm -rf /"}
    assert user_part.get_payload(decode=True).decode() == "#!/bin/sh\necho hi\n"


async def test_keys_alone_make_a_cloud_config(moto: str, cloud_config_for: ConfigFor) -> None:
    cloud = LibcloudProvider(cloud_config_for(moto), retry=FAST)
    vm = await cloud.create_vm(vm_request(ssh_keys=[SSH_KEY]))
    text = user_data_of(moto, vm.provider_id)
    assert json.loads(text.removeprefix("#cloud-config\n")) == {"ssh_authorized_keys": [SSH_KEY]}


async def test_user_data_over_the_cloud_limit_is_refused(
    moto: str, cloud_config_for: ConfigFor
) -> None:
    cloud = LibcloudProvider(cloud_config_for(moto), retry=FAST)
    context = {f"K{i}": "x" * 4000 for i in range(5)}
    with pytest.raises(SiteRefused, match="user data would be") as info:
        await cloud.create_vm(vm_request(context=context))
    assert info.value.code == "not_supported_by_cloud"
    assert moto_instances(moto) == []


async def test_a_running_instance_is_ready_when_the_cloud_status_checks_pass(
    moto: str, cloud_config_for: ConfigFor
) -> None:
    cloud = LibcloudProvider(cloud_config_for(moto), retry=FAST)
    vm = await cloud.create_vm(vm_request())
    (listed,) = await cloud.list_vms()
    assert listed.state is VmState.RUNNING and listed.ready
    assert (await cloud.get_vm(vm.provider_id)).ready
    await cloud.stop_vm(vm.provider_id)
    stopped = await cloud.get_vm(vm.provider_id)
    assert stopped.state in (VmState.SHUTDOWN, VmState.STOPPED) and not stopped.ready
