"""Parsing of customer answers.

Each parser returns the normalized value or an ``Invalid`` naming why, so the machine can explain
the problem instead of silently re-asking. None of them raises, whatever the text.
"""

import functools
import re
import string
import unicodedata
from collections.abc import Iterable
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


# One-word answers in English, Russian and Kyrgyz, and the signs people answer with. A
# phrase is taken when it is listed or when every word of it is (``да да``, ``ok 👍``).
YES_WORDS = frozenset(
    {"yes", "y", "ok", "okay", "sure", "confirm", "yeah", "yep", "yup", "correct", "right"}
    | {"да", "ага", "конечно", "подтверждаю", "ок", "верно", "правильно", "всё верно"}
    | {"все верно", "ооба", "+", "👍", "👌", "✅", "✔"}
)
NO_WORDS = frozenset(
    {"no", "n", "nope", "nah", "нет", "неа", "не", "не верно", "неверно", "жок", "-", "👎", "❌"}
)
CANCEL_WORDS = frozenset({"cancel", "/cancel", "stop", "отмена", "стоп", "отменить"})
RESTART_WORDS = frozenset(
    {"restart", "/restart", "start over", "/start", "заново", "начать заново", "сначала"}
    | {"начать сначала", "башынан"}
)
HELP_WORDS = frozenset({"help", "/help", "помощь", "помогите", "справка", "жардам"})

# Control characters and lone surrogates: PostgreSQL rejects NUL in text and a surrogate cannot
# be encoded to the UTF-8 JSON the state is stored as, so neither may reach a stored address.
_UNSTORABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_PHONE_SEPARATORS = re.compile(r"[\s\-.()\u2010-\u2015\u2212]")
# What is left of a number once the separators are gone: libphonenumber itself would also
# read letters (vanity numbers, "ext"), which nobody means when typing their own number.
_PHONE_TEXT = re.compile(r"\+?[0-9]{4,17}")
_INTEGER = re.compile(r"([+-]?)([0-9]+)")
_CYRILLIC = re.compile("[\u0400-\u052f]")
# A word (letters, digits, a leading slash of a command) or any one other character.
_TOKEN = re.compile(r"/?\w+|[^\w\s]")
_DASHES = re.compile("[\u2010-\u2015\u2212]")
_SIGNS = frozenset(word for word in YES_WORDS | NO_WORDS if len(word) == 1 and not word.isalnum())
_TRAILING = string.punctuation + "…«»“”"
# A digit next to a letter ("3шт") and a hyphen between letters ("twenty-one") part words.
_WORD_BREAK = re.compile(r"(?<=\d)(?=[^\W\d_])|(?<=[^\W\d_])(?=\d)|(?<=[^\W\d_])-(?=[^\W\d_])")
_UNITS = frozenset(
    {"шт", "штук", "штука", "штуки", "штучки", "pcs", "pc", "pieces", "piece", "x", "×"}
    | {"даана", "порции", "порций", "порция", "servings", "portions"}
)
_UNIT_NUMBERS = {
    **dict.fromkeys(("one", "один", "одна", "одну", "одно", "бир"), 1),
    **dict.fromkeys(("two", "два", "две", "эки"), 2),
    **dict.fromkeys(("three", "три", "үч"), 3),
    **dict.fromkeys(("four", "четыре", "төрт"), 4),
    **dict.fromkeys(("five", "пять", "беш"), 5),
    **dict.fromkeys(("six", "шесть", "алты"), 6),
    **dict.fromkeys(("seven", "семь", "жети"), 7),
    **dict.fromkeys(("eight", "восемь", "сегиз"), 8),
    **dict.fromkeys(("nine", "девять", "тогуз"), 9),
}
_TEEN_NUMBERS = {
    **dict.fromkeys(("ten", "десять"), 10),
    **dict.fromkeys(("eleven", "одиннадцать"), 11),
    **dict.fromkeys(("twelve", "двенадцать"), 12),
    **dict.fromkeys(("thirteen", "тринадцать"), 13),
    **dict.fromkeys(("fourteen", "четырнадцать"), 14),
    **dict.fromkeys(("fifteen", "пятнадцать"), 15),
    **dict.fromkeys(("sixteen", "шестнадцать"), 16),
    **dict.fromkeys(("seventeen", "семнадцать"), 17),
    **dict.fromkeys(("eighteen", "восемнадцать"), 18),
    **dict.fromkeys(("nineteen", "девятнадцать"), 19),
}
# Kyrgyz counts on from its tens: "он бир" is 11 as "twenty one" is 21.
_TENS_NUMBERS = {
    "он": 10,
    **dict.fromkeys(("twenty", "двадцать", "жыйырма"), 20),
    **dict.fromkeys(("thirty", "тридцать", "отуз"), 30),
    **dict.fromkeys(("forty", "сорок", "кырк"), 40),
    **dict.fromkeys(("fifty", "пятьдесят", "элүү"), 50),
    **dict.fromkeys(("sixty", "шестьдесят", "алтымыш"), 60),
    **dict.fromkeys(("seventy", "семьдесят", "жетимиш"), 70),
    **dict.fromkeys(("eighty", "восемьдесят", "сексен"), 80),
    **dict.fromkeys(("ninety", "девяносто", "токсон"), 90),
}


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
    """A whole number as people write one: ``3``, ``3 шт``, ``3 pcs``, ``три``, ``twenty-one``.

    Digits are ASCII; leading zeros and a sign are read as a number, so "-1" is reported as
    out of range rather than as not a number. A unit after the number, or an ``x`` before
    it, is dropped; a word number is English, Russian or Kyrgyz, up to 99.
    """
    words = [word.rstrip(_TRAILING) for word in _WORD_BREAK.sub(" ", text.casefold()).split()]
    if len(words) > 1 and words[0] in ("x", "×"):
        words = words[1:]
    if len(words) > 1 and words[-1] in _UNITS:
        words = words[:-1]
    if len(words) == 1 and (match := _INTEGER.fullmatch(words[0])):
        return _in_range(match, rules)
    quantity = _word_number(words)
    if quantity is None:
        return Invalid(Reason.QUANTITY_NOT_A_NUMBER)
    if not rules.quantity_min <= quantity <= rules.quantity_max:
        return Invalid(Reason.QUANTITY_OUT_OF_RANGE)
    return quantity


