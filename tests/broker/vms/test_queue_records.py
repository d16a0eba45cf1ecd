"""A queued VM's placement request and user, as stored in ``broker_queue`` and read back."""

from __future__ import annotations

import json

from auth.delegation import DelegatedUser
from broker.vms.queueing import request_from_json, request_to_json, user_from_json, user_to_json
from core.resources.networks import NetworkType
from federation.model import PlacementRequest


def test_a_placement_request_survives_the_database_with_every_site_field() -> None:
    request = PlacementRequest(
        vcpus=2,
        memory_mib=2048,
        image="busybox",
        network="lab",
        network_type=NetworkType.PRIVATE,
        address="198.18.10.7",
        host_tags=frozenset({"gpu", "ssd"}),
        static_images=frozenset({"data"}),
        own_images={"site-a": frozenset({"snap", "data"})},
        groups=frozenset({"atlas"}),
        sites=("site-a",),
        location={"country": "FR"},
        preferred_sites=("site-a", "site-b"),
        user="alice",
        wait=True,
        expected_hours=2.0,
    )
    stored = json.loads(json.dumps(request_to_json(request)))  # what the JSON column holds
    assert "needs_address" not in stored, "derived fields are not stored"
    back = request_from_json(stored)
    assert request_to_json(back) == request_to_json(request)
    assert back.host_tags == frozenset({"gpu", "ssd"}) and back.sites == ("site-a",)
    assert back.own_images == {"site-a": frozenset({"snap", "data"})}
    assert back.network_type is NetworkType.PRIVATE and back.needs_address
    # A row written by an older broker with a field this one does not know still loads.
    assert request_from_json({**stored, "gone_field": 1}).image == "busybox"


def test_the_user_a_queued_vm_is_for_survives_the_database() -> None:
    user = DelegatedUser(
        account="alice",
        identity="/DC=org/CN=Alice",
        method="x509",
        groups=frozenset({"atlas", "cms"}),
        fqans=("/atlas/Role=NULL",),
    )
    assert user_from_json(json.loads(json.dumps(user_to_json(user)))) == user
    assert user_to_json(None) == {} and user_from_json({}) is None
