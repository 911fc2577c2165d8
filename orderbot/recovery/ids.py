"""The field rules of a customer message, as the webhooks apply them: a listed message
must become the very envelope its webhook would have, or be skipped, never half-read."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field, StrictStr

from orderbot.text_rules import DROP_CONTROLS, NO_CONTROLS


def _id_to_str(value: object) -> object:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


_PRINTABLE = r"^[\x21-\x7e]+$"
Id = Annotated[
    StrictStr, BeforeValidator(_id_to_str), Field(min_length=1, max_length=128, pattern=_PRINTABLE)
]
OptionalId = (
    Annotated[StrictStr, BeforeValidator(_id_to_str), Field(max_length=128, pattern=_PRINTABLE)]
    | None
)
Text = Annotated[StrictStr, Field(max_length=20_000), DROP_CONTROLS]
Transport = Annotated[StrictStr, Field(max_length=64), NO_CONTROLS]