def _in_range(match: re.Match[str], rules: DialogRules) -> int | Invalid:
    sign, digits = match.groups()
    digits = digits.lstrip("0") or "0"
    # int() refuses very long digit strings; anything longer than the maximum is out of range.
    if len(digits) > len(str(rules.quantity_max)):
        return Invalid(Reason.QUANTITY_OUT_OF_RANGE)
    quantity = -int(digits) if sign == "-" else int(digits)
    if not rules.quantity_min <= quantity <= rules.quantity_max:
        return Invalid(Reason.QUANTITY_OUT_OF_RANGE)
    return quantity


def _word_number(words: list[str]) -> int | None:
    """``три``, ``fifteen``, ``twenty one``, ``жыйырма беш``; None for anything else."""
    match words:
        case [word] if word in _UNIT_NUMBERS:
            return _UNIT_NUMBERS[word]
        case [word] if word in _TEEN_NUMBERS:
            return _TEEN_NUMBERS[word]
        case [word] if word in _TENS_NUMBERS:
            return _TENS_NUMBERS[word]
        case [tens, unit] if tens in _TENS_NUMBERS and unit in _UNIT_NUMBERS:
            return _TENS_NUMBERS[tens] + _UNIT_NUMBERS[unit]
    return None


def parse_confirmation(text: str) -> bool | None:
    """True for a yes, False for a no, None when the answer is neither (or both)."""
    if _says(text, YES_WORDS):
        return True
    if _says(text, NO_WORDS):
        return False
    return None


