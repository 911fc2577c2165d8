"""One customer message in, the next state and the replies out.

``advance`` is a pure function: the worker may apply a redelivered message again and must get the
very same step, replies and order.
"""

from dataclasses import dataclass

from dialog.rules import DialogRules
from dialog.state import DialogState, Lang, OrderDraft, Step
from dialog.texts import Msg, render
from dialog.validation import (
    Invalid,
    Reason,
    allowed_codes,
    detect_lang,
    display_phone,
    is_cancel,
    is_help,
    is_restart,
    parse_address,
    parse_confirmation,
    parse_phone,
    parse_quantity,
    phone_examples,
)

DEFAULT_RULES = DialogRules()

_REASON_TEXT = {
    Reason.ADDRESS_TOO_SHORT: Msg.ADDRESS_TOO_SHORT,
    Reason.ADDRESS_TOO_LONG: Msg.ADDRESS_TOO_LONG,
    Reason.PHONE_INVALID: Msg.PHONE_INVALID,
    Reason.PHONE_REGION_NOT_ALLOWED: Msg.PHONE_REGION_NOT_ALLOWED,
    Reason.QUANTITY_NOT_A_NUMBER: Msg.QUANTITY_NOT_A_NUMBER,
    Reason.QUANTITY_OUT_OF_RANGE: Msg.QUANTITY_OUT_OF_RANGE,
}


@dataclass(frozen=True, slots=True)
class StepResult:
    """``order`` is set only on the step that confirms an order: the worker's cue to insert it."""

    state: DialogState
    replies: tuple[str, ...]
    order: OrderDraft | None = None


def advance(
    state: DialogState,
    text: str,
    rules: DialogRules = DEFAULT_RULES,
    *,
    own_phone: str | None = None,
) -> StepResult:
    """Apply one customer message. Never raises for any text.

    ``own_phone`` is the number the customer writes from, when the channel tells it (a
    WhatsApp sender): offered as a one-tap answer to the phone question. It comes with
    every message of the conversation, so the step stays a function of its inputs.
    """
    turns = state.turns + 1
    if state.step in (Step.INITIAL, Step.COMPLETED):
        return _greet(detect_lang(text), turns)
    if is_cancel(text):
        return _say(DialogState(lang=state.lang, turns=turns), Msg.CANCELLED)
    if is_restart(text):
        return _start_over(state.lang, turns)
    if is_help(text):
        return _help(state, rules, turns)
    match state.step:
        case Step.WAITING_ADDRESS:
            return _on_address(state, text, rules, turns, _offerable(own_phone, rules))
        case Step.WAITING_PHONE:
            return _on_phone(state, text, rules, turns, _offerable(own_phone, rules))
        case Step.WAITING_QUANTITY:
            return _on_quantity(state, text, rules, turns)
        case Step.WAITING_CONFIRMATION:
            return _on_confirmation(state, text, turns)
    return _greet(state.lang, turns)


def _greet(lang: Lang, turns: int) -> StepResult:
    return _say(DialogState(step=Step.WAITING_ADDRESS, lang=lang, turns=turns), Msg.GREETING)


def _help(state: DialogState, rules: DialogRules, turns: int) -> StepResult:
    """Where the customer is and what is expected; the state stays where it was."""
    params = {
        **phone_examples(rules.phone),
        "min": rules.quantity_min,
        "max": rules.quantity_max,
    }
    match state.step:
        case Step.WAITING_PHONE:
            msg = Msg.HELP_PHONE
        case Step.WAITING_QUANTITY:
            msg = Msg.HELP_QUANTITY
        case Step.WAITING_CONFIRMATION:
            msg = Msg.HELP_CONFIRMATION
        case _:
            msg = Msg.HELP_ADDRESS
    return _say(_stay(state, turns), msg, **params)


def _start_over(lang: Lang, turns: int) -> StepResult:
    return _say(DialogState(step=Step.WAITING_ADDRESS, lang=lang, turns=turns), Msg.STARTING_OVER)


