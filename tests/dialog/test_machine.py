"""Specification of the order dialog: pure, total and deterministic."""

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dialog import (
    DialogRules,
    DialogState,
    Lang,
    OrderDraft,
    PhoneRule,
    Step,
    StepResult,
    advance,
)
from dialog.texts import TEXTS, Msg, render
from dialog.validation import (
    CANCEL_WORDS,
    NO_WORDS,
    YES_WORDS,
    parse_phone,
    phone_examples,
)

RULES = DialogRules()
ACCEPTED = {"business": RULES.business_name, "minutes": RULES.delivery_minutes}
EXAMPLES = phone_examples(RULES.phone)
FIRST = {Lang.EN: "Hello", Lang.RU: "Здравствуйте"}
ADDRESS = {Lang.EN: "12 Chui Avenue, apt 5", Lang.RU: "проспект Чуй 12, кв. 5"}
PHONE = "+996 555 123 456"
NORMALIZED_PHONE = "+996555123456"
YES = {Lang.EN: "yes", Lang.RU: "да"}
ORDER_STEPS = [
    Step.WAITING_ADDRESS,
    Step.WAITING_PHONE,
    Step.WAITING_QUANTITY,
    Step.WAITING_CONFIRMATION,
    Step.COMPLETED,
]
IN_PROGRESS = ORDER_STEPS[:-1]


def script(lang: Lang) -> list[str]:
    return [FIRST[lang], ADDRESS[lang], PHONE, "3", YES[lang]]


def play(texts: list[str], state: DialogState | None = None) -> list[StepResult]:
    results = []
    current = state or DialogState()
    for text in texts:
        result = advance(current, text)
        results.append(result)
        current = result.state
    return results


def reach(step: Step, lang: Lang = Lang.EN) -> DialogState:
    if step is Step.INITIAL:
        return DialogState()
    return play(script(lang)[: ORDER_STEPS.index(step) + 1])[-1].state


def waiting(state: DialogState, text: str) -> StepResult:
    """Advance and check the answer was refused: nothing but ``turns`` may change."""
    result = advance(state, text)
    assert result.state == state.model_copy(update={"turns": state.turns + 1})
    assert result.order is None
    return result


@pytest.mark.parametrize("lang", list(Lang))
def test_happy_path_produces_the_order(lang: Lang) -> None:
    results = play(script(lang))

    assert [r.state.step for r in results] == ORDER_STEPS
    assert all(r.state.lang is lang for r in results)
    assert [r.replies for r in results] == [
        (render(Msg.GREETING, lang, business=RULES.business_name),),
        (render(Msg.ASK_PHONE, lang, **EXAMPLES),),
        (render(Msg.ASK_QUANTITY, lang, min=1, max=50),),
        (render(Msg.CONFIRM, lang, address=ADDRESS[lang], phone=NORMALIZED_PHONE, quantity=3),),
        (render(Msg.ORDER_ACCEPTED, lang, **ACCEPTED),),
    ]
    assert [r.order for r in results[:-1]] == [None] * 4
    assert results[-1].order == OrderDraft(
        address=ADDRESS[lang], phone=NORMALIZED_PHONE, quantity=3
    )


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("Hello", Lang.EN),
        ("Привет", Lang.RU),
        ("hi, хочу заказать", Lang.RU),
        ("ё", Lang.RU),
        ("", Lang.EN),
        ("123", Lang.EN),
        ("😀", Lang.EN),
    ],
)
def test_first_message_language_is_russian_if_it_has_a_cyrillic_letter(
    text: str, lang: Lang
) -> None:
    assert advance(DialogState(), text).state.lang is lang


@pytest.mark.parametrize("text", ["", "   ", "\x00"])
def test_empty_first_message_still_greets(text: str) -> None:
    result = advance(DialogState(), text)

    assert result.state == DialogState(step=Step.WAITING_ADDRESS, lang=Lang.EN, turns=1)
    assert result.replies == (render(Msg.GREETING, Lang.EN, business=RULES.business_name),)


def test_language_is_kept_after_the_first_message() -> None:
    state = reach(Step.WAITING_ADDRESS, Lang.RU)

    assert advance(state, "12 Chui Avenue").state.lang is Lang.RU


@pytest.mark.parametrize(
    ("text", "msg"),
    [
        ("", Msg.ADDRESS_TOO_SHORT),
        ("abcd", Msg.ADDRESS_TOO_SHORT),
        ("  a   b  ", Msg.ADDRESS_TOO_SHORT),
        ("x" * 201, Msg.ADDRESS_TOO_LONG),
        ("x" * 1_000_000, Msg.ADDRESS_TOO_LONG),
    ],
)
def test_invalid_address_is_asked_again_with_the_reason(text: str, msg: Msg) -> None:
    for lang in Lang:
        result = waiting(reach(Step.WAITING_ADDRESS, lang), text)

        assert result.replies == (render(msg, lang, min=5, max=200),)


