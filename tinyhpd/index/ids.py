"""The ids of an index's rows: row -> id and id -> row, in little memory for the common case.

Ints inside int64 are one int64 array in row order: 8 bytes per row. Ascending (the default ids 0, 1, 2, ... with or
without removals, or ids taken from an ordered key column), an id is found by binary search in it; in any other order
(an ANN index stores a large addition's rows grouped by similarity, see ann.LOCALITY_MIN_ROWS) a second array holds
the rows sorted by id (np.intp: 8 more bytes per row; NumPy's binary search converts a sorter of any other type
whole on every call, 0.45 ms a lookup at 1M rows with int32) for the binary search. Any other ids (strs, ints
outside int64) are a Python list and a dict, about 100 bytes per row (at 10M rows: 1 GB, against 80-120 MB). The
table turns into the list form, once, when an add brings such an id; it never turns back.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1


class IdTable:
    """Unique ids (int or str, already normalised) of rows 0..n-1."""

    _order: Optional[np.ndarray] = None  # (a class default: tables pickled before it existed were ascending)

    def __init__(self, ids: Iterable[Any] = ()) -> None:
        self._array = np.empty(0, dtype=np.int64)  # int ids of rows 0..n-1 (room past n)
        self._n = 0
        self._order = None  # rows sorted by id (length n) when the int ids are not ascending
        self._list: Optional[List[Any]] = None  # the general form
        self._rows: Optional[Dict[Any, int]] = None
        ids = list(ids)
        if ids:
            self.extend(ids)

    def __len__(self) -> int:
        return self._n if self._list is None else len(self._list)

    @property
    def compact(self) -> bool:
        """True while the ids are ints held in int64 arrays (ascending or not)."""
        return self._list is None

    def _find(self, want: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(rows, found) of int64 ids in the int form: a binary search, through the rows sorted by id if needed."""
        ids = self._array[: self._n]
        place = np.searchsorted(ids, want, sorter=self._order)
        found = place < self._n
        rows = np.zeros(len(want), dtype=np.int64)
        rows[found] = place[found] if self._order is None else self._order[place[found]]
        found[found] = ids[rows[found]] == want[found]
        return rows, found

    def row(self, id_: Any) -> Optional[int]:
        """The row of ``id_``, or None."""
        if self._list is not None:
            return self._rows.get(id_)
        if type(id_) is not int or not INT64_MIN <= id_ <= INT64_MAX:
            return None
        ids = self._array[: self._n]  # one id: _find's search on a scalar (a third of the time of 1-element arrays)
        i = int(np.searchsorted(ids, id_, sorter=self._order))
        if i >= self._n:
            return None
        row = i if self._order is None else int(self._order[i])
        return row if int(ids[row]) == id_ else None

    def rows(self, ids: Sequence[Any], what: str, *, distinct: bool) -> np.ndarray:
        """The rows (int64) of ``ids`` (normalised), in their order. An unknown id, and with ``distinct`` a repeated
        one, is a ValueError naming its place: ``what[i]: id ... is not in the index`` / ``... is listed twice``."""
        out = None
        want = _int64_array(ids) if self._list is None else None
        if want is not None:  # one binary search for them all
            out, found = self._find(want)
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

    def check_new(self, new_ids: Union[List[Any], np.ndarray]) -> None:
        """A ValueError naming the first of ``new_ids`` (normalised, or an int64 array) that is already here (``...:
        already in the index``) or given earlier among them (``... in the ids being added``); nothing changes. Int ids
        are checked with one sort and one binary search, not one by one (10M ids: seconds of Python)."""
        new = _int64_array(new_ids) if self._list is None else None
        if new is None:
            if isinstance(new_ids, np.ndarray):
                new_ids = new_ids.tolist()
            seen = set()
            for id_ in new_ids:
                if id_ in self:
                    raise ValueError(f"duplicate id {id_!r}: already in the index")
                if id_ in seen:
                    raise ValueError(f"duplicate id {id_!r} in the ids being added")
                seen.add(id_)
            return
        _, _, here, repeated = self._repeats(new)
        if repeated.any():
            i = int(np.argmax(repeated))
            where = ": already in the index" if here[i] else " in the ids being added"
            raise ValueError(f"duplicate id {int(new[i])!r}{where}")

    def _repeats(self, new: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(new's places sorted by id, new sorted, new ids already here, new ids already here or given at an earlier
        place) for int64 ids in the int form: one sort and one binary search."""
        by_id = np.argsort(new, kind="stable")
        sorted_new = new[by_id]
        here = self._find(new)[1] if self._n else np.zeros(len(new), dtype=bool)
        repeated = here.copy()
        repeated[by_id[1:][sorted_new[1:] == sorted_new[:-1]]] = True  # the later places of an id given twice
        return by_id, sorted_new, here, repeated

    def extend(self, new_ids: Union[List[Any], np.ndarray]) -> None:
        """Append ids (normalised, or an int64 array, which the table may keep as it is) for the next rows; a repeated
        id (among them or already here) is a ValueError naming it, and nothing is added."""
        if len(new_ids) == 0:
            return
        new = _int64_array(new_ids) if self._list is None else None
        if new is not None:
            self._extend_ints(new, new_ids)
            return
        if isinstance(new_ids, np.ndarray):
            new_ids = new_ids.tolist()
        if self._list is None:  # into the general form
            self._list = self._array[: self._n].tolist()
            self._rows = {id_: row for row, id_ in enumerate(self._list)}
            self._array, self._n, self._order = np.empty(0, dtype=np.int64), 0, None
        before = len(self._list)
        for i, id_ in enumerate(new_ids):
            self._rows.setdefault(id_, before + i)
        self._list.extend(new_ids)
        if len(self._rows) != len(self._list):  # a repeated id: take the new ones back
            repeated = next(id_ for i, id_ in enumerate(new_ids) if self._rows[id_] != before + i)
            del self._list[before:]
            self._rows = {id_: row for row, id_ in enumerate(self._list)}
            raise ValueError(f"id {repeated!r} is not unique")

    def _extend_ints(self, new: np.ndarray, new_ids: List[Any]) -> None:
        n, k = self._n, len(new)
        ascending = self._order is None and bool(np.all(new[1:] > new[:-1])) and \
            (n == 0 or int(new[0]) > int(self._array[n - 1]))
        if not ascending:  # the rows sorted by id, the new ones merged in; a repeated id is found on the way
            by_id, sorted_new, _, repeated = self._repeats(new)
            if repeated.any():
                raise ValueError(f"id {_plain(new_ids[int(np.argmax(repeated))])!r} is not unique")
            if n == 0:  # a first addition (or a load): the new rows sorted by id are the order
                self._order = by_id.astype(np.intp, copy=False)
            else:
                current = np.arange(n, dtype=np.intp) if self._order is None else self._order
                place = np.searchsorted(self._array[:n][current], sorted_new)
                self._order = np.insert(current, place, n + by_id).astype(np.intp, copy=False)
            del by_id, sorted_new
        if n == 0:
            self._array, self._n = new, k
            return
        needed = n + k
        if needed > len(self._array):
            grown = np.empty(max(needed, n * 3 // 2), dtype=np.int64)
            grown[:n] = self._array[:n]
            self._array = grown
        self._array[n:needed] = new
        self._n = needed

    def keep(self, mask: np.ndarray) -> None:
        """Only the rows where ``mask`` is True remain (in order)."""
        if self._list is None:
            if self._order is not None:  # the kept rows, still sorted by id, renumbered
                renumbered = np.cumsum(mask) - 1
                kept = self._order[mask[self._order]]
                self._order = renumbered[kept].astype(self._order.dtype)
            self._array = np.ascontiguousarray(self._array[: self._n][mask])
            self._n = len(self._array)
            return
        self._list = [i for i, k in zip(self._list, mask.tolist()) if k]
        self._rows = {id_: row for row, id_ in enumerate(self._list)}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_array"] = self._array[: self._n].copy()
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self._order is not None and self._order.dtype != np.intp:  # pickled with the int32 order of 2026-12-04
            self._order = self._order.astype(np.intp)


def _int64_array(ids: Union[Sequence[Any], np.ndarray]) -> Optional[np.ndarray]:
    """``ids`` as an int64 array if they are all ints inside int64 (or already an int64 array), else None."""
    if isinstance(ids, np.ndarray):
        return ids if ids.dtype == np.int64 and ids.ndim == 1 else None
    if not all(type(id_) is int for id_ in ids):
        return None
    try:
        return np.array(ids, dtype=np.int64).reshape(-1)
    except OverflowError:
        return None


def _plain(id_: Any) -> Any:
    """An id as Python shows it (an int64 array's item as an int, not ``np.int64(5)``)."""
    return int(id_) if isinstance(id_, np.integer) else id_
