"""The job's history (one entry per round) with its JSON text and totals kept as it grows.

metrics.json, status.json and `GET /status` carry the whole history after every round, so
anything done per entry per round makes a long job's rounds grow slower with its length. Here a
round's publish encodes only the newest entry, and the kept text of the ones before goes to the
files as it is: no per-entry work, and not even a copy of it into one string.

That kept text must never go stale, so only the newest entry is open: the round loop still fills
it in after appending it (its checkpoint time), and it is encoded afresh at every publish. When
the next round is appended it becomes a read-only copy, nested values included (the round loop's
own dict no longer counts); from then on it changes only by `History.amend`, which re-encodes
it. Writing into a settled entry, or appending to the history without `append`, raises
TypeError instead of publishing a stale text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, NoReturn

Entry = dict[str, Any]


def _refuse(self: object, *args: object, **kwargs: object) -> NoReturn:
    raise TypeError(f"{type(self).__name__} is read-only: the history changes only by History.append and .amend")


class ReadOnlyDict(dict):
    """A dict that json.dumps and readers treat as one, but that refuses to change."""

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[type, tuple[dict[Any, Any]]]:  # copy and pickle build it whole
        return type(self), (dict(self),)


class ReadOnlyList(list):
    """A list that json.dumps and readers treat as one, but that refuses to change."""

    __setitem__ = __delitem__ = __iadd__ = __imul__ = append = extend = insert = pop = remove = _refuse
    clear = sort = reverse = _refuse

    def __reduce__(self) -> tuple[type, tuple[list[Any]]]:
        return type(self), (list(self),)


def read_only(value: Any) -> Any:
    """A deep read-only copy of a JSON value."""
    if isinstance(value, dict):
        return ReadOnlyDict((k, read_only(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return ReadOnlyList(read_only(v) for v in value)
    return value


class History(ReadOnlyList):
    """The rounds so far, readable as a list; changed only by `append` and `amend`.

    `parts()` is `json.dumps(self)`, as ASCII bytes in pieces. The settled entries' text is kept
    joined, with where each entry starts in it, so amending an earlier entry re-encodes only the
    entries from there on. Sums and the last evaluated round are kept over the settled entries;
    the open one is added when asked.
    """

    def __init__(self, entries: Iterable[Entry] = ()) -> None:
        """`entries`: a history to go on from (a resumed job's), all settled but its last."""
        super().__init__()
        self._joined = bytearray(b"[")  # "[" and the settled entries' texts, ", " between them
        self._starts: list[int] = []    # where each settled entry's text (with its ", ") begins
        self._bytes_in = self._bytes_out = 0
        self._evaluated = -1            # the index of the last settled entry with an accuracy
        for entry in entries:
            self.append(entry)

    def append(self, entry: Entry) -> None:
        """Add a round, still open to changes; the round before it is settled."""
        if self:
            self._settle()
        list.append(self, entry)

    def _settle(self) -> None:
        index = len(self) - 1
        entry = read_only(self[index])
        list.__setitem__(self, index, entry)
        self._count(entry, 1)
        if entry.get("accuracy") is not None:
            self._evaluated = index

    def _count(self, entry: Entry, sign: int) -> None:
        self._bytes_in += sign * entry["bytes_in"]
        self._bytes_out += sign * entry["bytes_out"]

    def amend(self, index: int, **fields: Any) -> None:
        """Set `fields` in an entry (an earlier round's accuracy, learnt later)."""
        index = range(len(self))[index]
        if index == len(self) - 1:
            self[index].update(fields)
            return
        if index < len(self._starts):  # first: this fails while a publish still holds the parts
            del self._joined[self._starts[index]:]
            del self._starts[index:]
        old, new = self[index], read_only({**self[index], **fields})
        list.__setitem__(self, index, new)
        self._count(old, -1)
        self._count(new, 1)
        if new.get("accuracy") is not None:
            self._evaluated = max(self._evaluated, index)
        elif index == self._evaluated:
            self._evaluated = next((i for i in range(index - 1, -1, -1) if self[i].get("accuracy") is not None), -1)

    def parts(self) -> tuple[memoryview, bytes]:
        """`json.dumps(self)` (ASCII) in two pieces: the kept text, then the open entry's and "]".

        Only the open entry and those settled since the last call are encoded. The first piece is
        a view of the kept text, which cannot change while it is held (BufferError): write the
        pieces out and let them go.
        """
        for index in range(len(self._starts), len(self) - 1):
            start = len(self._joined)
            self._joined += f'{", " if index else ""}{json.dumps(self[index])}'.encode()
            self._starts.append(start)
        last = f'{", " if len(self) > 1 else ""}{json.dumps(self[-1])}' if self else ""
        return memoryview(self._joined).toreadonly(), f"{last}]".encode()

    def text(self) -> str:
        """`json.dumps(self)`."""
        return b"".join(self.parts()).decode()

    def bytes_total(self) -> tuple[int, int]:
        """Bytes received from and sent to clients over all rounds."""
        if not self:
            return 0, 0
        return self._bytes_in + self[-1]["bytes_in"], self._bytes_out + self[-1]["bytes_out"]

    def evaluated(self) -> Entry:
        """The last round with an accuracy, {} when none has one."""
        if self and self[-1].get("accuracy") is not None:
            return self[-1]
        return self[self._evaluated] if self._evaluated >= 0 else {}
