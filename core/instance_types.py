"""Named instance types (the StratusLab / EC2-era names users know).

Part of the API contract shared by the site agent and the broker (the broker
sizes a request before it reaches a site). Sizes are chosen for today's small
research guests; ``docs/api.md`` lists them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InstanceType:
    name: str
    vcpus: int
    memory_mib: int


INSTANCE_TYPES: dict[str, InstanceType] = {
    t.name: t
    for t in (
        InstanceType("t1.micro", 1, 256),
        InstanceType("m1.small", 1, 512),
        InstanceType("m1.medium", 1, 1024),
        InstanceType("m1.large", 2, 2048),
        InstanceType("m1.xlarge", 4, 4096),
        InstanceType("c1.medium", 2, 1024),
        InstanceType("c1.xlarge", 4, 2048),
    )
}

DEFAULT_INSTANCE_TYPE = "m1.small"
