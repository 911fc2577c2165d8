"""Properties of the answer parsers: whatever way people write a phone number, a yes or
no, or a quantity, it reads as the same value."""

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dialog import DialogRules, PhoneRule
from dialog.validation import (
    _TENS_NUMBERS,
    _UNIT_NUMBERS,
    _UNITS,
    NO_WORDS,
    YES_WORDS,
    parse_confirmation,
    parse_phone,
    parse_quantity,
)

_F = phonenumbers.PhoneNumberFormat
SEPARATORS = st.sampled_from([" ", "-", ".", "", "\u2011", "  "])
YES_DECORATION = st.sampled_from(["", "!", ".", " 🙂", "!!", " 👍🏻"])
NO_DECORATION = st.sampled_from(["", "!", ".", " 🙂", "!!", " 👎🏽"])


def example(region: str, kind: int) -> phonenumbers.PhoneNumber:
    number = phonenumbers.example_number_for_type(region, kind)
    assert number is not None
    return number


def spaced(digits: str, cuts: list[int], separator: str) -> str:
    """The digits with a separator at some of the places a person might put one."""
    out = [digit + (separator if i in cuts else "") for i, digit in enumerate(digits)]
    return "".join(out).strip()


@pytest.mark.parametrize("region", ["KG", "KZ"])
@pytest.mark.parametrize(
    "kind", [phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE]
)
@given(
    form=st.sampled_from([_F.NATIONAL, _F.INTERNATIONAL, _F.E164]),
    separator=SEPARATORS,
    cuts=st.lists(st.integers(0, 15), max_size=4),
)
def test_the_regions_example_numbers_read_in_any_form_as_their_e164(
    region: str, kind: int, form: int, separator: str, cuts: list[int]
) -> None:
    number = example(region, kind)
    written = phonenumbers.format_number(number, form)
    digits = "".join(c for c in written if c.isdigit())
    typed = ("+" if written.startswith("+") else "") + spaced(digits, cuts, separator)

    assert parse_phone(typed, PhoneRule(region=region)) == phonenumbers.format_number(
        number, _F.E164
    )


@pytest.mark.parametrize(("home", "other"), [("KG", "KZ"), ("KZ", "KG")])
def test_another_regions_example_is_refused_unless_allowed(home: str, other: str) -> None:
    number = example(other, phonenumbers.PhoneNumberType.MOBILE)
    typed = phonenumbers.format_number(number, _F.INTERNATIONAL)

    assert not isinstance(parse_phone(typed, PhoneRule(region=home)), str)
    assert parse_phone(typed, PhoneRule(region=home, allowed=frozenset({other}))) == (
        phonenumbers.format_number(number, _F.E164)
    )


def _cased(word: str, flips: list[bool]) -> str:
    flips = flips + [False] * len(word)
    return "".join(c.upper() if flip else c for c, flip in zip(word, flips, strict=False))


@given(
    word=st.sampled_from(sorted(YES_WORDS)),
    flips=st.lists(st.booleans(), max_size=12),
    tail=YES_DECORATION,
)
def test_a_yes_word_in_any_case_and_decoration_is_a_yes(
    word: str, flips: list[bool], tail: str
) -> None:
    assert parse_confirmation(f" {_cased(word, flips)}{tail} ") is True


@given(
    word=st.sampled_from(sorted(NO_WORDS)),
    flips=st.lists(st.booleans(), max_size=12),
    tail=NO_DECORATION,
)
def test_a_no_word_in_any_case_and_decoration_is_a_no(
    word: str, flips: list[bool], tail: str
) -> None:
    assert parse_confirmation(f"{_cased(word, flips)}{tail}") is False


@given(yes=st.sampled_from(sorted(YES_WORDS)), no=st.sampled_from(sorted(NO_WORDS)))
def test_a_yes_and_a_no_together_is_neither(yes: str, no: str) -> None:
    assert parse_confirmation(f"{yes} {no}") is None


RULES = DialogRules(quantity_max=99)


@given(
    quantity=st.integers(RULES.quantity_min, RULES.quantity_max),
    zeros=st.integers(0, 3),
    unit=st.none() | st.sampled_from(sorted(_UNITS - {"x", "×"})),
    glued=st.booleans(),
)
def test_a_quantity_in_digits_with_any_unit_reads_as_itself(
    quantity: int, zeros: int, unit: str | None, glued: bool
) -> None:
    text = "0" * zeros + str(quantity)
    if unit is not None:
        text += unit if glued else f" {unit}"

    assert parse_quantity(text, RULES) == quantity


@given(
    tens=st.sampled_from(sorted(_TENS_NUMBERS)),
    unit=st.sampled_from(sorted(_UNIT_NUMBERS)),
    hyphen=st.booleans(),
)
def test_a_quantity_in_tens_and_units_words_adds_up(tens: str, unit: str, hyphen: bool) -> None:
    text = f"{tens}-{unit}" if hyphen else f"{tens} {unit}"

    assert parse_quantity(text, RULES) == _TENS_NUMBERS[tens] + _UNIT_NUMBERS[unit]


@given(quantity=st.integers(RULES.quantity_max + 1, 10**30) | st.integers(-(10**30), 0))
def test_a_number_outside_the_bounds_is_never_a_quantity(quantity: int) -> None:
    assert not isinstance(parse_quantity(str(quantity), RULES), int)
