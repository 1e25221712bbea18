"""A training sample as read from storage, and the reasons one is skipped instead.

Readers raise ``SkippedSample`` for a bad sample; the streaming dataset counts it under its reason and
moves on (never retrying another sample in its place, unlike the original's recursive ``__getitem__``).
"""

from __future__ import annotations

from dataclasses import dataclass

# every reason a sample can be skipped for; counts are kept per reason, in this order
REASONS = ("corrupt image", "missing image", "unreadable member", "unreadable file", "missing caption",
           "empty caption", "malformed pairindex")


class SkippedSample(Exception):
    """A sample that cannot be used; ``reason`` is one of REASONS, ``detail`` names the file or member."""

    def __init__(self, reason: str, detail: str = ""):
        if reason not in REASONS:
            raise ValueError(f"unknown skip reason: {reason}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


@dataclass
class RawSample:
    """index: position in the whole dataset; image: encoded bytes; entities: canonical names when stored
    with the sample (prepared shards), else None."""

    index: int
    image: bytes
    caption: str
    entities: list[str] | None = None
    key: str = ""


def clean_caption(text: str | None, where: str) -> str:
    """The caption stripped of surrounding whitespace; SkippedSample when missing or empty."""
    if text is None:
        raise SkippedSample("missing caption", where)
    text = text.strip()
    if not text:
        raise SkippedSample("empty caption", where)
    return text