def is_cancel(text: str) -> bool:
    return _says(text, CANCEL_WORDS)


def is_restart(text: str) -> bool:
    return _says(text, RESTART_WORDS)


def is_help(text: str) -> bool:
    return _says(text, HELP_WORDS)


def person_words(words: Iterable[str]) -> frozenset[str]:
    """Configured words (HANDOFF_WORDS) folded the way answers are read, so `Оператор`
    in a setting matches `оператор!` typed."""
    return frozenset(" ".join(_answer_words(word)) for word in words) - {""}


def asks_for_person(text: str, words: frozenset[str]) -> bool:
    """Whether the customer asks to be answered by a person: ``words`` from person_words."""
    return _says(text, words)


def phone_examples(rule: PhoneRule) -> dict[str, str]:
    """A mobile number of the region written both ways (``0700 123 456``, ``+996 700 123
    456``): libphonenumber's own example, so it is a number the rule accepts."""
    national, international = _phone_examples(rule)
    return {"national": national, "international": international}


@functools.lru_cache(maxsize=64)
def _phone_examples(rule: PhoneRule) -> tuple[str, str]:
    """Once per rule: libphonenumber builds and formats the example anew each time, and
    every customer asked for a phone number is shown it."""
    example = phonenumbers.example_number_for_type(rule.region, phonenumbers.PhoneNumberType.MOBILE)
    if example is None:
        example = phonenumbers.example_number(rule.region)
    if example is None:  # no supported region lacks one today; the code alone then
        code = f"+{phonenumbers.country_code_for_region(rule.region)}"
        return code, code
    return (
        phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.NATIONAL),
        phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.INTERNATIONAL),
    )


def allowed_codes(rule: PhoneRule) -> str:
    """The country calling codes a business takes, as a customer dials them: ``+996, +7``."""
    return _allowed_codes(rule)


@functools.lru_cache(maxsize=64)
def _allowed_codes(rule: PhoneRule) -> str:
    home = phonenumbers.country_code_for_region(rule.region)
    others = {phonenumbers.country_code_for_region(code) for code in rule.allowed} - {home}
    return ", ".join(f"+{code}" for code in (home, *sorted(others)))


def _says(text: str, words: frozenset[str]) -> bool:
    """Whether a short answer is one of ``words``, or made of them only."""
    tokens = _answer_words(text)
    if not tokens:
        return False
    if " ".join(tokens) in words or all(t in words for t in tokens):
        return True
    # A listed phrase with a sign of the same answer: ``всё верно 👍``.
    spoken = [t for t in tokens if t not in _SIGNS]
    signs = [t for t in tokens if t in _SIGNS]
    return (
        bool(spoken)
        and bool(signs)
        and " ".join(spoken) in words
        and all(s in words for s in signs)
    )


def _answer_words(text: str) -> tuple[str, ...]:
    """The words of a short answer as typed in any case, with what decorates them dropped:
    punctuation ("Да!", "ok."), emoji that are no answer ("да 🙂"), skin tones and
    variation selectors ("👍🏻"). A sign that is an answer (``+``, ``-``, ``👍``) is a word.
    """
    if len(text) > _ANSWER_MAX:  # an answer is short; a long text is never one
        return ()
    return _short_answer_words(text)


_ANSWER_MAX = 200


@functools.lru_cache(maxsize=256)
def _short_answer_words(text: str) -> tuple[str, ...]:
    """Remembered for the texts just seen: one message is read as a cancel, a restart,
    a call for help, a call for a person and an answer, each from the same words."""
    folded = _DASHES.sub("-", unicodedata.normalize("NFKC", text).casefold())
    return tuple(
        token
        for token in _TOKEN.findall(folded)
        if len(token) > 1 or token.isalnum() or token in _SIGNS
    )
