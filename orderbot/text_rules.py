"""One rule for every string a provider sends that reaches PostgreSQL, Redis or the
broker: no control characters (Unicode category Cc, C0 and C1 and DEL).

PostgreSQL's text refuses NUL outright: a NUL in a Chat2Desk `transport` passed the
edge and made the order insert fail on every delivery, until the customer's message
ended in the DLQ and the order was lost. Other controls are not errors anywhere but
mean nothing in a name or a message and confuse logs and operators' screens. Names
(a transport, a channel) with one are refused with a 422 naming the field; free text
(a customer's message) is cleaned instead, keeping tab and line breaks, since the
customer cannot see, and should not lose a message over, a character they did not mean.
"""

from __future__ import annotations

import re

from pydantic import AfterValidator

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # not \t \n \r


def refuse_controls(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


def drop_controls(value: str) -> str:
    return _CONTROL_IN_TEXT.sub("", value)


# Metadata for a field's Annotated type, after its other constraints (so a length is
# checked on what was sent): `Annotated[StrictStr, Field(max_length=64), NO_CONTROLS]`.
NO_CONTROLS = AfterValidator(refuse_controls)
DROP_CONTROLS = AfterValidator(drop_controls)
