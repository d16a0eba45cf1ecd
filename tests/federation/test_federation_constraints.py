"""The --constraint parser: the accepted forms, and a clear error for everything else."""

from __future__ import annotations

import pytest

from federation.constraints import Constraints, parse_constraint, parse_constraints
from federation.errors import InvalidConstraint, to_stratus_error


@pytest.mark.parametrize(
    ("text", "sites", "location"),
    [
        ("site in [a,b]", ("a", "b"), {}),
        ("  site   in[ lal , cnrs-grif.fr ,b_2 ]  ", ("lal", "cnrs-grif.fr", "b_2"), {}),
        ("site in [a, a, b]", ("a", "b"), {}),
        ("site == lal", ("lal",), {}),
        ("site==lal", ("lal",), {}),
        ("country == FR", None, {"country": "FR"}),
        ("city == 'Gif sur Yvette'", None, {"city": "Gif sur Yvette"}),
        ('dc.zone == "eu-west:1"', None, {"dc.zone": "eu-west:1"}),
    ],
)
def test_accepted_forms(text: str, sites: tuple[str, ...] | None, location: dict[str, str]) -> None:
    assert parse_constraint(text) == Constraints(sites=sites, location=location)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty constraint at position 0"),
        ("   ", "empty constraint"),
        ("site", "expected '==' or 'in', found 'end of input'"),
        ("site in", "expected '[' to open the site list, found 'end of input'"),
        ("site in a,b", "expected '[' to open the site list, found 'a,b'"),
        ("site in []", "the site list is empty"),
        ("site in [a,", "expected a site name, found 'end of input'"),
        ("site in [a,]", "expected a site name after ','"),
        ("site in [a b]", "expected ',' or ']', found 'b]'"),
        ("site in [a", "expected ',' or ']', found 'end of input'"),
        ("site != a", "unsupported operator '!=' (use '==' or 'in')"),
        ("country = FR", "unsupported operator '='"),
        ("cpu < 4", "unsupported operator '<'"),
        ("site not in [a]", "unsupported operator 'not'"),
        ("country in [FR, DE]", "'in' is only supported for 'site'; use country == VALUE"),
        ("country == ", "expected a value for country, found 'end of input'"),
        ("country == FR DE", "unexpected trailing input 'DE'"),
        ("country == FR; rm -rf /", "unexpected trailing input '; rm -rf /'"),
        ("1country == FR", "expected 'site' or a tag name, found '1country ='"),
        ("city == 'Gif", "unterminated quoted string (expected a value for city)"),
        ("city == ''", "empty quoted string (expected a value for city)"),
        ("site == -a", "expected a site name, found '-a'"),
    ],
)
def test_garbage_is_refused_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(InvalidConstraint) as info:
        parse_constraint(text)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)
    assert info.value.text == text
    assert info.value.position is not None


def test_position_points_at_the_problem() -> None:
    with pytest.raises(InvalidConstraint) as info:
        parse_constraint("site in [a b]")
    assert info.value.position == 11
    assert "at position 11" in str(info.value)


def test_non_string_and_oversized_input() -> None:
    with pytest.raises(InvalidConstraint, match="must be a string"):
        parse_constraint(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidConstraint, match="longer than"):
        parse_constraint("site in [" + "a," * 5000 + "a]")


def test_several_constraints_are_anded() -> None:
    got = parse_constraints(
        ["site in [a, b, c]", "country == FR", "site in [c, b]", "city == Orsay", "country == FR"]
    )
    assert got == Constraints(sites=("b", "c"), location={"country": "FR", "city": "Orsay"})
    assert parse_constraints([]) == Constraints()


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["site in [a]", "site == b"], "no site is in both ['a'] and ['b']"),
        (["country == FR", "country == DE"], "country == FR and country == DE"),
    ],
)
def test_contradictions_are_refused(texts: list[str], message: str) -> None:
    with pytest.raises(InvalidConstraint, match="constraints contradict") as info:
        parse_constraints(texts)
    assert message in str(info.value)


def test_invalid_constraint_maps_to_400() -> None:
    with pytest.raises(InvalidConstraint) as info:
        parse_constraint("site in")
    err = to_stratus_error(info.value)
    assert (err.status, err.code) == (400, "invalid_constraint")
    assert err.details == {"constraint": "site in", "position": 7}
