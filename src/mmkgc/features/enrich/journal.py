"""Append-only JSONL journals: the resume mechanism of every enrichment stage.

A journal is a text file with one JSON object per line.  Each stage (captioning, fusion) appends one record
per finished unit of work (an image, an entity) and flushes + ``fsync``s it before moving on, so a crash or
Ctrl-C loses at most the unit in progress.  On restart the stage reads the journal, collects the keys that
are done and skips them: nothing is redone and nothing is written twice.

A crash in the middle of ``write`` can leave a truncated last line without its newline.  Reading tolerates
exactly that case (the partial record is dropped and the file is cut back to the last complete line before
the next append); a malformed line anywhere else is a :class:`~mmkgc.errors.DataFormatError` naming the
file and line, because it means the file was edited or corrupted, not interrupted.

Beyond Images journals its captions the same way (``{"image": "Q42_1.jpg", "caption": "..."}``, methods.md
§3.1 step 4); the records written here carry more fields (model identity, status) but keep that key.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmkgc.errors import DataFormatError


def read_journal(path: str | Path, key: str) -> list[dict[str, Any]]:
    """All complete records of a journal, in file order.

    :param key: the field every record must have (``"image"``, ``"entity"``); a record without it is an error.
    :returns: the records (an empty list when the file does not exist).  A truncated last line (no trailing
        newline, not valid JSON) is dropped.
    :raises DataFormatError: a complete line that is not a JSON object with ``key`` (file and line named).
    """
    path = Path(path)
    if not path.exists():
        return []
    records: list[dict[str, Any]] = []
    with open(path, "rb") as fh:
        data = fh.read()
    lines = data.split(b"\n")
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        last = lineno == len(lines)  # no newline after it: possibly cut off by a crash
        try:
            rec = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            if last:
                break
            raise DataFormatError(path, lineno, f"not a JSON line ({exc}); the journal is corrupt") from None
        if not isinstance(rec, dict) or key not in rec:
            if last:
                break
            raise DataFormatError(path, lineno, f"journal record must be a JSON object with a {key!r} field")
        records.append(rec)
    return records


class Journal:
    """An append-only JSONL journal keyed by one field.

    >>> j = Journal(path, key="image")        # doctest: +SKIP
    >>> if not j.done("Q42_1.jpg"): j.append({"image": "Q42_1.jpg", "caption": "..."})

    :param path: the ``.jsonl`` file (created with its folder on the first append).
    :param key: the field that identifies a unit of work; the latest record of a key wins on reading.
    :param header: optional JSON-able dict checked against the ``header`` record of an existing journal (the
        first line, ``{key: "__header__", ...}``), e.g. the model identity and prompt; a mismatch is an error so
        that a resumed run never mixes outputs of two configurations.
    :raises DataFormatError: corrupt journal, or a header different from ``header``.
    """

    HEADER_KEY = "__header__"

    def __init__(self, path: str | Path, key: str, header: dict[str, Any] | None = None):
        self.path = Path(path)
        self.key = key
        records = read_journal(self.path, key)
        self._repair_tail()
        self.header: dict[str, Any] | None = None
        if records and records[0].get(key) == self.HEADER_KEY:
            self.header = {k: v for k, v in records[0].items() if k != key}
            records = records[1:]
        self._records: dict[str, dict[str, Any]] = {}
        for rec in records:
            self._records[str(rec[key])] = rec
        if header is not None:
            wanted = json.loads(json.dumps(header, sort_keys=True))
            if self.header is None and not self._records:
                self.append({key: self.HEADER_KEY, **wanted})
                self.header = wanted
            elif self.header != wanted:
                changed = sorted(k for k in set(wanted) | set(self.header or {})
                                 if (self.header or {}).get(k) != wanted.get(k))
                raise DataFormatError(
                    self.path, 1,
                    f"journal was written with other settings (differing: {', '.join(changed) or 'header'}); "
                    "use a new journal file or delete this one to start over",
                )

    def _repair_tail(self) -> None:
        """Cut a truncated last line so that the next append starts on a fresh line."""
        if not self.path.exists():
            return
        with open(self.path, "rb+") as fh:
            data = fh.read()
            if not data or data.endswith(b"\n"):
                return
            cut = data.rfind(b"\n") + 1
            fh.truncate(cut)

    def done(self, key: str) -> bool:
        """Whether a record for ``key`` exists."""
        return str(key) in self._records

    def get(self, key: str) -> dict[str, Any] | None:
        """The latest record of ``key`` or ``None``."""
        return self._records.get(str(key))

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._records.values())

    def records(self) -> dict[str, dict[str, Any]]:
        """``{key: latest record}`` (header excluded)."""
        return dict(self._records)

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as a JSON line, flushed and fsynced before returning.

        :raises ValueError: the record lacks the key field or is not JSON-serialisable.
        """
        if self.key not in record:
            raise ValueError(f"journal record needs a {self.key!r} field: {record!r}")
        line = json.dumps(record, ensure_ascii=False, sort_keys=True, allow_nan=False)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if record[self.key] != self.HEADER_KEY:
            self._records[str(record[self.key])] = record
