"""The order dialog as pure functions: no I/O, no clock, no randomness."""

from dialog.lifecycle import (
    Actor,
    OrderStatus,
    Refused,
    Transition,
    allowed_targets,
    asks_for_rating,
    check_transition,
    notifies,
    status_notice,
)
from dialog.machine import StepResult, advance, map_url, pin_text
from dialog.rating import AskAgain, GiveUp, Rated, RatingRules, answer_rating, parse_rating
from dialog.rules import DialogRules, PhoneRule
from dialog.state import Attachment, DialogState, Lang, OrderDraft, Pin, Step
from dialog.texts import handing_over, slow_down
from dialog.validation import asks_for_person, detect_lang, person_words

__all__ = [
    "Actor",
    "AskAgain",
    "Attachment",
    "DialogRules",
    "DialogState",
    "GiveUp",
    "Lang",
    "OrderDraft",
    "OrderStatus",
    "PhoneRule",
    "Pin",
    "Rated",
    "RatingRules",
    "Refused",
    "Step",
    "StepResult",
    "Transition",
    "advance",
    "allowed_targets",
    "answer_rating",
    "asks_for_person",
    "asks_for_rating",
    "check_transition",
    "detect_lang",
    "handing_over",
    "map_url",
    "notifies",
    "parse_rating",
    "person_words",
    "pin_text",
    "slow_down",
    "status_notice",
]
