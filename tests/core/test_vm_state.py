"""core.vm_state: one vocabulary, what each side reports, and the predicates."""

from __future__ import annotations

import pytest

from core.vm_state import (
    BROKER_STATES,
    SITE_STATE_MAP,
    SITE_STATES,
    VmState,
    parse_state,
)


def test_terminal_final_and_active_partition_the_states() -> None:
    terminal = {s for s in VmState if s.is_terminal}
    final = {s for s in VmState if s.is_final}
    active = {s for s in VmState if s.is_active}
    assert terminal == {VmState.DONE, VmState.FAILED, VmState.EXPIRED}
    # A failed VM may still hold a disk until it is killed: terminal, not final.
    assert final == {VmState.DONE, VmState.EXPIRED}
    assert active == set(VmState) - terminal


def test_site_and_broker_vocabularies() -> None:
    assert {s.value for s in SITE_STATES} == {
        "pending",
        "prolog",
        "boot",
        "running",
        "shutdown",
        "done",
        "failed",
    }
    assert not SITE_STATES & BROKER_STATES
    assert set(SITE_STATE_MAP.values()) == set(SITE_STATES)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("running", VmState.RUNNING), ("RUNNING", VmState.RUNNING), ("bogus", VmState.UNKNOWN)],
)
def test_parse_state_without_a_table(raw: str, expected: VmState) -> None:
    assert parse_state(raw) is expected


def test_parse_state_with_a_table_maps_only_what_the_table_knows() -> None:
    # A site never reports "queued": through the site's table it is unknown.
    assert parse_state("queued", SITE_STATE_MAP) is VmState.UNKNOWN
    assert parse_state("boot", SITE_STATE_MAP) is VmState.BOOT
