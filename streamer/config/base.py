"""What every config section shares: the section base, bounded number types, and secrets."""

from __future__ import annotations

from typing import Annotated

import msgspec

MASK = "***"

PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
UnitInterval = Annotated[float, msgspec.Meta(gt=0, le=1)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]


class Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of every config section: immutable, unknown keys rejected."""


class Secret:
    """A configured secret that never prints: ``repr``, ``str`` and formatting show ``***``.

    Only :meth:`reveal` gives the value, so a config logged, printed or put in
    an exception message by mistake does not leak it.

    >>> secret = Secret("hunter2")
    >>> f"{secret} {secret!r}", secret.reveal()
    ('*** Secret(***)', 'hunter2')
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)
