"""What counts as an address: what a courier can read, not invisible characters."""

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dialog import DialogRules
from dialog.validation import Invalid, Reason, parse_address

RULES = DialogRules()
INVISIBLE = [
    "\u200b",  # zero-width space
    "\u200d",  # zero-width joiner
    "\u2060",  # word joiner
    "\ufeff",  # byte order mark
    "\u00ad",  # soft hyphen
    "\u202e",  # right-to-left override
    "\u2066",  # left-to-right isolate
    "\U000e0041",  # tag latin capital letter A
    "\ufdd0",  # noncharacter
    "\uffff",  # noncharacter
    "\U0010fffe",  # noncharacter of the last plane
]


@pytest.mark.parametrize("char", INVISIBLE)
def test_an_address_of_only_invisible_characters_is_too_short(char: str) -> None:
    assert parse_address(char * 50, RULES) == Invalid(Reason.ADDRESS_TOO_SHORT)


def test_an_address_of_invisible_characters_and_spaces_mixed_is_too_short() -> None:
    text = " ".join(INVISIBLE) + " \u202e\u200b \U000e0020\U000e007f"
    assert parse_address(text, RULES) == Invalid(Reason.ADDRESS_TOO_SHORT)


def test_combining_marks_alone_do_not_count_towards_the_minimum() -> None:
    assert parse_address("a\u0301\u0301\u0301\u0301\u0301", RULES) == Invalid(
        Reason.ADDRESS_TOO_SHORT
    )


def test_invisible_characters_inside_an_address_are_removed() -> None:
    assert parse_address("12\u200b Chui\u202e Ave\ufeffnue\U000e0041", RULES) == "12 Chui Avenue"


def test_look_alike_forms_are_folded_to_the_plain_ones() -> None:
    assert parse_address("ｕｌ． Ｃｈｕｉ １２", RULES) == "ul. Chui 12"
    assert parse_address("\ufb01eld street 5", RULES) == "field street 5"
    assert parse_address("ул. Ле\u0301нина 5", RULES) == unicodedata.normalize(
        "NFKC", "ул. Ле\u0301нина 5"
    )


def test_a_real_address_in_any_script_is_kept() -> None:
    for text in ("проспект Чуй 12, кв. 5", "北京市 朝阳区 5", "شارع 12", "12 Chui Avenue"):
        assert parse_address(text, RULES) == text


@given(st.text(max_size=300))
def test_a_stored_address_is_normalised_and_holds_nothing_invisible(text: str) -> None:
    address = parse_address(text, RULES)
    if isinstance(address, Invalid):
        return
    assert unicodedata.normalize("NFKC", address) == address
    assert not any(unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in address)
    assert not any(0xFDD0 <= ord(c) <= 0xFDEF or ord(c) & 0xFFFE == 0xFFFE for c in address)
    assert parse_address(address, RULES) == address
    visible = [c for c in address if not unicodedata.category(c).startswith(("M", "Z"))]
    assert len(visible) >= 1
