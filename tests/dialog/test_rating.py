"""The rating exchange as pure functions: what reads as a rating, when to ask again, what the
customer is told for each rating."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dialog import AskAgain, GiveUp, Lang, Rated, RatingRules, answer_rating, parse_rating
from dialog.rating import ask_again, thanks
from dialog.texts import NOTICES, Notice, render_notice


@pytest.mark.parametrize(
    ("text", "rating"),
    [
        ("5", 5),
        ("1", 1),
        (" 4 ", 4),
        ("3.", 3),
        ("5!", 5),
        ("4/5", 4),
        ("\n2\n", 2),
        ("★★★★", 4),
        ("⭐⭐⭐", 3),
        ("⭐️⭐️⭐️⭐️⭐️", 5),  # with the emoji variation selector phones add
        ("⭐ ⭐", 2),
        ("*", 1),
        ("🌟🌟🌟🌟", 4),
    ],
)
def test_digits_and_stars_read_as_a_rating(text: str, rating: int) -> None:
    assert parse_rating(text) == rating


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "0",
        "6",
        "10",
        "55",
        "-1",
        "3.5",
        "4/10",
        "five",
        "пять",
        "⭐" * 6,
        "5 ⭐",
        "ok",
        "да",
    ],
)
def test_anything_else_is_not_a_rating(text: str) -> None:
    assert parse_rating(text) is None


@given(st.text())
def test_parse_rating_never_raises_and_stays_in_range(text: str) -> None:
    rating = parse_rating(text)
    assert rating is None or 1 <= rating <= 5


def test_a_rating_is_taken_whatever_was_asked_before() -> None:
    assert answer_rating("4", 0) == Rated(4)
    assert answer_rating("4", 1) == Rated(4)


def test_an_unreadable_answer_is_asked_again_once_then_the_exchange_closes() -> None:
    assert answer_rating("great!", 0) == AskAgain()
    assert answer_rating("hello", 1) == GiveUp()


@pytest.mark.parametrize("lang", list(Lang))
@pytest.mark.parametrize("rating", [4, 5])
def test_a_high_rating_gets_thanks_and_the_promo_code(lang: Lang, rating: int) -> None:
    text = thanks(rating, lang, RatingRules(promo_code="SAVE10", support_contact="+996 555"))

    assert text.startswith(render_notice(Notice.RATING_THANKS, lang))
    assert "SAVE10" in text
    assert "+996 555" not in text


@pytest.mark.parametrize("lang", list(Lang))
@pytest.mark.parametrize("rating", [1, 2, 3])
def test_a_low_rating_gets_an_apology_and_the_support_contact(lang: Lang, rating: int) -> None:
    text = thanks(rating, lang, RatingRules(promo_code="SAVE10", support_contact="+996 555"))

    assert text.startswith(render_notice(Notice.RATING_APOLOGY, lang))
    assert "+996 555" in text
    assert "SAVE10" not in text


def test_unset_promo_and_contact_leave_their_sentence_out() -> None:
    assert thanks(5, Lang.EN, RatingRules()) == render_notice(Notice.RATING_THANKS, Lang.EN)
    assert thanks(1, Lang.EN, RatingRules()) == render_notice(Notice.RATING_APOLOGY, Lang.EN)


def test_asking_again_names_the_order_and_the_scale() -> None:
    assert ask_again(Lang.EN, 42) == (
        "Please rate order #42 with a number from 1 to 5 (or with 1 to 5 stars ⭐)."
    )
    assert "№42" in ask_again(Lang.RU, 42)


@pytest.mark.parametrize("notice", list(Notice))
@pytest.mark.parametrize("lang", list(Lang))
def test_every_notice_exists_in_both_languages(notice: Notice, lang: Lang) -> None:
    params = {"order_id": 7, "promo_code": "P", "support_contact": "S"}

    assert render_notice(notice, lang, **params).strip()
    assert set(NOTICES[notice]) == set(Lang)
