"""The rating exchange after a delivery: read the customer's answer, decide what to say.

Customers answer the "rate 1 to 5" question as they type on a phone: a digit, a digit with a
full stop, "5/5", or a row of star emoji (which come with invisible variation selectors). All of
those read as a rating; anything else is asked again once, and the second miss ends the
exchange so a customer who moved on is not nagged.
"""

import re
from dataclasses import dataclass

from dialog.state import Lang
from dialog.texts import Notice, render_notice

RATING_MIN = 1
RATING_MAX = 5
ASKS_AGAIN = 1  # how often an unreadable answer is asked again before the exchange closes

STARS = frozenset("★⭐🌟✩☆*")
# Emoji presentation selectors and joiners are invisible and carry no meaning here.
_INVISIBLE = frozenset("\ufe0e\ufe0f\u200d\u200b")
_DIGIT = re.compile(r"([1-5])(?:/5)?[.!)]*")


@dataclass(frozen=True, slots=True)
class RatingRules:
    """Deployment settings the answers use; None leaves that sentence out."""

    promo_code: str | None = None
    support_contact: str | None = None


@dataclass(frozen=True, slots=True)
class Rated:
    rating: int


@dataclass(frozen=True, slots=True)
class AskAgain:
    pass


@dataclass(frozen=True, slots=True)
class GiveUp:
    """The exchange closes; the message belongs to the order dialog instead."""


def parse_rating(text: str) -> int | None:
    """1 to 5 from "4", " 4. ", "4/5", "★★★★" or "⭐️⭐️⭐️⭐️"; None for anything else."""
    compact = "".join(ch for ch in text if not ch.isspace() and ch not in _INVISIBLE)
    if match := _DIGIT.fullmatch(compact):
        return int(match.group(1))
    if compact and set(compact) <= STARS and RATING_MIN <= len(compact) <= RATING_MAX:
        return len(compact)
    return None


def answer_rating(text: str, asks_so_far: int) -> Rated | AskAgain | GiveUp:
    """``asks_so_far``: how often this exchange already asked again."""
    rating = parse_rating(text)
    if rating is not None:
        return Rated(rating)
    return AskAgain() if asks_so_far < ASKS_AGAIN else GiveUp()


def ask_again(lang: Lang, order_id: int) -> str:
    return render_notice(Notice.RATING_ASK_AGAIN, lang, order_id=order_id)


def thanks(rating: int, lang: Lang, rules: RatingRules) -> str:
    """4 or 5: thanks and the promo code; 1 to 3: an apology and where to get help."""
    if rating >= 4:
        parts = [render_notice(Notice.RATING_THANKS, lang)]
        if rules.promo_code:
            parts.append(render_notice(Notice.RATING_PROMO, lang, promo_code=rules.promo_code))
    else:
        parts = [render_notice(Notice.RATING_APOLOGY, lang)]
        if rules.support_contact:
            parts.append(
                render_notice(Notice.RATING_SUPPORT, lang, support_contact=rules.support_contact)
            )
    return "\n".join(parts)