def _offerable(own_phone: str | None, rules: DialogRules) -> str | None:
    """The customer's own number in E.164, if it is one the business takes."""
    if own_phone is None:
        return None
    phone = parse_phone(own_phone, rules.phone)
    return None if isinstance(phone, Invalid) else phone


def _on_address(
    state: DialogState, text: str, rules: DialogRules, turns: int, own_phone: str | None
) -> StepResult:
    address = parse_address(text, rules)
    if isinstance(address, Invalid):
        limits = {"min": rules.address_min, "max": rules.address_max}
        return _say(_stay(state, turns), _REASON_TEXT[address.reason], **limits)
    next_state = DialogState(step=Step.WAITING_PHONE, lang=state.lang, address=address, turns=turns)
    if own_phone is not None:
        return _say(next_state, Msg.OFFER_OWN_PHONE, own_phone=display_phone(own_phone))
    return _say(next_state, Msg.ASK_PHONE, **phone_examples(rules.phone))


def _on_phone(
    state: DialogState, text: str, rules: DialogRules, turns: int, own_phone: str | None
) -> StepResult:
    """A number, or, when the customer's own number was offered, a yes for it (a no
    asks for the number plainly)."""
    answer = parse_confirmation(text) if own_phone is not None else None
    if answer is False:
        return _say(_stay(state, turns), Msg.ASK_PHONE, **phone_examples(rules.phone))
    phone = own_phone if answer else parse_phone(text, rules.phone)
    if isinstance(phone, Invalid) or phone is None:
        reason = phone.reason if isinstance(phone, Invalid) else Reason.PHONE_INVALID
        params = {**phone_examples(rules.phone), "codes": allowed_codes(rules.phone)}
        return _say(_stay(state, turns), _REASON_TEXT[reason], **params)
    next_state = DialogState(
        step=Step.WAITING_QUANTITY,
        lang=state.lang,
        address=state.address,
        phone=phone,
        turns=turns,
    )
    return _say(next_state, Msg.ASK_QUANTITY, min=rules.quantity_min, max=rules.quantity_max)


def _on_quantity(state: DialogState, text: str, rules: DialogRules, turns: int) -> StepResult:
    quantity = parse_quantity(text, rules)
    if isinstance(quantity, Invalid):
        limits = {"min": rules.quantity_min, "max": rules.quantity_max}
        return _say(_stay(state, turns), _REASON_TEXT[quantity.reason], **limits)
    if state.address is None or state.phone is None:
        return _start_over(state.lang, turns)
    next_state = DialogState(
        step=Step.WAITING_CONFIRMATION,
        lang=state.lang,
        address=state.address,
        phone=state.phone,
        quantity=quantity,
        turns=turns,
    )
    return _say(
        next_state, Msg.CONFIRM, address=state.address, phone=state.phone, quantity=quantity
    )


def _on_confirmation(state: DialogState, text: str, turns: int) -> StepResult:
    answer = parse_confirmation(text)
    if answer is None:
        return _say(_stay(state, turns), Msg.CONFIRM_UNCLEAR)
    if not answer or state.address is None or state.phone is None or state.quantity is None:
        return _start_over(state.lang, turns)
    order = OrderDraft(address=state.address, phone=state.phone, quantity=state.quantity)
    completed = DialogState(
        step=Step.COMPLETED,
        lang=state.lang,
        address=order.address,
        phone=order.phone,
        quantity=order.quantity,
        turns=turns,
    )
    return StepResult(completed, (render(Msg.ORDER_ACCEPTED, state.lang),), order)


def _stay(state: DialogState, turns: int) -> DialogState:
    return state.model_copy(update={"turns": turns})


def _say(state: DialogState, msg: Msg, **params: object) -> StepResult:
    return StepResult(state, (render(msg, state.lang, **params),))
