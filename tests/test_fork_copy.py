"""A fork worker's first life runs on its copy of the Process object when
that equals unpickling it (wire/fork_copy.py), and on the unpickled state
otherwise: either way the worker sees the state as it was at start()."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from shmproc.processing import Process
from shmproc.wire.fork_copy import BUDGET, copies_like_pickle


# ---- what counts as plain -------------------------------------------------------------------

class Plain:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class Reduces:
    def __reduce__(self):
        return (Reduces, ())


class KeepsState:
    def __getstate__(self):
        return {}


class SetsState:
    def __setstate__(self, state):
        self.__dict__.update(state)


class Slotted:
    __slots__ = ("x",)

    def __init__(self):
        self.x = 1


class Holder(Process):
    def __init__(self, value=None):
        self.value = value


def _local_class_instance():
    class Local:
        pass
    return Local()


@pytest.mark.parametrize("value", [
    None, 1, 2.5, 3j, True, "s", b"b", (1, "a"), [1, [2, (3,)]], {"k": {1: 2}}, {1, 2},
    frozenset({3}), Plain(a=1, b=Plain(c=[1, 2])), np.arange(10), np.float64(1.5),
    np.zeros(3, dtype=[("a", "i4"), ("b", "f8")]),
])
def test_plain_state_copies_like_pickle(value):
    assert copies_like_pickle(Holder(value))


@pytest.mark.parametrize("value", [
    Reduces(), KeepsState(), SetsState(), Slotted(), [1, SetsState()], {"k": Reduces()},
    len, Plain, lambda: 1, threading.Lock(), np.array([object()], dtype=object),
    np.ma.masked_array([1, 2]), ValueError("e"), _local_class_instance(),
    np.arange(10)[2:5], np.frombuffer(bytearray(16)), np.arange(4).reshape(2, 2),
    Plain(inner=Plain(deeper=KeepsState())),
])
def test_anything_that_pickles_its_own_way_does_not(value):
    assert not copies_like_pickle(Holder(value))


def test_more_than_the_budget_does_not():
    assert copies_like_pickle(Holder([Plain() for _ in range(BUDGET // 2)]))
    assert not copies_like_pickle(Holder([Plain() for _ in range(BUDGET + 1)]))
    assert copies_like_pickle(Holder(list(range(100_000))))    # atomic values cost nothing


def test_a_root_that_reduces_its_own_way_does_not():
    class Odd(Process):
        def __reduce__(self):
            return (Odd, ())
    assert not copies_like_pickle(Odd())


def test_cycles_are_looked_at_once():
    a = Plain()
    a.me = a
    assert copies_like_pickle(Holder([a, a]))


# ---- through Process ------------------------------------------------------------------------

class ArrayAddress(Process):
    """Returns where its array lives and what it holds."""

    def __init__(self, method, extra=None):
        self.config.num_loops = 1
        self.config.start_method = method
        self.arr = np.arange(1 << 16, dtype=np.int64)
        self.extra = extra

    def __loop__(self):
        self.arr[0] = -1                  # the worker's copy: the parent's stays as it was

    def __result__(self):
        return self.arr.ctypes.data, int(self.arr.sum()), self.arr.flags.writeable


def test_a_fork_worker_uses_its_copy_of_a_plain_process():
    p = ArrayAddress("fork")
    p.start()
    address, total, writeable = p.result
    assert address == p.arr.ctypes.data               # fork's copy: same address, no copy made
    assert total == int(p.arr.sum()) - 1 and writeable
    assert p.arr[0] == 0


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_otherwise_the_worker_unpickles(method):
    p = ArrayAddress(method, extra=SetsState())
    p.start()
    address, total, writeable = p.result
    assert address != p.arr.ctypes.data               # rebuilt from the record
    assert total == int(p.arr.sum()) - 1 and writeable


class CountsSetstate(Process):
    """A root __getstate__/__setstate__ still runs in the worker, fork copy or not."""

    def __init__(self, nested=None):
        self.config.num_loops = 1
        self.config.start_method = "fork"
        self.nested = nested
        self.secret = "parent only"
        self.rebuilt = 0

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("secret", None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self.rebuilt += 1

    def __result__(self):
        return self.rebuilt, hasattr(self, "secret")


@pytest.mark.parametrize("nested", [None, SetsState()])
def test_the_roots_own_state_hooks_run_either_way(nested):
    assert copies_like_pickle(CountsSetstate(nested)) == (nested is None)
    p = CountsSetstate(nested)
    p.start()
    assert p.result == (1, False)


class MutatesThenFails(Process):
    """Life 1 changes its state and fails; life 2 must see the state of start()."""

    def __init__(self):
        self.config.num_loops = 1
        self.config.lives = 2
        self.config.start_method = "fork"
        self.items = [1, 2, 3]
        self.lives_seen = []

    def __loop__(self):
        self.lives_seen.append(list(self.items))
        if len(self.items) == 3 and self.config.lives == 2:
            self.items.append(4)
            raise RuntimeError("first life")

    def __result__(self):
        return self.lives_seen, self.items


def test_a_later_life_starts_from_the_state_of_start():
    p = MutatesThenFails()
    assert copies_like_pickle(p)
    p.start()
    seen, items = p.result
    assert seen == [[1, 2, 3]] and items == [1, 2, 3]
    assert p.items == [1, 2, 3]


class SeesParentChanges(Process):
    def __init__(self):
        self.config.num_loops = 1
        self.config.start_method = "fork"
        self.value = "at start"

    def __result__(self):
        return self.value


def test_changes_after_start_do_not_reach_the_worker():
    p = SeesParentChanges()
    p.start()
    p.value = "after start"
    assert p.result == "at start"


class ArrayLives(Process):
    """Life 1 runs on fork's copy (same address), changes the array and fails;
    life 2 is unpickled from the record written at start()."""

    def __init__(self):
        self.config.num_loops = 1
        self.config.lives = 2
        self.config.start_method = "fork"
        self.arr = np.zeros(1 << 16)

    def __loop__(self):
        self.tell(self.arr.ctypes.data)   # (a life's state goes with it: tell the parent)
        if self.config.lives == 2:
            self.arr[:] = 7
            raise RuntimeError("first life")

    def __result__(self):
        return float(self.arr.sum())


def test_with_lives_left_the_record_is_still_written_and_used():
    p = ArrayLives()
    p.start()
    assert p.result == 0.0                            # life 2 saw start()'s zeros, not life 1's 7s
    first, second = p.listen(timeout=10), p.listen(timeout=10)
    assert first == p.arr.ctypes.data                 # life 1: fork's copy
    assert second != p.arr.ctypes.data                # life 2: unpickled from the record


def test_a_cleared_arena_reads_as_no_record():
    from shmproc.common.errors import CorruptSharedMemoryError
    from shmproc.wire import arenas, transfer
    arena = arenas.pool.take()                        # back to the pool when dropped
    transfer.write(arena, ("an earlier run's", 1))
    assert transfer.read(arena)[0] == ("an earlier run's", 1)
    transfer.clear(arena)
    with pytest.raises(CorruptSharedMemoryError):
        transfer.read(arena)
    assert transfer.extent(arena) == transfer.CLEARED_BYTES    # what is reserved there
    transfer.write(arena, "next", present=transfer.CLEARED_BYTES)
    assert transfer.read(arena)[0] == "next"


def test_a_memmap_or_a_view_is_unpickled(tmp_path):
    """A view may lie over shared memory: fork's copy would share what
    unpickling copies, so only arrays that own their memory count."""
    mm = np.memmap(tmp_path / "m", dtype=np.float64, mode="w+", shape=(8,))
    assert not copies_like_pickle(Holder(mm))
    assert copies_like_pickle(Holder(np.ones(8)))


class WritesItsArray(Process):
    def __init__(self, arr):
        self.config.num_loops = 1
        self.config.start_method = "fork"
        self.arr = arr

    def __result__(self):
        self.arr[:] = 9                   # the worker's copy, whatever the array lies over
        return float(self.arr.sum())


def test_a_worker_never_writes_through_to_a_shared_mapping(tmp_path):
    mm = np.memmap(tmp_path / "m", dtype=np.float64, mode="w+", shape=(8,))
    p = WritesItsArray(mm)
    p.start()
    assert p.result == 72.0
    assert float(mm.sum()) == 0.0         # the parent's mapping (and the file) untouched
