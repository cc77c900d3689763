import numpy as np
import pytest

from streamer.state.slot_table import GROWTH_ROWS, SlotTable


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        SlotTable(0)


def test_add_field_fills_rows() -> None:
    table = SlotTable(3)
    table.add_field("level", (2,), np.float64, np.nan)
    table.add_field("count", (), np.int64, 7)
    assert table.fields == ("level", "count")
    assert "level" in table and "missing" not in table
    assert table["level"].shape == (3, 2)
    assert np.isnan(table["level"]).all()
    assert table["count"].tolist() == [7, 7, 7]


def test_duplicate_field_is_an_error() -> None:
    table = SlotTable(2)
    table.add_field("x", (), np.int64, 0)
    with pytest.raises(ValueError, match="already declared"):
        table.add_field("x", (), np.float64, 0.0)


def test_grow_doubles_keeps_data_and_fills_new_rows() -> None:
    table = SlotTable(2)
    table.add_field("count", (), np.int64, -1)
    table.add_field("ring", (3,), np.float32, np.nan)
    table["count"][:] = [10, 11]
    table["ring"][1] = [1.0, 2.0, 3.0]
    table.grow(5)
    assert table.capacity == 8
    assert table["count"].tolist() == [10, 11, -1, -1, -1, -1, -1, -1]
    assert table["ring"].shape == (8, 3)
    assert table["ring"][1].tolist() == [1.0, 2.0, 3.0]
    assert np.isnan(table["ring"][2:]).all()
    assert table["ring"].dtype == np.float32


def test_grow_to_smaller_capacity_is_a_no_op() -> None:
    table = SlotTable(4)
    table.add_field("x", (), np.int64, 0)
    array = table["x"]
    table.grow(3)
    assert table.capacity == 4
    assert table["x"] is array


def test_field_added_after_growth_has_current_capacity() -> None:
    table = SlotTable(1)
    table.add_field("a", (), np.int64, 0)
    table.grow(3)
    table.add_field("b", (), np.bool_, True)
    assert table["b"].shape == (4,)
    assert table["b"].all()


def test_reset_rows_restores_fill_values_only_for_those_rows() -> None:
    table = SlotTable(4)
    table.add_field("count", (), np.int64, 0)
    table.add_field("level", (2,), np.float64, np.nan)
    table["count"][:] = 5
    table["level"][:] = 1.0
    table.reset_rows(np.array([1, 3]))
    assert table["count"].tolist() == [5, 0, 5, 0]
    assert table["level"][0].tolist() == [1.0, 1.0]
    assert np.isnan(table["level"][[1, 3]]).all()


def test_nbytes_counts_every_field() -> None:
    table = SlotTable(4)
    table.add_field("a", (), np.int64, 0)
    table.add_field("b", (2,), np.float32, 0.0)
    assert table.nbytes() == 4 * 8 + 4 * 2 * 4


def test_a_reserved_table_grows_in_place_a_bounded_step_at_a_time() -> None:
    table = SlotTable(2, reserve=100_000)
    table.add_field("level", (2,), np.float64, np.nan)
    table.add_field("count", (), np.int64, 7)
    table["count"][:] = [1, 2]
    before = table["count"]
    table.grow(3)
    # A step of GROWTH_ROWS, not the whole reserve; nothing copied: the old rows are the same memory.
    assert table.capacity == 2 + GROWTH_ROWS
    assert np.shares_memory(before, table["count"])
    assert table["count"][:3].tolist() == [1, 2, 7]
    assert np.isnan(table["level"][2:]).all() and table["level"].shape == (table.capacity, 2)
    table.grow(50_000)  # more than a step at once: exactly what is needed
    assert table.capacity == 50_000
    assert table.nbytes() == 50_000 * (2 * 8 + 8)  # the rows in use, not the reserve


def test_past_its_reserve_a_table_doubles() -> None:
    table = SlotTable(2, reserve=4)
    table.add_field("count", (), np.int64, 7)
    table.grow(4)
    assert table.capacity == 4
    table["count"][:] = [1, 2, 3, 4]
    table.grow(5)
    assert table.capacity == 8
    assert table["count"].tolist() == [1, 2, 3, 4, 7, 7, 7, 7]
