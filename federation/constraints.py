"""Parser for the user constraints of the CLI form ``--constraint 'EXPR'``.

Grammar (whitespace between tokens is free; nothing else is accepted)::

    constraint := "site" "in" "[" value ("," value)* "]"     only these sites
                | "site" "==" value                           exactly this site
                | tag "==" value                              a location tag must match
    tag        := [A-Za-z][A-Za-z0-9_.-]*   (any name but "site")
    value      := [A-Za-z0-9][A-Za-z0-9_.:-]*
                | '"' any characters but '"' and newline '"'
                | "'" any characters but "'" and newline "'"

Examples: ``site in [lal, cnrs-grif]``, ``site == lal``, ``country == FR``,
``city == "Gif sur Yvette"``.

Several constraints combine with AND: two site lists intersect, two tags with
different values for the same key contradict.  Anything else — an unknown
operator (``!=``, ``<``), ``in`` on a tag, an empty list, a dangling comma,
trailing input — raises :class:`~federation.errors.InvalidConstraint` (a
``ValueError``) naming what was expected and where.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from federation.errors import InvalidConstraint

_TAG = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")
_BARE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")
_SPACE = re.compile(r"\s*")
_MAX_LENGTH = 4096


@dataclass(frozen=True)
class Constraints:
    """Parsed constraints: ``sites`` (None = any site) and location tags that must match."""

    sites: tuple[str, ...] | None = None
    location: Mapping[str, str] = field(default_factory=dict)

    def merge(self, other: Constraints, *, text: str = "") -> Constraints:
        """Both constraints at once (AND); ``InvalidConstraint`` if nothing satisfies both."""
        sites = self.sites
        if other.sites is not None:
            if sites is None:
                sites = other.sites
            else:
                sites = tuple(s for s in sites if s in set(other.sites))
                if not sites:
                    raise InvalidConstraint(
                        f"constraints contradict: no site is in both {list(self.sites or ())} "
                        f"and {list(other.sites)}",
                        text=text,
                    )
        location = dict(self.location)
        for key, value in other.location.items():
            if key in location and location[key] != value:
                raise InvalidConstraint(
                    f"constraints contradict: {key} == {location[key]} and {key} == {value}",
                    text=text,
                )
            location[key] = value
        return Constraints(sites=sites, location=location)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, message: str) -> InvalidConstraint:
        return InvalidConstraint(
            f"invalid constraint {self.text!r}: {message} at position {self.pos}",
            text=self.text,
            position=self.pos,
        )

    def skip_space(self) -> None:
        m = _SPACE.match(self.text, self.pos)
        assert m is not None  # \s* always matches
        self.pos = m.end()

    def at_end(self) -> bool:
        self.skip_space()
        return self.pos >= len(self.text)

    def peek(self) -> str:
        self.skip_space()
        return self.text[self.pos : self.pos + 1]

    def expect(self, literal: str, what: str) -> None:
        self.skip_space()
        if not self.text.startswith(literal, self.pos):
            found = self.text[self.pos : self.pos + 10] or "end of input"
            raise self.fail(f"expected {what}, found {found!r}")
        self.pos += len(literal)

    def tag(self) -> str:
        self.skip_space()
        m = _TAG.match(self.text, self.pos)
        if m is None:
            found = self.text[self.pos : self.pos + 10] or "end of input"
            raise self.fail(f"expected 'site' or a tag name, found {found!r}")
        self.pos = m.end()
        return m.group()

    def operator(self) -> str:
        self.skip_space()
        rest = self.text[self.pos :]
        if rest.startswith("=="):
            self.pos += 2
            return "=="
        m = re.match(r"in\b", rest)
        if m is not None:
            self.pos += 2
            return "in"
        m = re.match(r"(!=|<=|>=|=|<|>|not\b)", rest)
        if m is not None:
            raise self.fail(f"unsupported operator {m.group()!r} (use '==' or 'in')")
        found = rest[:10] or "end of input"
        raise self.fail(f"expected '==' or 'in', found {found!r}")

    def value(self, what: str) -> str:
        self.skip_space()
        quote = self.text[self.pos : self.pos + 1]
        if quote in ("'", '"'):
            end = self.text.find(quote, self.pos + 1)
            newline = self.text.find("\n", self.pos + 1)
            if end < 0 or (0 <= newline < end):
                raise self.fail(f"unterminated quoted string (expected {what})")
            value = self.text[self.pos + 1 : end]
            if not value.strip():
                raise self.fail(f"empty quoted string (expected {what})")
            self.pos = end + 1
            return value
        m = _BARE.match(self.text, self.pos)
        if m is None:
            found = self.text[self.pos : self.pos + 10] or "end of input"
            raise self.fail(f"expected {what}, found {found!r}")
        self.pos = m.end()
        return m.group()

    def site_list(self) -> tuple[str, ...]:
        self.expect("[", "'[' to open the site list")
        if self.peek() == "]":
            raise self.fail("the site list is empty")
        sites = [self.value("a site name")]
        while True:
            nxt = self.peek()
            if nxt == "]":
                self.pos += 1
                return tuple(dict.fromkeys(sites))
            if nxt != ",":
                found = self.text[self.pos : self.pos + 10] or "end of input"
                raise self.fail(f"expected ',' or ']', found {found!r}")
            self.pos += 1
            if self.peek() == "]":
                raise self.fail("expected a site name after ','")
            sites.append(self.value("a site name"))

    def parse(self) -> Constraints:
        if self.at_end():
            raise self.fail("empty constraint")
        name = self.tag()
        op = self.operator()
        if name == "site":
            result = (
                Constraints(sites=self.site_list())
                if op == "in"
                else Constraints(sites=(self.value("a site name"),))
            )
        else:
            if op == "in":
                self.pos -= 2
                raise self.fail(f"'in' is only supported for 'site'; use {name} == VALUE")
            result = Constraints(location={name: self.value(f"a value for {name}")})
        if not self.at_end():
            raise self.fail(f"unexpected trailing input {self.text[self.pos : self.pos + 10]!r}")
        return result


def parse_constraint(text: str) -> Constraints:
    """Parse one constraint expression; raises ``InvalidConstraint`` for anything off-grammar."""
    if not isinstance(text, str):
        raise InvalidConstraint(f"a constraint must be a string, not {type(text).__name__}")
    if len(text) > _MAX_LENGTH:
        raise InvalidConstraint(f"constraint longer than {_MAX_LENGTH} characters", text=text[:80])
    return _Parser(text).parse()


def parse_constraints(texts: Iterable[str]) -> Constraints:
    """Parse several ``--constraint`` values and AND them together."""
    result = Constraints()
    for text in texts:
        result = result.merge(parse_constraint(text), text=text)
    return result
