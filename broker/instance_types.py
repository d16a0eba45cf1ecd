"""Named instance types, the same table as the site agent's (``docs/api.md``).

The broker needs the sizes to place a request before it reaches a site; it
keeps its own copy because the broker does not import the site agent.
``tests/broker/test_broker_instance_types.py`` checks both tables agree.
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