@pytest.mark.parametrize("length", [5, 200])
def test_address_length_bounds_are_inclusive(length: int) -> None:
    state = advance(reach(Step.WAITING_ADDRESS), "x" * length).state

    assert state.step is Step.WAITING_PHONE
    assert state.address == "x" * length


def test_address_whitespace_is_collapsed() -> None:
    state = advance(reach(Step.WAITING_ADDRESS), "  12   Chui\n\tAvenue  ").state

    assert state.address == "12 Chui Avenue"


def test_address_never_stores_control_characters_or_lone_surrogates() -> None:
    state = advance(reach(Step.WAITING_ADDRESS), "12 Chui\x00Ave\ud800nue\x7f").state

    assert state.address == "12 Chui Ave nue"
    assert DialogState.model_validate_json(state.model_dump_json()) == state


@pytest.mark.parametrize(
    "text",
    [
        "+996555123456",
        "996555123456",
        "+996 555 123 456",
        "+996 (555) 12-34-56",
        "996.555.123.456",
        "  +996-555-123-456  ",
        "+996\u00a0555\u00a0123\u00a0456",
        "00996 555 123 456",
        "0555 123 456",
        "0555123456",
        "555123456",
        "555 12 34 56",
        "(0555) 12-34-56",
        "+９９６５５５１２３４５６",
    ],
)
def test_phone_in_any_form_people_type_is_stored_in_e164(text: str) -> None:
    result = advance(reach(Step.WAITING_PHONE), text)

    assert result.state.step is Step.WAITING_QUANTITY
    assert result.state.phone == NORMALIZED_PHONE


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yes",
        "55512345",
        "05551234567",
        "++996555123456",
        "+7 555 123 456",
        "+996 555 123 45",
        "+996 555 123 4567",
        "+996 555 ABC 456",
        "+996 555 123 456 ext",
        "+996 555 123 456 / 0555 654 321",
        "9" * 5000,
    ],
)
def test_invalid_phone_is_asked_again_showing_examples(text: str) -> None:
    result = waiting(reach(Step.WAITING_PHONE), text)

    assert result.replies == (render(Msg.PHONE_INVALID, Lang.EN, **EXAMPLES),)


def test_the_examples_shown_are_numbers_of_the_region_in_both_forms() -> None:
    national, international = EXAMPLES["national"], EXAMPLES["international"]

    assert national.startswith("0")
    assert international.startswith("+996 ")
    assert parse_phone(national, RULES.phone) == parse_phone(international, RULES.phone)


@pytest.mark.parametrize("text", ["+7 701 234 5678", "+1 201 555 0123", "+49 1512 3456789"])
def test_a_number_of_another_country_is_refused_naming_the_codes_taken(text: str) -> None:
    result = waiting(reach(Step.WAITING_PHONE), text)

    assert result.replies == (render(Msg.PHONE_REGION_NOT_ALLOWED, Lang.EN, codes="+996"),)


def test_a_number_of_another_country_is_taken_when_the_business_allows_it() -> None:
    rules = DialogRules(phone=PhoneRule("KG", frozenset({"KZ"})))
    state = reach(Step.WAITING_PHONE)

    assert advance(state, "+7 701 234 5678", rules).state.phone == "+77012345678"
    refused = advance(state, "+7 912 345 67 89", rules)  # Russia shares +7 with Kazakhstan
    assert refused.replies == (render(Msg.PHONE_REGION_NOT_ALLOWED, Lang.EN, codes="+996, +7"),)


def test_phone_region_is_a_setting() -> None:
    rules = DialogRules(phone=PhoneRule(region="RU"))
    state = reach(Step.WAITING_PHONE)

    accepted = advance(state, "8 (901) 234-56-78", rules)
    refused = advance(state, PHONE, rules)

    assert accepted.state.phone == "+79012345678"
    assert refused.state.step is Step.WAITING_PHONE
    assert refused.replies == (render(Msg.PHONE_REGION_NOT_ALLOWED, Lang.EN, codes="+7"),)


@pytest.mark.parametrize("region", ["XX", "", "KGZ"])
def test_an_unknown_phone_region_fails_when_the_rules_are_built(region: str) -> None:
    with pytest.raises(ValueError, match="unknown phone region"):
        PhoneRule(region=region)


