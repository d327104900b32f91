"""PostgreSQL log positions (LSNs) and the names of the log's segment files."""

from __future__ import annotations

import re

__all__ = [
    "SEGMENT_NAME",
    "format_lsn",
    "log_end",
    "parse_lsn",
    "segment_name",
    "segment_number",
    "segment_start",
]

SEGMENT_NAME = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
HISTORY_NAME = re.compile(r"^[0-9A-F]{8}\.history$")
DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024
LONG_PAGE_HEADER = 40  # bytes at the start of a segment
SHORT_PAGE_HEADER = 24  # bytes at the start of every other page
PAGE_BYTES = 8192


def log_end(insert_lsn: int, segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> int:
    """Where the log really ends, given the server's insert position: one right after a
    page header points past bytes that hold no record yet (the server sends them no sooner
    than the next record, which may be minutes away on an idle server)."""
    if insert_lsn % segment_bytes == LONG_PAGE_HEADER:
        return insert_lsn - LONG_PAGE_HEADER
    if insert_lsn % PAGE_BYTES == SHORT_PAGE_HEADER:
        return insert_lsn - SHORT_PAGE_HEADER
    return insert_lsn


def parse_lsn(text: str) -> int:
    """``'0/3000060'`` → its position in bytes."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def segment_start(lsn: int, segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> int:
    return lsn - lsn % segment_bytes


def segment_name(timeline: int, lsn: int, segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> str:
    """The name of the segment file holding ``lsn`` on ``timeline``."""
    number = lsn // segment_bytes
    per_id = 0x100000000 // segment_bytes
    return f"{timeline:08X}{number // per_id:08X}{number % per_id:08X}"


def segment_number(name: str, segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> tuple[int, int]:
    """(timeline, segment number) of a segment file's name."""
    match = SEGMENT_NAME.match(name)
    if match is None:
        raise ValueError(f"not a WAL segment name: {name!r}")
    timeline, log_id, seg = (int(part, 16) for part in match.groups())
    return timeline, log_id * (0x100000000 // segment_bytes) + seg


def is_wal_file(name: str) -> bool:
    """A segment or a timeline history file: what the archive keeps."""
    return bool(SEGMENT_NAME.match(name) or HISTORY_NAME.match(name))
