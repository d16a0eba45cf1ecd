"""The SDK's volume, disk and network calls: paths, bodies, and ids that cannot escape."""

from __future__ import annotations

import json

import httpx
import pytest
import respx

from client.errors import ApiError
from client.sdk import StratusClient

URL = "http://site.test"
VOL = "0b6c2d6e-3f1a-4c55-9a7e-0d4f3c2b1a00"
VM = "9f0c2d6e-3f1a-4c55-9a7e-0d4f3c2b1a00"


@respx.mock
def test_volume_calls_send_the_documented_requests() -> None:
    create = respx.post(f"{URL}/api/v1/volumes").mock(
        return_value=httpx.Response(202, json={"id": VOL, "state": "ready"})
    )
    listing = respx.get(f"{URL}/api/v1/volumes").mock(
        return_value=httpx.Response(200, json={"volumes": [{"id": VOL}]})
    )
    attach = respx.post(f"{URL}/api/v1/volumes/{VOL}/attach").mock(
        return_value=httpx.Response(200, json={"device": "vdc"})
    )
    detach = respx.post(f"{URL}/api/v1/volumes/{VOL}/detach").mock(
        return_value=httpx.Response(200, json={"device": "vdc"})
    )
    with StratusClient(URL, token="t") as api:
        assert api.create_volume({"size_gib": 2, "tag": "x"})["state"] == "ready"
        assert api.list_volumes(tag="^x", visibility="public", all_owners=True) == [{"id": VOL}]
        assert api.attach_volume(VOL, VM, readonly=True) == {"device": "vdc"}
        api.detach_volume(VOL)
        api.detach_volume(VOL, VM)
    assert json.loads(create.calls.last.request.content) == {"size_gib": 2, "tag": "x"}
    assert dict(listing.calls.last.request.url.params) == {
        "tag": "^x",
        "visibility": "public",
        "all": "true",
    }
    assert json.loads(attach.calls.last.request.content) == {"vm_id": VM, "readonly": True}
    assert [json.loads(c.request.content) for c in detach.calls] == [{}, {"vm_id": VM}]


@respx.mock
def test_ids_are_quoted_into_one_path_segment() -> None:
    error = {"error": {"code": "not_found", "message": "no such thing"}}
    volume = respx.get(f"{URL}/api/v1/volumes/..%2F..%2Fetc").mock(
        return_value=httpx.Response(404, json=error)
    )
    disk = respx.delete(f"{URL}/api/v1/vms/{VM}/disks/..%2Fvda").mock(
        return_value=httpx.Response(404, json=error)
    )
    with StratusClient(URL) as api:
        with pytest.raises(ApiError, match="no such thing"):
            api.get_volume("../../etc")
        with pytest.raises(ApiError, match="no such thing"):
            api.detach_disk(VM, "../vda")
    assert volume.called and disk.called


@respx.mock
def test_network_and_disk_listings() -> None:
    respx.get(f"{URL}/api/v1/networks").mock(
        return_value=httpx.Response(200, json={"networks": [{"name": "public"}]})
    )
    respx.get(f"{URL}/api/v1/networks/public").mock(
        return_value=httpx.Response(200, json={"name": "public", "leases": []})
    )
    respx.get(f"{URL}/api/v1/vms/{VM}/disks").mock(
        return_value=httpx.Response(200, json={"vm_id": VM, "disks": [{"device": "vdc"}]})
    )
    static = respx.post(f"{URL}/api/v1/vms/{VM}/disks").mock(
        return_value=httpx.Response(200, json={"device": "vdd"})
    )
    with StratusClient(URL) as api:
        assert api.list_networks() == [{"name": "public"}]
        assert api.get_network("public")["leases"] == []
        assert api.vm_disks(VM) == [{"device": "vdc"}]
        assert api.attach_static_disk(VM, "busybox") == {"device": "vdd"}
    assert json.loads(static.calls.last.request.content) == {"static_disk": "busybox"}
