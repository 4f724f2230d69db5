"""Byte units used across the site (memory limits are given in MiB)."""

from __future__ import annotations

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


def as_text(value: object) -> str:
    """A Redis reply or NVML string as text (redis-py and NVML may return bytes)."""
    return value.decode() if isinstance(value, bytes) else str(value)
