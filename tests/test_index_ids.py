"""The id table of an index (tinyhpd/index/ids.py): compact while ids are ints inside int64 (ascending, or in any order
with the rows sorted by id beside them), a list and dict otherwise, the same answers either way; and the memory it
saves, measured."""
import pickle
import tracemalloc

import numpy as np
import pytest

from tinyhpd.index import Index
from tinyhpd.index.ids import IdTable


def _same_answers(table, ids):
    assert len(table) == len(ids) and table.tolist() == ids
    for row, id_ in enumerate(ids):
        assert table.row(id_) == row and id_ in table
    assert table.ids(np.arange(len(ids))[::-1]) == ids[::-1]
    for missing in (-1, 10 ** 6, "x", 2 ** 70, 3.0):
        if missing not in ids:
            assert table.row(missing) is None and missing not in table


def test_ascending_ints_stay_compact_and_answer_like_a_dict():
    table = IdTable(range(0, 100, 3))
    table.extend([200, 201])
    assert table.compact
    _same_answers(table, list(range(0, 100, 3)) + [200, 201])
    table.keep(np.arange(len(table)) % 2 == 0)  # removal keeps the order
    assert table.compact
    _same_answers(table, (list(range(0, 100, 3)) + [200, 201])[::2])
    assert type(table.ids(np.array([0]))[0]) is int  # Python ints, as the ids went in


@pytest.mark.parametrize("later", [[7, 6], [3], [-4, 100, 2]])
def test_ints_out_of_order_stay_compact_with_the_rows_sorted_by_id(later):
    table = IdTable([1, 5, 8])
    table.extend(later)  # ints out of order, an int not above the last
    assert table.compact and table._order is not None
    _same_answers(table, [1, 5, 8] + later)
    table.keep(np.array([True, False, True] + [True] * len(later)))  # removal renumbers the sorted rows
    assert table.compact
    _same_answers(table, [1, 8] + later)
    table.extend([100 + len(later), 0])
    _same_answers(table, [1, 8] + later + [100 + len(later), 0])
    again = pickle.loads(pickle.dumps(table))
    assert again.compact
    _same_answers(again, table.tolist())
    np.testing.assert_array_equal(table.rows([0, 1, 8], "ids", distinct=True), [len(table) - 1, 0, 1])
    table.extend(["a"])  # then a str: the general form, the same answers
    assert not table.compact and table._order is None
    _same_answers(table, [1, 8] + later + [100 + len(later), 0, "a"])


@pytest.mark.parametrize("later", [["a"], [2 ** 64]])
def test_anything_else_turns_it_into_the_general_form_once(later):
    table = IdTable([1, 5, 8])
    table.extend(later)
    assert not table.compact  # a str, an int outside int64
    _same_answers(table, [1, 5, 8] + later)
    table.keep(np.array([True, False, True] + [True] * len(later)))
    _same_answers(table, [1, 8] + later)
    table.extend([100])
    assert not table.compact and table.row(100) == len(table) - 1


def test_a_repeated_id_adds_nothing_in_either_form():
    for start, new in (([0, 1, 2], [5, 2]), ([0, 1, 2], ["c", 0]), (["a", "b"], ["c", "a"]), ([2, 0, 1], [5, 1]),
                       ([2, 0, 1], [9, 7, 9]), ([0, 1, 2], [9, 7, 9])):
        table = IdTable(start)
        with pytest.raises(ValueError, match=f"id {new[-1]!r} is not unique"):
            table.extend(new)
        assert table.tolist() == start
        _same_answers(table, start)
    with pytest.raises(ValueError, match="id 3 is not unique"):
        IdTable([3, 1, 3])


@pytest.mark.parametrize("form", ["ascending", "any order", "general"])
def test_rows_of_many_ids_name_the_place_of_an_unknown_or_repeated_one(form):
    ids = {"ascending": list(range(0, 300, 3)), "any order": list(range(297, -1, -3)),
           "general": [f"d{i}" for i in range(100)]}[form]
    table = IdTable(ids)
    assert table.compact is (form != "general")
    want = [ids[7], ids[0], ids[99], ids[42]]
    np.testing.assert_array_equal(table.rows(want, "ids", distinct=True), [7, 0, 99, 42])
    assert table.rows([], "ids", distinct=True).shape == (0,)
    np.testing.assert_array_equal(table.rows([ids[5], ids[5]], "ids", distinct=False), [5, 5])
    with pytest.raises(ValueError, match=r"filter\[2\]: id .* is listed twice"):
        table.rows([ids[5], ids[6], ids[5], ids[6]], "filter", distinct=True)
    for missing in (4, 2 ** 70, -1, "nope"):
        with pytest.raises(ValueError, match=r"ids\[1\]: id .* is not in the index"):
            table.rows([ids[1], missing, ids[2]], "ids", distinct=True)


