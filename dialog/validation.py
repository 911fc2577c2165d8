"""Parsing of customer answers.

Each parser returns the normalized value or an ``Invalid`` naming why, so the machine can explain
the problem instead of silently re-asking. None of them raises, whatever the text.
"""

import re
import string
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

import phonenumbers

from dialog.rules import DialogRules, PhoneRule
from dialog.state import Lang


class Reason(StrEnum):
    ADDRESS_TOO_SHORT = "address_too_short"
    ADDRESS_TOO_LONG = "address_too_long"
    PHONE_INVALID = "phone_invalid"
    PHONE_REGION_NOT_ALLOWED = "phone_region_not_allowed"
    QUANTITY_NOT_A_NUMBER = "quantity_not_a_number"
    QUANTITY_OUT_OF_RANGE = "quantity_out_of_range"


@dataclass(frozen=True, slots=True)
class Invalid:
    reason: Reason


YES_WORDS = frozenset(
    {"yes", "y", "ok", "okay", "sure", "confirm", "да", "ага", "конечно", "подтверждаю", "ок"}
)
NO_WORDS = frozenset({"no", "n", "нет"})
CANCEL_WORDS = frozenset({"cancel", "/cancel", "stop", "отмена", "стоп"})

# Control characters and lone surrogates: PostgreSQL rejects NUL in text and a surrogate cannot
# be encoded to the UTF-8 JSON the state is stored as, so neither may reach a stored address.
_UNSTORABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_PHONE_SEPARATORS = re.compile(r"[\s\-.()\u2010-\u2015\u2212]")
# What is left of a number once the separators are gone: libphonenumber itself would also
# read letters (vanity numbers, "ext"), which nobody means when typing their own number.
_PHONE_TEXT = re.compile(r"\+?[0-9]{4,17}")
_INTEGER = re.compile(r"([+-]?)([0-9]+)")
_CYRILLIC = re.compile("[\u0400-\u052f]")
_TRAILING = string.punctuation + string.whitespace + "…«»“”"


def detect_lang(text: str) -> Lang:
    """Russian if the customer wrote any Cyrillic letter: the audience is Russian by default."""
    if any(match.group().isalpha() for match in _CYRILLIC.finditer(text)):
        return Lang.RU
    return Lang.EN


def parse_address(text: str, rules: DialogRules) -> str | Invalid:
    """The address as a courier and an operator will read it, and long enough counting
    only what they can see.

    NFKC folds look-alike forms (fullwidth letters, ligatures) into the plain ones, so
    an address is stored once however it was typed. Format characters (zero-width
    spaces and joiners, bidi overrides that show text backwards, tag characters) and
    noncharacters are removed: they are invisible, and an address made of them alone
    was stored as an order nobody could deliver. Combining marks alone do not count
    towards the minimum either.
    """
    cleaned = unicodedata.normalize("NFKC", _UNSTORABLE.sub(" ", text))
    cleaned = unicodedata.normalize("NFKC", "".join(c for c in cleaned if not _invisible(c)))
    address = " ".join(cleaned.split())
    if sum(1 for c in address if not unicodedata.category(c).startswith("M")) < rules.address_min:
        return Invalid(Reason.ADDRESS_TOO_SHORT)
    if len(address) > rules.address_max:
        return Invalid(Reason.ADDRESS_TOO_LONG)
    return address


def _invisible(char: str) -> bool:
    """A format character (category Cf) or a noncharacter (U+FDD0..U+FDEF and the last
    two code points of every plane), which no text is meant to show."""
    code = ord(char)
    return unicodedata.category(char) == "Cf" or 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE


def parse_phone(text: str, rule: PhoneRule) -> str | Invalid:
    """Any form people type (``0555 123 456``, ``555123456``, ``+996 (555) 12-34-56``,
    ``00996…``), read with libphonenumber's rules for the business's region; stored in
    E.164 (``+996555123456``). A valid number of a country the business does not take is
    refused with its own reason, so the customer is told why."""
    compact = _PHONE_SEPARATORS.sub("", unicodedata.normalize("NFKC", text))
    if not _PHONE_TEXT.fullmatch(compact):
        return Invalid(Reason.PHONE_INVALID)
    try:
        number = phonenumbers.parse(compact, rule.region)
    except phonenumbers.NumberParseException:
        return Invalid(Reason.PHONE_INVALID)
    if not phonenumbers.is_valid_number(number):
        return Invalid(Reason.PHONE_INVALID)
    if phonenumbers.region_code_for_number(number) not in rule.allowed:
        return Invalid(Reason.PHONE_REGION_NOT_ALLOWED)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def display_phone(e164: str) -> str:
    """A stored number as people read it: ``+996 555 123 456``."""
    try:
        number = phonenumbers.parse(e164)
    except phonenumbers.NumberParseException:
        return e164
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def parse_quantity(text: str, rules: DialogRules) -> int | Invalid:
    """Whole numbers in ASCII digits; leading zeros and a sign are read as a number.

    "-1" and "007" are numbers, so "-1" is reported as out of range rather than as not a number.
    """
    match = _INTEGER.fullmatch(text.strip())
    if match is None:
        return Invalid(Reason.QUANTITY_NOT_A_NUMBER)
    sign, digits = match.groups()
    digits = digits.lstrip("0") or "0"
    # int() refuses very long digit strings; anything longer than the maximum is out of range.
    if len(digits) > len(str(rules.quantity_max)):
        return Invalid(Reason.QUANTITY_OUT_OF_RANGE)
    quantity = -int(digits) if sign == "-" else int(digits)
    if not rules.quantity_min <= quantity <= rules.quantity_max:
        return Invalid(Reason.QUANTITY_OUT_OF_RANGE)
    return quantity


def parse_confirmation(text: str) -> bool | None:
    """True for a yes word, False for a no word, None when the answer is neither."""
    word = _word(text)
    if word in YES_WORDS:
        return True
    if word in NO_WORDS:
        return False
    return None


def is_cancel(text: str) -> bool:
    return _word(text) in CANCEL_WORDS


def phone_examples(rule: PhoneRule) -> dict[str, str]:
    """A mobile number of the region written both ways (``0700 123 456``, ``+996 700 123
    456``): libphonenumber's own example, so it is a number the rule accepts."""
    example = phonenumbers.example_number_for_type(rule.region, phonenumbers.PhoneNumberType.MOBILE)
    if example is None:
        example = phonenumbers.example_number(rule.region)
    if example is None:  # no supported region lacks one today; the code alone then
        code = f"+{phonenumbers.country_code_for_region(rule.region)}"
        return {"national": code, "international": code}
    return {
        "national": phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.NATIONAL),
        "international": phonenumbers.format_number(
            example, phonenumbers.PhoneNumberFormat.INTERNATIONAL
        ),
    }


def allowed_codes(rule: PhoneRule) -> str:
    """The country calling codes a business takes, as a customer dials them: ``+996, +7``."""
    home = phonenumbers.country_code_for_region(rule.region)
    others = {phonenumbers.country_code_for_region(code) for code in rule.allowed} - {home}
    return ", ".join(f"+{code}" for code in (home, *sorted(others)))


def _word(text: str) -> str:
    """One-word answers arrive as "Yes!", "ДА.", " ok " and must all read the same."""
    return text.strip().casefold().rstrip(_TRAILING)
