import numpy as np

from streamer.state.registry import NEVER, NO_PARTITION, NO_SLOT, DeviceRegistry


def make(initial: int = 2, maximum: int = 100) -> DeviceRegistry:
    return DeviceRegistry(window=4, channels=1, initial_devices=initial, max_devices=maximum)


def test_resolve_assigns_stable_slots_in_arrival_order() -> None:
    registry = make()
    first = registry.resolve(["a", "b"])
    assert first.tolist() == [0, 1]
    again = registry.resolve(["b", "c", "a"])
    assert again.tolist() == [1, 2, 0]
    assert len(registry) == 3
    assert registry.slot("c") == 2
    assert registry.slot("zzz") is None
    assert registry.device_id(1) == "b"


def test_repeated_new_id_in_one_batch_gets_one_slot() -> None:
    registry = make()
    slots = registry.resolve(["x", "y", "x", "x", "y"])
    assert slots.tolist() == [0, 1, 0, 0, 1]
    assert len(registry) == 2


def test_max_devices_gives_no_slot_to_new_devices_only() -> None:
    registry = make(initial=2, maximum=2)
    slots = registry.resolve(["a", "b", "c", "a", "c"])
    assert slots.tolist() == [0, 1, NO_SLOT, 0, NO_SLOT]
    assert len(registry) == 2
    assert registry.slot("c") is None
    assert registry.resolve(["b"]).tolist() == [1]  # known devices still resolve


def test_growth_beyond_initial_capacity_keeps_rows() -> None:
    registry = make(initial=2)
    table = registry.table
    slots = registry.resolve(["a", "b"])
    table["seen"][slots] = [5, 6]
    table["last_ts"][slots] = [100, 200]
    registry.rings.append(slots, np.array([[1.0], [2.0]], dtype=np.float32))
    new = registry.resolve([f"n{i}" for i in range(5)])
    assert new.tolist() == [2, 3, 4, 5, 6]
    assert table.capacity >= 7
    assert table["seen"][:2].tolist() == [5, 6]
    assert table["last_ts"][:2].tolist() == [100, 200]
    assert table["last_ts"][2:7].tolist() == [NEVER] * 5
    assert registry.rings.windows(np.array([1]))[0, -1, 0] == 2.0
    assert registry.rings.filled(new).tolist() == [0] * 5


def test_initial_capacity_is_capped_by_max_devices() -> None:
    registry = make(initial=50, maximum=3)
    assert registry.table.capacity == 3


def test_warming_up_counts_known_devices_below_warmup() -> None:
    registry = make(initial=8)
    slots = registry.resolve(["a", "b", "c"])
    registry.table["seen"][slots] = [0, 5, 10]
    assert registry.warming_up(5) == 1
    assert registry.warming_up(10) == 2
    assert registry.warming_up(11) == 3
    # unused capacity rows are not counted as devices
    assert registry.warming_up(1) == 1


def test_release_frees_slots_for_reuse_and_resets_their_rows() -> None:
    registry = make(initial=4)
    slots = registry.resolve(["a", "b", "c"])
    registry.table["seen"][slots] = [3, 4, 5]
    registry.rings.append(slots, np.array([[1.0], [2.0], [3.0]], dtype=np.float32))
    registry.release(np.array([0, 2]))
    assert len(registry) == 1
    assert registry.slot("a") is None and registry.slot("c") is None
    assert registry.slot("b") == 1
    assert registry.table["seen"][[0, 2]].tolist() == [0, 0]
    assert registry.rings.filled(np.array([0, 2])).tolist() == [0, 0]
    assert registry.table["seen"][1] == 4  # the kept device is untouched
    # New devices take the freed slots, lowest first, before the table grows.
    assert registry.resolve(["d", "e", "f"]).tolist() == [0, 2, 3]
    assert registry.high_water == 4
    assert registry.device_ids(np.array([0, 1, 2])) == ["d", "b", "e"]
    assert registry.table["seen"][0] == 0  # "d" does not inherit "a"'s state


def test_release_ignores_free_and_repeated_slots() -> None:
    registry = make(initial=4)
    registry.resolve(["a", "b"])
    registry.release(np.array([1, 1]))
    registry.release(np.array([1]))
    assert len(registry) == 1
    assert registry.resolve(["c"]).tolist() == [1]


def test_released_slots_count_towards_max_devices_no_more() -> None:
    registry = make(initial=2, maximum=2)
    registry.resolve(["a", "b"])
    assert registry.resolve(["c"]).tolist() == [NO_SLOT]
    registry.release(np.array([0]))
    assert registry.resolve(["c"]).tolist() == [0]


def test_warming_up_ignores_released_slots() -> None:
    registry = make(initial=4)
    slots = registry.resolve(["a", "b", "c"])
    registry.table["seen"][slots] = [10, 10, 10]
    registry.release(np.array([1]))
    assert registry.warming_up(5) == 0
    assert registry.warming_up(11) == 2


def test_devices_remember_the_partition_of_their_first_reading() -> None:
    registry = make(initial=4)
    registry.resolve(["a", "b", "a"], np.array([2, 0, 2], dtype=np.int32))
    registry.resolve(["b", "c"], np.array([1, 1], dtype=np.int32))  # b is known: keeps partition 0
    registry.resolve(["d"])  # admitted without partition information
    assert registry.table["reg_partition"][:4].tolist() == [2, 0, 1, NO_PARTITION]
    assert registry.slots_of_partitions([2]).tolist() == [0]
    assert registry.slots_of_partitions([0, 1]).tolist() == [1, 2]
    registry.release(np.array([1]))
    assert registry.slots_of_partitions([0, 1]).tolist() == [2]


def test_changed_slots_are_those_seen_since_their_last_snapshot() -> None:
    registry = make(initial=4)
    slots = registry.resolve(["a", "b", "c"], np.array([0, 0, 1], dtype=np.int32))
    registry.table["seen"][slots] = [1, 1, 1]
    assert registry.changed_slots([0]).tolist() == [0, 1]
    registry.table["reg_snapshot_seen"][[0]] = 1
    assert registry.changed_slots([0, 1]).tolist() == [1, 2]
    registry.table["seen"][0] = 2
    assert registry.changed_slots([0]).tolist() == [0, 1]


def test_partition_and_change_scans_can_cover_a_range_of_slots() -> None:
    registry = DeviceRegistry(window=4, channels=1, initial_devices=8, max_devices=100)
    slots = registry.resolve([f"d{i}" for i in range(10)], np.array([i % 2 for i in range(10)], np.int32))
    assert slots.tolist() == list(range(10))
    whole = registry.slots_of_partitions([1])
    pieces = [registry.slots_of_partitions([1], start, start + 3) for start in range(0, 12, 3)]
    assert np.concatenate(pieces).tolist() == whole.tolist() == [1, 3, 5, 7, 9]
    registry.accept(np.array([2, 3, 8]), np.array([1, 1, 1], np.int64), np.ones((3, 1)))
    assert registry.changed_slots([0], 0, 5).tolist() == [2]
    assert registry.changed_slots([0, 1], 3, 100).tolist() == [3, 8]