def test_index_remove_within_and_vectors_share_the_id_rules():
    index = Index(4, "float32")
    index.add(np.eye(4) + 0.1, ids=[10, 20, 30, 40])
    with pytest.raises(ValueError, match=r"ids\[1\]: id 99 is not in the index"):
        index.remove([10, 99])
    with pytest.raises(ValueError, match=r"ids\[1\]: id 10 is listed twice"):
        index.remove([10, 10])
    with pytest.raises(ValueError, match=r"within\[0\]: id 5 is not in the index"):
        index.search(np.ones(4), within=[5])
    assert len(index) == 4  # nothing removed by the refused calls
    np.testing.assert_array_equal(index.vectors([30, 30]), index.vectors([30])[[0, 0]])
    assert index.search(np.eye(4)[2] + 0.1, top_k=1, within=[20, 30]).ids == [30]


def test_pickled_tables_and_indexes_keep_their_ids():
    table = IdTable(range(10))
    table.extend([20])  # room past n in the array is not pickled
    again = pickle.loads(pickle.dumps(table))
    assert again.compact and again.tolist() == table.tolist() and len(again._array) == len(again)
    index = Index(4)
    index.add(np.eye(4), ids=["a", "b", "c", "d"])
    assert pickle.loads(pickle.dumps(index)).search(np.eye(4)[2], top_k=1).ids == ["c"]


def test_an_index_of_a_million_default_ids_keeps_them_in_8_bytes_each():
    """Measured, not assumed: the ids of 1M rows (default ints) against the list + dict they were before."""
    n = 1_000_000
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    table = IdTable(range(n))
    compact = tracemalloc.get_traced_memory()[0] - base
    del table
    base = tracemalloc.get_traced_memory()[0]
    ids = list(range(n))
    rows = {id_: row for row, id_ in enumerate(ids)}
    general = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del ids, rows
    assert compact <= 8.5 * n, compact
    assert general >= 8 * compact, (general, compact)


def test_a_million_default_ids_in_another_order_take_16_bytes_each():
    """The ids of an ANN index's large addition (stored grouped by similarity): 8 bytes an id, 8 a sorted row."""
    n = 1_000_000
    shuffled = np.random.default_rng(0).permutation(n).tolist()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    table = IdTable(shuffled)
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert table.compact and held <= 16.5 * n, held
    np.testing.assert_array_equal(table.rows(list(range(0, n, 997)), "ids", distinct=True),
                                  np.argsort(shuffled)[::997])


@pytest.mark.parametrize("here, new, message", [
    ([], [5, 7, 5, 9], "duplicate id 5 in the ids being added"),
    ([1, 2, 3], [9, 8, 3, 9], "duplicate id 3: already in the index"),  # the first place in order is named
    ([1, 2, 3], [9, 8, 9, 3], "duplicate id 9 in the ids being added"),
    ([4, 1, 9], [7, 1, 1], "duplicate id 1: already in the index"),  # ids in any order (the rows sorted beside)
    (["a", 2], [3, "a"], "duplicate id 'a': already in the index"),  # the list form
    (["a", 2], ["b", "b"], "duplicate id 'b' in the ids being added"),
    ([2 ** 70], [2 ** 70], f"duplicate id {2 ** 70}: already in the index"),  # an int outside int64
])
def test_check_new_names_the_first_repeated_id_in_either_form(here, new, message):
    table = IdTable(here)
    for given in (new, np.array(new, dtype=np.int64) if all(type(i) is int and abs(i) < 2 ** 63 for i in new)
                  else new):
        with pytest.raises(ValueError) as exc:
            table.check_new(given)
        assert str(exc.value) == message
    assert table.tolist() == here  # nothing changed


