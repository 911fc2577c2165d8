"""Conversation history: every customer message and reply, with its delivery status."""
