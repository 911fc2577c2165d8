"""Pins, photos and voice notes in the dialog: a location is an address, media is asked
to be typed, and both travel with the order."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dialog import Attachment, DialogState, Lang, Pin, Step, advance, map_url
from dialog.state import MAX_ATTACHMENTS
from dialog.texts import Msg, render
from tests.dialog.test_machine import (
    ANSWERS,
    ANY_TEXT,
    IN_PROGRESS,
    NORMALIZED_PHONE,
    PHONE,
    RIGHT_ANSWER,
    RULES,
    assert_valid,
    reach,
)

PIN = Pin(latitude=42.874621, longitude=74.569762)
PHOTO = Attachment(url="https://cdn.example/photo.jpg", content_type="image/jpeg")
VOICE = Attachment(url="https://cdn.example/voice.ogg", content_type="audio/ogg")
PINS = st.builds(
    Pin,
    latitude=st.floats(-90, 90, allow_nan=False),
    longitude=st.floats(-180, 180, allow_nan=False),
    label=st.none() | ANY_TEXT,
)
MEDIA = st.lists(
    st.builds(Attachment, url=st.text(min_size=1), content_type=st.none() | st.text()),
    max_size=3,
)


def test_a_pin_at_the_address_step_is_the_address() -> None:
    result = advance(reach(Step.WAITING_ADDRESS), "", pin=PIN)

    assert result.state.step is Step.WAITING_PHONE
    assert result.state.address == "42.874621, 74.569762"
    assert result.state.pin == PIN


def test_a_pin_with_the_name_of_the_place_keeps_the_name_as_the_address() -> None:
    pin = PIN.model_copy(update={"label": "  Chui Avenue   12 "})
    result = advance(reach(Step.WAITING_ADDRESS), "", pin=pin)

    assert result.state.address == "Chui Avenue 12"
    assert result.state.pin == PIN.model_copy(update={"label": "Chui Avenue 12"})


@pytest.mark.parametrize("lang", list(Lang))
def test_the_summary_of_a_pinned_order_shows_a_map_link(lang: Lang) -> None:
    state = advance(reach(Step.WAITING_ADDRESS, lang), "", pin=PIN).state
    state = advance(state, PHONE).state
    result = advance(state, "3")

    assert result.state.step is Step.WAITING_CONFIRMATION
    link = "https://www.openstreetmap.org/?mlat=42.874621&mlon=74.569762#map=17/42.874621/74.569762"
    assert link in result.replies[0]


def test_the_order_of_a_pin_carries_its_coordinates() -> None:
    state = advance(reach(Step.WAITING_ADDRESS), "", pin=PIN).state
    for text in (PHONE, "3"):
        state = advance(state, text).state
    order = advance(state, "yes").order

    assert order is not None
    assert (order.pin, order.phone) == (PIN, NORMALIZED_PHONE)


@pytest.mark.parametrize("lang", list(Lang))
@pytest.mark.parametrize("media", [PHOTO, VOICE])
def test_a_photo_or_voice_note_at_the_address_step_is_asked_to_be_typed(
    lang: Lang, media: Attachment
) -> None:
    state = reach(Step.WAITING_ADDRESS, lang)
    result = advance(state, "", attachments=[media])

    assert result.replies == (render(Msg.PLEASE_TYPE_ADDRESS, lang),)
    assert result.state.step is Step.WAITING_ADDRESS
    assert result.state.address is None


@pytest.mark.parametrize("step", IN_PROGRESS[1:])
def test_a_photo_at_any_other_step_is_asked_to_be_typed_too(step: Step) -> None:
    state = reach(step)
    result = advance(state, " ", attachments=[PHOTO])

    assert result.replies == (render(Msg.PLEASE_TYPE, Lang.EN),)
    assert result.state.model_dump(exclude={"turns", "attachments"}) == state.model_dump(
        exclude={"turns", "attachments"}
    )


def test_a_photo_with_a_caption_is_read_by_its_caption() -> None:
    result = advance(reach(Step.WAITING_ADDRESS), "12 Chui Avenue, apt 5", attachments=[PHOTO])

    assert result.state.step is Step.WAITING_PHONE
    assert result.state.address == "12 Chui Avenue, apt 5"


def test_the_links_of_what_was_sent_go_with_the_order() -> None:
    state = advance(reach(Step.WAITING_ADDRESS), "", attachments=[PHOTO]).state
    for text in ("12 Chui Avenue, apt 5", PHONE):
        state = advance(state, text).state
    state = advance(state, "", attachments=[VOICE]).state
    state = advance(state, "3").state
    order = advance(state, "yes").order

    assert order is not None
    assert order.attachments == (PHOTO, VOICE)


def test_a_new_order_starts_without_the_last_ones_links() -> None:
    state = advance(reach(Step.WAITING_ADDRESS), "", attachments=[PHOTO]).state
    result = advance(state, "cancel")

    assert result.state.attachments == ()


def test_a_state_stored_before_pins_existed_still_reads() -> None:
    stored = '{"step": "waiting_phone", "lang": "ru", "address": "ул. Ленина 1", "turns": 2}'
    state = DialogState.model_validate_json(stored)

    assert (state.pin, state.attachments) == (None, ())


@given(pin=PINS)
def test_any_pin_completes_the_address_step_with_a_map_link(pin: Pin) -> None:
    result = advance(reach(Step.WAITING_ADDRESS), "", pin=pin)

    assert result.state.step is Step.WAITING_PHONE
    assert result.state.address
    assert RULES.address_min <= len(result.state.address) <= RULES.address_max
    assert result.state.pin is not None
    assert (result.state.pin.latitude, result.state.pin.longitude) == (pin.latitude, pin.longitude)
    assert f"mlat={pin.latitude:.6f}" in map_url(pin)
    assert DialogState.model_validate_json(result.state.model_dump_json()) == result.state


@given(
    step=st.sampled_from(Step),
    text=ANY_TEXT,
    pin=st.none() | PINS,
    media=MEDIA,
)
def test_advance_never_raises_for_any_pin_or_media(
    step: Step, text: str, pin: Pin | None, media: list[Attachment]
) -> None:
    result = advance(reach(step), text, pin=pin, attachments=media)

    assert result.replies
    assert len(result.state.attachments) <= MAX_ATTACHMENTS
    assert DialogState.model_validate_json(result.state.model_dump_json()) == result.state


@given(
    step=st.sampled_from(IN_PROGRESS),
    media=MEDIA.filter(bool),
    blank=st.sampled_from(["", " ", "\n"]),
)
def test_media_alone_never_moves_the_dialog(
    step: Step, media: list[Attachment], blank: str
) -> None:
    state = reach(step)
    result = advance(state, blank, attachments=media)

    assert result.state.step is step
    assert result.order is None


@settings(max_examples=200)
@given(
    conversation=st.lists(
        st.tuples(st.none() | ANSWERS | ANY_TEXT, st.none() | PINS, MEDIA), max_size=20
    )
)
def test_a_conversation_of_pins_media_and_text_keeps_the_state_valid(
    conversation: list[tuple[str | None, Pin | None, list[Attachment]]],
) -> None:
    """``None`` for the text stands for the right answer, so orders do get completed."""
    state = DialogState()
    for text, pin, media in conversation:
        answer = RIGHT_ANSWER[state.step] if text is None else text
        result = advance(state, answer, pin=pin, attachments=media)

        assert_valid(result.state, RULES)
        assert len(result.state.attachments) <= MAX_ATTACHMENTS
        if result.order is not None:
            assert result.order.model_dump() == result.state.model_dump(
                include={"address", "phone", "quantity", "pin", "attachments"}
            )
        state = result.state
