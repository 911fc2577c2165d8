"""Outbound messaging providers behind one interface, so the pipeline is channel-neutral."""

from orderbot.providers.base import PermanentSendError, ReplySender, SendError, TransientSendError

__all__ = ["PermanentSendError", "ReplySender", "SendError", "TransientSendError"]
