"""The ids of an index's rows: row -> id and id -> row, in little memory for the common case.

Ints in ascending order (the default ids 0, 1, 2, ... with or without removals, or ids taken from an ordered key
column) are one int64 array: 8 bytes per row, an id found by binary search. Any other ids (strs, ints out of order or
outside int64) are a Python list and a dict, about 100 bytes per row (at 10M rows: 1 GB, against 80 MB). The table
turns into the list form, once, when an add breaks the order; it never turns back.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1


class IdTable:
    """Unique ids (int or str, already normalised) of rows 0..n-1."""

    def __init__(self, ids: Iterable[Any] = ()) -> None:
        self._array = np.empty(0, dtype=np.int64)  # ascending ints: rows 0..n-1 (room past n)
        self._n = 0
        self._list: Optional[List[Any]] = None  # the general form
        self._rows: Optional[Dict[Any, int]] = None
        ids = list(ids)
        if ids:
            self.extend(ids)

    def __len__(self) -> int:
        return self._n if self._list is None else len(self._list)

    @property
    def compact(self) -> bool:
        """True while the ids are ascending ints held in one int64 array."""
        return self._list is None

    def row(self, id_: Any) -> Optional[int]:
        """The row of ``id_``, or None."""
        if self._list is not None:
            return self._rows.get(id_)
        if type(id_) is not int or not INT64_MIN <= id_ <= INT64_MAX:
            return None
        i = int(np.searchsorted(self._array[: self._n], id_))
        return i if i < self._n and int(self._array[i]) == id_ else None

    def rows(self, ids: Sequence[Any], what: str, *, distinct: bool) -> np.ndarray:
        """The rows (int64) of ``ids`` (normalised), in their order. An unknown id, and with ``distinct`` a repeated
        one, is a ValueError naming its place: ``what[i]: id ... is not in the index`` / ``... is listed twice``."""
        out = None
        if self._list is None and all(type(i) is int for i in ids):  # one binary search for them all
            try:
                want = np.array(ids, dtype=np.int64).reshape(-1)
            except OverflowError:  # outside int64: not in the array; the loop below names it
                want = None
            if want is not None:
                out = np.searchsorted(self._array[: self._n], want)
                found = out < self._n
                found[found] = self._array[out[found]] == want[found]
                if not found.all():
                    i = int(np.argmin(found))
                    raise ValueError(f"{what}[{i}]: id {ids[i]!r} is not in the index")
        if out is None:
            out = np.empty(len(ids), dtype=np.int64)
            for i, id_ in enumerate(ids):
                row = self.row(id_)
                if row is None:
                    raise ValueError(f"{what}[{i}]: id {id_!r} is not in the index")
                out[i] = row
        if distinct and len(out) > 1:
            order = np.argsort(out, kind="stable")
            again = np.flatnonzero(out[order][1:] == out[order][:-1])  # sorted neighbours equal: a later place repeats
            if again.size:
                i = int(order[again + 1].min())
                raise ValueError(f"{what}[{i}]: id {ids[i]!r} is listed twice")
        return out.astype(np.int64, copy=False)

    def __contains__(self, id_: Any) -> bool:
        return self.row(id_) is not None

    def ids(self, rows: np.ndarray) -> List[Any]:
        """The ids of ``rows`` (Python ints / strs)."""
        if self._list is None:
            return self._array[rows].tolist()
        return [self._list[r] for r in np.asarray(rows).tolist()]

    def tolist(self) -> List[Any]:
        return self._array[: self._n].tolist() if self._list is None else list(self._list)

    def extend(self, new_ids: List[Any]) -> None:
        """Append ids for the next rows; a repeated id (among them or already here) is a ValueError naming it, and
        nothing is added."""
        if self._list is None and _ascending_ints(new_ids, int(self._array[self._n - 1]) if self._n else None):
            needed = self._n + len(new_ids)
            if needed > len(self._array):
                grown = np.empty(max(needed, self._n * 3 // 2), dtype=np.int64)
                grown[: self._n] = self._array[: self._n]
                self._array = grown
            self._array[self._n:needed] = new_ids
            self._n = needed
            return
        if self._list is None:  # into the general form
            self._list = self._array[: self._n].tolist()
            self._rows = {id_: row for row, id_ in enumerate(self._list)}
            self._array, self._n = np.empty(0, dtype=np.int64), 0
        before = len(self._list)
        for i, id_ in enumerate(new_ids):
            self._rows.setdefault(id_, before + i)
        self._list.extend(new_ids)
        if len(self._rows) != len(self._list):  # a repeated id: take the new ones back
            repeated = next(id_ for i, id_ in enumerate(new_ids) if self._rows[id_] != before + i)
            del self._list[before:]
            self._rows = {id_: row for row, id_ in enumerate(self._list)}
            raise ValueError(f"id {repeated!r} is not unique")

    def keep(self, mask: np.ndarray) -> None:
        """Only the rows where ``mask`` is True remain (in order)."""
        if self._list is None:
            self._array = np.ascontiguousarray(self._array[: self._n][mask])
            self._n = len(self._array)
            return
        self._list = [i for i, k in zip(self._list, mask.tolist()) if k]
        self._rows = {id_: row for row, id_ in enumerate(self._list)}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_array"] = self._array[: self._n].copy()
        return state


def _ascending_ints(ids: List[Any], after: Optional[int]) -> bool:
    """True if ``ids`` are ints inside int64, strictly ascending and above ``after``."""
    previous = after
    for id_ in ids:
        if type(id_) is not int or not INT64_MIN <= id_ <= INT64_MAX or (previous is not None and id_ <= previous):
            return False
        previous = id_
    return True
