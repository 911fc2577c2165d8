"""Redis Cluster's key slot, computed as Redis computes it (CLUSTER KEYSLOT needs a
server in cluster mode): CRC16-XMODEM of the key, or of its hash tag (the part between
the first `{` and the first `}` after it, when that part is not empty), modulo 16384."""

from __future__ import annotations

SLOTS = 16384


def crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def hashed_part(key: bytes) -> bytes:
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def key_slot(key: str | bytes) -> int:
    raw = key.encode() if isinstance(key, str) else key
    return crc16(hashed_part(raw)) % SLOTS