def _at_address(lang: Lang = Lang.EN) -> DialogState:
    return reach(Step.WAITING_ADDRESS, lang)


@pytest.mark.parametrize("lang", list(Lang))
def test_the_customers_own_number_is_offered_when_the_phone_step_begins(lang: Lang) -> None:
    result = advance(_at_address(lang), ADDRESS[lang], own_phone="+996555123456")

    assert result.state.step is Step.WAITING_PHONE
    assert result.replies == (render(Msg.OFFER_OWN_PHONE, lang, own_phone="+996 555 123 456"),)


@pytest.mark.parametrize("text", ["yes", "да", "Да!", "ok"])
def test_yes_takes_the_offered_number(text: str) -> None:
    state = advance(_at_address(), ADDRESS[Lang.EN], own_phone="+996555123456").state

    result = advance(state, text, own_phone="+996555123456")

    assert result.state.step is Step.WAITING_QUANTITY
    assert result.state.phone == NORMALIZED_PHONE


def test_another_number_can_be_typed_instead_of_the_offered_one() -> None:
    state = advance(_at_address(), ADDRESS[Lang.EN], own_phone="+996555123456").state

    result = advance(state, "0700 123 456", own_phone="+996555123456")

    assert result.state.phone == "+996700123456"


def test_no_to_the_offered_number_asks_for_one() -> None:
    state = advance(_at_address(), ADDRESS[Lang.EN], own_phone="+996555123456").state

    result = advance(state, "no", own_phone="+996555123456")

    assert result.state == state.model_copy(update={"turns": state.turns + 1})
    assert result.replies == (render(Msg.ASK_PHONE, Lang.EN, **EXAMPLES),)


@pytest.mark.parametrize(
    "own_phone", ["[chat] 1d0bb2e221762cfcc05c", "+1 201 555 0123", "+996 555", ""]
)
def test_an_own_number_the_business_does_not_take_is_not_offered(own_phone: str) -> None:
    result = advance(_at_address(), ADDRESS[Lang.EN], own_phone=own_phone)

    assert result.replies == (render(Msg.ASK_PHONE, Lang.EN, **EXAMPLES),)
    assert advance(result.state, "yes", own_phone=own_phone).state.step is Step.WAITING_PHONE


@pytest.mark.parametrize("text", ["1", "50"])
def test_quantity_bounds_are_inclusive(text: str) -> None:
    state = advance(reach(Step.WAITING_QUANTITY), text).state

    assert state.step is Step.WAITING_CONFIRMATION
    assert state.quantity == int(text)


@pytest.mark.parametrize("text", ["0", "51", "-1", "-0", "100", "9" * 5000])
def test_quantity_outside_the_bounds_is_asked_again_naming_them(text: str) -> None:
    result = waiting(reach(Step.WAITING_QUANTITY), text)

    assert result.replies == (render(Msg.QUANTITY_OUT_OF_RANGE, Lang.EN, min=1, max=50),)


@pytest.mark.parametrize(("text", "quantity"), [(" 3 ", 3), ("\t3\n", 3), ("03", 3), ("+3", 3)])
def test_quantity_allows_surrounding_whitespace_leading_zeros_and_plus(
    text: str, quantity: int
) -> None:
    assert advance(reach(Step.WAITING_QUANTITY), text).state.quantity == quantity


@pytest.mark.parametrize(
    "text", ["", "3.5", "3,5", "1e3", "３", "٣", "- 3", "3 apples", "three and a half", "x"]
)
def test_quantity_that_is_not_a_whole_number_is_asked_again(text: str) -> None:
    result = waiting(reach(Step.WAITING_QUANTITY), text)

    assert result.replies == (render(Msg.QUANTITY_NOT_A_NUMBER, Lang.EN, min=1, max=50),)


@pytest.mark.parametrize(
    "text", [*sorted(YES_WORDS), "YES", "Yes!", "ok.", "  Конечно  ", "ДА", "Ок!!", "sure :)"]
)
def test_yes_words_in_both_languages_complete_the_order(text: str) -> None:
    state = reach(Step.WAITING_CONFIRMATION)
    result = advance(state, text)

    assert result.state == state.model_copy(update={"step": Step.COMPLETED, "turns": 5})
    assert result.order == OrderDraft(address=ADDRESS[Lang.EN], phone=NORMALIZED_PHONE, quantity=3)
    assert result.replies == (render(Msg.ORDER_ACCEPTED, Lang.EN, **ACCEPTED),)


