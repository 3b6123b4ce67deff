"""What both runs' history entries share: read as objects (``entry.objective``) or as the dicts of
``history_`` (``entry["objective"]``, ``"val_metric" in entry``, ``entry.get``, ``entry.keys()``)."""

from __future__ import annotations

import dataclasses


class EntryMapping:
    """Mapping access to a dataclass's fields, so a callback can treat its entry like a ``history_`` row."""

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self)]

    def values(self) -> list:
        return [getattr(self, k) for k in self.keys()]

    def items(self) -> list[tuple]:
        return [(k, getattr(self, k)) for k in self.keys()]

    def __getitem__(self, key: str):
        if not isinstance(key, str) or key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key) -> bool:
        return isinstance(key, str) and key in self.keys()

    def get(self, key: str, default=None):
        return getattr(self, key) if key in self else default

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(dataclasses.fields(self))
