"""The order dialog as pure functions: no I/O, no clock, no randomness."""

from dialog.machine import StepResult, advance
from dialog.rules import DialogRules, PhoneRule
from dialog.state import DialogState, Lang, OrderDraft, Step

__all__ = [
    "DialogRules",
    "DialogState",
    "Lang",
    "OrderDraft",
    "PhoneRule",
    "Step",
    "StepResult",
    "advance",
]