@pytest.mark.parametrize("text", [*sorted(NO_WORDS), "NO", "No.", "Нет!"])
def test_no_words_in_both_languages_start_over_from_the_address(text: str) -> None:
    for lang in Lang:
        result = advance(reach(Step.WAITING_CONFIRMATION, lang), text)

        assert result.state == DialogState(step=Step.WAITING_ADDRESS, lang=lang, turns=5)
        assert result.order is None
        assert result.replies == (render(Msg.STARTING_OVER, lang),)


@pytest.mark.parametrize("text", ["", "maybe", "yes please", "not sure", "3", "yess"])
def test_unclear_confirmation_is_asked_again(text: str) -> None:
    result = waiting(reach(Step.WAITING_CONFIRMATION), text)

    assert result.replies == (render(Msg.CONFIRM_UNCLEAR, Lang.EN),)


@pytest.mark.parametrize("step", IN_PROGRESS)
@pytest.mark.parametrize("lang", list(Lang))
def test_cancel_from_each_step_resets_to_initial_keeping_the_language(
    step: Step, lang: Lang
) -> None:
    state = reach(step, lang)
    result = advance(state, "cancel")

    assert result.state == DialogState(step=Step.INITIAL, lang=lang, turns=state.turns + 1)
    assert result.order is None
    assert result.replies == (render(Msg.CANCELLED, lang),)


@pytest.mark.parametrize(
    "text", [*sorted(CANCEL_WORDS), "CANCEL", "/Cancel", " Stop. ", "Отмена", "СТОП!"]
)
def test_cancel_words_are_case_insensitive(text: str) -> None:
    assert advance(reach(Step.WAITING_PHONE), text).state.step is Step.INITIAL


@pytest.mark.parametrize("step", [Step.INITIAL, Step.COMPLETED])
def test_cancel_word_at_initial_or_completed_greets_like_any_message(step: Step) -> None:
    result = advance(reach(step), "отмена")

    assert result.state.step is Step.WAITING_ADDRESS
    assert result.state.lang is Lang.RU
    assert result.replies == (render(Msg.GREETING, Lang.RU, business=RULES.business_name),)


def test_message_after_cancel_starts_a_new_order() -> None:
    cancelled = advance(reach(Step.WAITING_QUANTITY), "cancel").state
    result = advance(cancelled, "hi again")

    assert result.state.step is Step.WAITING_ADDRESS
    assert result.replies == (render(Msg.GREETING, Lang.EN, business=RULES.business_name),)


def test_message_after_completed_starts_a_new_order_with_the_language_detected_again() -> None:
    completed = reach(Step.COMPLETED, Lang.EN)
    result = advance(completed, "Хочу ещё")

    assert result.state == DialogState(step=Step.WAITING_ADDRESS, lang=Lang.RU, turns=6)
    assert result.replies == (render(Msg.GREETING, Lang.RU, business=RULES.business_name),)
    assert result.order is None


def test_turns_count_every_message_including_refused_and_cancelled_ones() -> None:
    texts = ["hi", "x", ADDRESS[Lang.EN], "cancel", "hi", ADDRESS[Lang.EN], "123", PHONE, "0"]
    texts += ["2", "maybe", "no", ADDRESS[Lang.EN], PHONE, "2", "yes", "again", "stop"]

    results = play(texts)

    assert [r.state.turns for r in results] == list(range(1, len(texts) + 1))


def test_turns_continue_from_the_stored_state() -> None:
    state = DialogState(step=Step.WAITING_PHONE, address="12 Chui Avenue", turns=41)

    assert advance(state, "nonsense").state.turns == 42


@pytest.mark.parametrize("step", [Step.INITIAL, *ORDER_STEPS])
@pytest.mark.parametrize("text", ["", "cancel", "no", "yes", "3", PHONE, ADDRESS[Lang.RU]])
def test_same_input_gives_the_same_result(step: Step, text: str) -> None:
    state = reach(step)
    reloaded = DialogState.model_validate_json(state.model_dump_json())

    assert advance(state, text) == advance(state, text) == advance(reloaded, text)


@pytest.mark.parametrize("msg", list(Msg))
@pytest.mark.parametrize("lang", list(Lang))
def test_every_text_exists_in_both_languages(msg: Msg, lang: Lang) -> None:
    params = {"min": 1, "max": 2, "address": "a", "phone": "p", "codes": "+996"}
    params |= {"own_phone": "+996 555 123 456", "map_url": "https://osm.example", **EXAMPLES}
    params |= ACCEPTED

    assert render(msg, lang, quantity=3, **params).strip()
    assert set(TEXTS[msg]) == set(Lang)


