"""A bounded mapping for caches whose keys come from outside (vocabularies typed by users of a web page)."""

from __future__ import annotations

from collections import OrderedDict


class LruCache(OrderedDict):
    """A dict that keeps the ``size`` most recently read or written entries; a plain dict keyed by what
    strangers send would grow for a server's lifetime."""

    def __init__(self, size: int, items=()):
        super().__init__()
        self.size = size
        for key, value in dict(items).items():
            self[key] = value

    def __getitem__(self, key):
        value = super().__getitem__(key)
        self.move_to_end(key)
        return value

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        self.trim()

    def resize(self, size: int) -> None:
        """Keep at most ``size`` entries from now on (the least recently used go first)."""
        self.size = size
        self.trim()

    def trim(self) -> None:
        while len(self) > self.size:
            self.popitem(last=False)
