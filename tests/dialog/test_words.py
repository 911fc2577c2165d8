"""The words people use: yes and no as they type them, quantities in words and with units,
and the commands that work at every step (help, restart)."""

import pytest

from dialog import DialogRules, DialogState, Lang, Step, advance
from dialog.texts import Msg, render
from dialog.validation import HELP_WORDS, RESTART_WORDS, phone_examples
from tests.dialog.test_machine import NORMALIZED_PHONE, RULES, reach

EXAMPLES = phone_examples(DialogRules().phone)
IN_PROGRESS = [
    Step.WAITING_ADDRESS,
    Step.WAITING_PHONE,
    Step.WAITING_QUANTITY,
    Step.WAITING_CONFIRMATION,
]


@pytest.mark.parametrize(
    "text",
    [
        *("+", "yeah", "yep", "correct", "ооба", "Ооба!", "да!", "👍", "👍🏻", "👍👍", "✅️"),
        *("да 🙂", "Да, да", "всё верно", "ok 👍", "  +  "),
    ],
)
def test_yes_as_people_type_it_places_the_order(text: str) -> None:
    result = advance(reach(Step.WAITING_CONFIRMATION), text)

    assert result.state.step is Step.COMPLETED
    assert result.order is not None


@pytest.mark.parametrize(
    "text", ["-", "—", "nope", "жок", "Жок.", "👎", "нет!", "неа", "no 👎", "❌"]
)
def test_no_as_people_type_it_starts_over(text: str) -> None:
    result = advance(reach(Step.WAITING_CONFIRMATION), text)

    assert result.state.step is Step.WAITING_ADDRESS
    assert result.replies == (render(Msg.STARTING_OVER, Lang.EN),)


@pytest.mark.parametrize("text", ["да 👎", "+-", "🙂", "!!!", "-1", "yes no", "не знаю"])
def test_an_answer_that_is_both_or_neither_is_asked_again(text: str) -> None:
    state = reach(Step.WAITING_CONFIRMATION)
    result = advance(state, text)

    assert result.state == state.model_copy(update={"turns": state.turns + 1})
    assert result.replies == (render(Msg.CONFIRM_UNCLEAR, Lang.EN),)


def test_a_sign_answers_the_offer_of_the_own_number() -> None:
    state = advance(reach(Step.WAITING_ADDRESS), "12 Chui Avenue", own_phone=NORMALIZED_PHONE)

    result = advance(state.state, "👍", own_phone=NORMALIZED_PHONE)

    assert result.state.phone == NORMALIZED_PHONE


@pytest.mark.parametrize(
    ("text", "quantity"),
    [
        ("три", 3),
        ("Three", 3),
        ("3 шт", 3),
        ("3 шт.", 3),
        ("3шт", 3),
        ("3 pcs", 3),
        ("три штуки", 3),
        ("x3", 3),
        ("3x", 3),
        ("двадцать один", 21),
        ("twenty-one", 21),
        ("пятнадцать", 15),
        ("үч", 3),
        ("он бир", 11),
        ("две", 2),
    ],
)
def test_a_quantity_in_words_or_with_a_unit_is_a_number(text: str, quantity: int) -> None:
    result = advance(reach(Step.WAITING_QUANTITY), text)

    assert result.state.step is Step.WAITING_CONFIRMATION
    assert result.state.quantity == quantity


@pytest.mark.parametrize("text", ["пятьдесят один", "fifty one", "51 шт"])
def test_a_quantity_in_words_is_held_to_the_same_bounds(text: str) -> None:
    result = advance(reach(Step.WAITING_QUANTITY), text)

    assert result.replies == (render(Msg.QUANTITY_OUT_OF_RANGE, Lang.EN, min=1, max=50),)


@pytest.mark.parametrize(
    ("step", "msg"),
    [
        (Step.WAITING_ADDRESS, Msg.HELP_ADDRESS),
        (Step.WAITING_PHONE, Msg.HELP_PHONE),
        (Step.WAITING_QUANTITY, Msg.HELP_QUANTITY),
        (Step.WAITING_CONFIRMATION, Msg.HELP_CONFIRMATION),
    ],
)
@pytest.mark.parametrize("lang", list(Lang))
def test_help_says_where_the_customer_is_and_changes_nothing(
    step: Step, msg: Msg, lang: Lang
) -> None:
    state = reach(step, lang)
    result = advance(state, "помощь" if lang is Lang.RU else "help")

    assert result.state == state.model_copy(update={"turns": state.turns + 1})
    assert result.replies == (render(msg, lang, min=1, max=50, **EXAMPLES),)


@pytest.mark.parametrize("text", [*sorted(HELP_WORDS), "HELP!", "Помощь?"])
def test_every_help_word_is_help(text: str) -> None:
    result = advance(reach(Step.WAITING_QUANTITY), text)

    assert result.replies == (render(Msg.HELP_QUANTITY, Lang.EN, min=1, max=50),)


@pytest.mark.parametrize("step", IN_PROGRESS)
@pytest.mark.parametrize("lang", list(Lang))
def test_restart_from_each_step_asks_for_the_address_again(step: Step, lang: Lang) -> None:
    state = reach(step, lang)
    result = advance(state, "заново" if lang is Lang.RU else "restart")

    assert result.state == DialogState(step=Step.WAITING_ADDRESS, lang=lang, turns=state.turns + 1)
    assert result.order is None
    assert result.replies == (render(Msg.STARTING_OVER, lang),)


@pytest.mark.parametrize("text", [*sorted(RESTART_WORDS), "Заново!", "/Start"])
def test_every_restart_word_starts_over(text: str) -> None:
    assert advance(reach(Step.WAITING_PHONE), text).state.step is Step.WAITING_ADDRESS


@pytest.mark.parametrize("text", ["help", "restart"])
def test_after_completed_a_command_starts_a_new_order_like_any_message(text: str) -> None:
    result = advance(reach(Step.COMPLETED), text)

    assert result.state.step is Step.WAITING_ADDRESS
    assert result.replies == (render(Msg.GREETING, Lang.EN, business=RULES.business_name),)