def test_braces_in_customer_input_are_not_a_template() -> None:
    address = "{address} {0} {min.__class__}"
    result = play([address, PHONE, "1"], reach(Step.WAITING_ADDRESS))[-1]

    assert result.state.address == address
    assert f"{address}\n" in result.replies[0]


ANY_TEXT = st.text(st.characters(exclude_categories=()))
ANSWERS = st.sampled_from(
    [
        *("hi", ADDRESS[Lang.EN], ADDRESS[Lang.RU], PHONE, "0555 123 456", "+7 701 234 5678"),
        *("3", "50", "yes", "да", "no", "cancel"),
    ]
)
OWN_PHONES = st.sampled_from([None, "+996555123456", "+77012345678", "[chat] 1d0b"])
RIGHT_ANSWER = {
    Step.INITIAL: "hi",
    Step.WAITING_ADDRESS: ADDRESS[Lang.RU],
    Step.WAITING_PHONE: PHONE,
    Step.WAITING_QUANTITY: "50",
    Step.WAITING_CONFIRMATION: "yes",
    Step.COMPLETED: "again",
}
REQUIRED_ANSWERS = {
    Step.INITIAL: 0,
    Step.WAITING_ADDRESS: 0,
    Step.WAITING_PHONE: 1,
    Step.WAITING_QUANTITY: 2,
    Step.WAITING_CONFIRMATION: 3,
    Step.COMPLETED: 3,
}


def assert_valid(state: DialogState, rules: DialogRules) -> None:
    """The state holds exactly the answers its step needs, each one as validation leaves it."""
    answers = (state.address, state.phone, state.quantity)
    given_ = REQUIRED_ANSWERS[state.step]
    assert all(a is not None for a in answers[:given_])
    assert all(a is None for a in answers[given_:])
    if state.address is not None:
        assert rules.address_min <= len(state.address) <= rules.address_max
        assert state.address == " ".join(state.address.split())
        assert not any(unicodedata.category(c) in ("Cc", "Cs") for c in state.address)
    if state.phone is not None:
        assert parse_phone(state.phone, rules.phone) == state.phone
    if state.quantity is not None:
        assert rules.quantity_min <= state.quantity <= rules.quantity_max
    assert DialogState.model_validate_json(state.model_dump_json()) == state


@settings(max_examples=300)
@given(
    conversation=st.lists(st.none() | ANSWERS | ANY_TEXT, max_size=25),
    text=ANY_TEXT,
    own_phone=OWN_PHONES | ANY_TEXT,
)
def test_advance_never_raises_and_keeps_the_state_valid(
    conversation: list[str | None], text: str, own_phone: str | None
) -> None:
    """``None`` in the conversation stands for the right answer, so orders do get completed."""
    state = DialogState()
    for turn, message in enumerate([*conversation, text], start=1):
        answer = RIGHT_ANSWER[state.step] if message is None else message
        result = advance(state, answer, own_phone=own_phone)

        assert result.state.turns == turn
        assert_valid(result.state, RULES)
        assert result.replies
        assert all(reply and reply.encode() for reply in result.replies)
        confirmed = state.step is Step.WAITING_CONFIRMATION and result.state.step is Step.COMPLETED
        assert (result.order is not None) == confirmed
        if result.order is not None:
            assert result.order.model_dump() == result.state.model_dump(
                include={"address", "phone", "quantity", "pin", "attachments"}
            )
        state = result.state


@given(
    state=st.builds(
        DialogState,
        step=st.sampled_from(Step),
        lang=st.sampled_from(Lang),
        address=st.none() | ANY_TEXT,
        phone=st.none() | ANY_TEXT,
        quantity=st.none() | st.integers(),
        turns=st.integers(min_value=0),
    ),
    text=st.one_of(ANSWERS, ANY_TEXT),
    own_phone=OWN_PHONES | ANY_TEXT,
    rules=st.builds(
        DialogRules,
        phone=st.builds(
            PhoneRule,
            region=st.sampled_from(["KG", "KZ", "RU", "US", "DE", "TA"]),
            allowed=st.frozensets(st.sampled_from(["KG", "KZ", "RU", "US"])),
        ),
        address_min=st.integers(1, 10),
        address_max=st.integers(10, 300),
        quantity_min=st.integers(1, 5),
        quantity_max=st.integers(5, 10**20),
    ),
)
def test_advance_never_raises_even_from_an_inconsistent_stored_state(
    state: DialogState, text: str, own_phone: str | None, rules: DialogRules
) -> None:
    result = advance(state, text, rules, own_phone=own_phone)

    assert result.state.turns == state.turns + 1
    assert result.replies
