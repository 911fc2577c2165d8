"""Chat2Desk-shaped webhook bodies, as the real service posts them.

Each body carries every field Chat2Desk sends for an inbound WhatsApp message
(the server ignores most of them, but parsing them is part of its cost), and a
message id unique to the run: a repeated id would be skipped by the worker's
processed-marker without a dialog step, which would flatter the figures.
"""

from __future__ import annotations

import orjson

HAPPY_PATH = ("Здравствуйте", "ул. Киевская 95, кв 12", "+996 555 123 456", "3", "да")
# The same order for the seed orderbot replaces (bench/peer.py), in the words its dialog
# takes: it confirms in English only, and answers each message with one reply.
SEED_HAPPY_PATH = ("Hello", "Main street 95, apt 12", "+996555123456", "3", "yes")
SEED_WEBHOOK_PATH = "/webhook/chat2desk"


def chat2desk_body(message_id: str, client_id: int, text: str) -> bytes:
    return orjson.dumps(
        {
            "message_id": message_id,
            "client_id": client_id,
            "type": "from_client",
            "hook_type": "inbox",
            "text": text,
            "transport": "whatsapp",
            "channel_id": 4242,
            "dialog_id": 77,
            "operator_id": None,
            "is_new_client": False,
            "client": {
                "id": client_id,
                "phone": "+996555123456",
                "name": "Aida",
                "assigned_name": None,
                "client_phone": "996555123456",
            },
            "extra_data": {},
            "photo": None,
            "coordinates": None,
            "attachments": [],
            "created": "2024-05-01T10:00:00 UTC",
        }
    )


def webhook_path(token: str) -> str:
    return f"/webhook/chat2desk/{token}"