def test_check_new_passes_new_ids_and_the_int_form_agrees_with_one_by_one():
    rng = np.random.default_rng(3)
    here = rng.permutation(2000)[:1000].tolist()
    table = IdTable(here)
    for _ in range(200):
        new = rng.integers(0, 3000, 5).tolist()
        expected = None
        seen = set()
        for id_ in new:  # the rule, one id at a time
            if id_ in set(here):
                expected = f"duplicate id {id_}: already in the index"
                break
            if id_ in seen:
                expected = f"duplicate id {id_} in the ids being added"
                break
            seen.add(id_)
        try:
            table.check_new(np.array(new, dtype=np.int64))
            got = None
        except ValueError as exc:
            got = str(exc)
        assert got == expected, new
    table.check_new([])
    table.check_new(np.arange(5000, 6000))


def test_extend_takes_an_int64_array_in_either_form():
    table = IdTable([3, 1])
    table.extend(np.array([7, 5], dtype=np.int64))
    assert table.compact and table.tolist() == [3, 1, 7, 5] and table.row(5) == 3
    with pytest.raises(ValueError, match="^id 7 is not unique$"):  # an int, not np.int64(7)
        table.extend(np.array([8, 7], dtype=np.int64))
    table.extend(["s"])
    table.extend(np.array([9], dtype=np.int64))
    assert not table.compact and table.tolist() == [3, 1, 7, 5, "s", 9] and table.row(9) == 5


@pytest.mark.parametrize("given, expected", [
    (np.array([10, 4, 7], dtype=np.int32), [10, 4, 7]),
    (np.array([2 ** 63 - 1, 0, 5], dtype=np.uint64), [2 ** 63 - 1, 0, 5]),
    (np.array([2 ** 64 - 1, 0, 5], dtype=np.uint64), [2 ** 64 - 1, 0, 5]),  # past int64: the list form
    ([np.int16(4), 8, np.uint8(1)], [4, 8, 1]),
])
def test_index_add_takes_integer_arrays_as_ids(given, expected):
    index = Index(4)
    index.add(np.eye(4)[:3] + 0.1, ids=given)
    assert index.ids == expected and all(type(i) is int for i in index.ids)
    assert index.search(np.eye(4)[1] + 0.1, top_k=1).ids == [expected[1]]
    index.add(np.eye(4)[3:] + 0.1)  # a default id after the largest int id
    assert index.ids[-1] == max(expected) + 1
    with pytest.raises(ValueError, match=f"^duplicate id {expected[0]}: already in the index$"):
        index.add(np.ones((1, 4)), ids=np.array([expected[0]], dtype=given.dtype if isinstance(given, np.ndarray)
                                                  else np.int64))
    assert len(index) == 4


@pytest.mark.parametrize("given", [np.array([True, False]), np.array([1.0, 2.0]), np.array([[1], [2]])])
def test_index_add_refuses_arrays_that_are_not_ids(given):
    index = Index(4)
    with pytest.raises(TypeError, match="ids must be int or str"):
        index.add(np.ones((2, 4)), ids=given)
    assert len(index) == 0


def test_a_lookup_in_ids_out_of_order_does_not_copy_the_table():
    """NumPy's searchsorted converts a sorter that is not np.intp whole on every call: with the rows sorted by id kept
    as int32, each lookup of one id copied 8 bytes a row (0.45 ms at 1M rows, 442 s to check 1M new ids one by
    one). Measured as memory, not time: 1,000 lookups and a small `rows` call allocate no more than a few KB."""
    n = 1_000_000
    table = IdTable(np.random.default_rng(1).permutation(n).tolist())
    tracemalloc.start()
    for id_ in range(0, n, 1000):
        assert table.row(id_) is not None
    table.rows([5, 17, 999_999], "ids", distinct=True)
    assert 3 in table and -1 not in table
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 * 1024, peak  # one copy of the sorted rows would be 4-8 MB


def test_a_table_pickled_with_an_int32_order_loads_with_the_one_lookups_take():
    table = IdTable([5, 1, 9, 3])
    state = table.__getstate__()
    state["_order"] = state["_order"].astype(np.int32)  # as the tables of 2026-12-04 were pickled
    again = IdTable.__new__(IdTable)
    again.__setstate__(state)
    assert again._order.dtype == np.intp
    _same_answers(again, [5, 1, 9, 3])
