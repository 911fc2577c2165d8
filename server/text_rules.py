"""The control-character rules of provider strings; they live in orderbot.text_rules,
shared with the reconciler, which builds the same envelopes from the providers' lists."""

from orderbot.text_rules import DROP_CONTROLS, NO_CONTROLS, drop_controls, refuse_controls

__all__ = ["DROP_CONTROLS", "NO_CONTROLS", "drop_controls", "refuse_controls"]
