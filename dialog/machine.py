"""One customer message in, the next state and the replies out.

``advance`` is a pure function: the worker may apply a redelivered message again and must get the
very same step, replies and order.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from dialog.rules import DialogRules
from dialog.state import MAX_ATTACHMENTS, Attachment, DialogState, Lang, OrderDraft, Pin, Step
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
    pin: Pin | None = None,
    attachments: Sequence[Attachment] = (),
) -> StepResult:
    """Apply one customer message. Never raises for any text.

    ``own_phone`` is the number the customer writes from, when the channel tells it (a
    WhatsApp sender): offered as a one-tap answer to the phone question. It comes with
    every message of the conversation, so the step stays a function of its inputs.

    ``pin`` is a location the message shared: at the address step it is the address.
    ``attachments`` are the photos, voice notes and files it carried: the dialog cannot
    read them, so a message of nothing else is asked to be typed instead, and their
    links go with the order.
    """
    turns = state.turns + 1
    if state.step in (Step.INITIAL, Step.COMPLETED):
        return _greet(detect_lang(text), turns, rules, _kept((), attachments))
    state = state.model_copy(update={"attachments": _kept(state.attachments, attachments)})
    if pin is not None and state.step is Step.WAITING_ADDRESS:
        return _on_pin(state, pin, rules, turns, _offerable(own_phone, rules))
    if attachments and not _visible(text):
        return _please_type(state, turns)
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
            return _on_confirmation(state, text, rules, turns)
    return _greet(state.lang, turns, rules, state.attachments)


def _greet(
    lang: Lang, turns: int, rules: DialogRules, attachments: tuple[Attachment, ...]
) -> StepResult:
    state = DialogState(step=Step.WAITING_ADDRESS, lang=lang, turns=turns, attachments=attachments)
    return _say(state, Msg.GREETING, business=rules.business_name)


def _kept(kept: tuple[Attachment, ...], new: Sequence[Attachment]) -> tuple[Attachment, ...]:
    """The order's links so far and this message's, the first ones kept past the cap."""
    return (*kept, *new)[:MAX_ATTACHMENTS]


def _visible(text: str) -> bool:
    return any(not c.isspace() and c.isprintable() for c in text)


def _please_type(state: DialogState, turns: int) -> StepResult:
    """A photo or voice note where an answer was expected: asked to type it instead of
    being told the (empty) text is a bad address."""
    msg = Msg.PLEASE_TYPE_ADDRESS if state.step is Step.WAITING_ADDRESS else Msg.PLEASE_TYPE
    return _say(_stay(state, turns), msg)


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
    return _ask_phone(state, address, None, rules, turns, own_phone)


def _on_pin(
    state: DialogState, pin: Pin, rules: DialogRules, turns: int, own_phone: str | None
) -> StepResult:
    """A shared location is the address: the place's name when the messenger gives one
    that reads as an address, else the coordinates, which the courier opens as a map."""
    label = parse_address(pin.label, rules) if pin.label else None
    address = label if isinstance(label, str) else pin_text(pin)
    kept = pin.model_copy(update={"label": label if isinstance(label, str) else None})
    return _ask_phone(state, address, kept, rules, turns, own_phone)


def pin_text(pin: Pin) -> str:
    """Coordinates as an address line: ``42.874621, 74.569762``."""
    return f"{pin.latitude:.6f}, {pin.longitude:.6f}"


def map_url(pin: Pin) -> str:
    """An OpenStreetMap link that opens a marker on the pin, in any browser."""
    lat, lon = f"{pin.latitude:.6f}", f"{pin.longitude:.6f}"
    return f"https://www.openstreetmap.org/?mlat={lat}&mlon={lon}#map=17/{lat}/{lon}"


def _ask_phone(
    state: DialogState,
    address: str,
    pin: Pin | None,
    rules: DialogRules,
    turns: int,
    own_phone: str | None,
) -> StepResult:
    next_state = DialogState(
        step=Step.WAITING_PHONE,
        lang=state.lang,
        address=address,
        pin=pin,
        attachments=state.attachments,
        turns=turns,
    )
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
        pin=state.pin,
        attachments=state.attachments,
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
        pin=state.pin,
        attachments=state.attachments,
        phone=state.phone,
        quantity=quantity,
        turns=turns,
    )
    summary = {"address": state.address, "phone": state.phone, "quantity": quantity}
    if state.pin is not None:
        return _say(next_state, Msg.CONFIRM_PIN, map_url=map_url(state.pin), **summary)
    return _say(next_state, Msg.CONFIRM, **summary)


def _on_confirmation(state: DialogState, text: str, rules: DialogRules, turns: int) -> StepResult:
    answer = parse_confirmation(text)
    if answer is None:
        return _say(_stay(state, turns), Msg.CONFIRM_UNCLEAR)
    if not answer or state.address is None or state.phone is None or state.quantity is None:
        return _start_over(state.lang, turns)
    order = OrderDraft(
        address=state.address,
        phone=state.phone,
        quantity=state.quantity,
        pin=state.pin,
        attachments=state.attachments,
    )
    completed = DialogState(
        step=Step.COMPLETED,
        lang=state.lang,
        address=order.address,
        phone=order.phone,
        quantity=order.quantity,
        pin=order.pin,
        attachments=order.attachments,
        turns=turns,
    )
    accepted = render(
        Msg.ORDER_ACCEPTED,
        state.lang,
        business=rules.business_name,
        minutes=rules.delivery_minutes,
    )
    return StepResult(completed, (accepted,), order)


def _stay(state: DialogState, turns: int) -> DialogState:
    return state.model_copy(update={"turns": turns})


def _say(state: DialogState, msg: Msg, **params: object) -> StepResult:
    return StepResult(state, (render(msg, state.lang, **params),))
