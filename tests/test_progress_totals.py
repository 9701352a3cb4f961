"""Progress bars that know the total (issue 15): a lazy call (imap,
imap_unordered, istarmap) over a sized input (a list, range, numpy array)
gives its bar a length, a percentage and an ETA from the first update;
over a generator the bar counts until the input runs out.  Parent-side
behaviour: the pool runs under fork."""
import io
import sys

import numpy as np
import pytest

import shmproc
from shmproc.jobs.progressbar import ProgressBar

from pool_work import square


@pytest.fixture
def pool():
    with shmproc.Pool(2, start_method="fork") as p:
        yield p


@pytest.mark.parametrize("make", [list, range, np.arange, tuple], ids=["list", "range",
                                                                      "ndarray", "tuple"])
def test_a_sized_input_gives_the_total_from_the_start(pool, make):
    seen = []
    items = make(25) if make in (range, np.arange) else make(range(25))
    out = list(pool.imap(square, items, progress=lambda done, total: seen.append((done, total))))
    assert [int(x) for x in out] == [x * x for x in range(25)]
    assert seen and all(total == 25 for _, total in seen)
    assert seen[-1] == (25, 25)


def test_unordered_and_starmap_too(pool):
    seen = []
    assert sorted(pool.imap_unordered(square, list(range(9)),
                                      progress=lambda d, t: seen.append(t))) == \
        sorted(x * x for x in range(9))
    assert set(seen) == {9}
    star = []
    assert list(pool.istarmap(pow, [(2, 3), (3, 2)], progress=lambda d, t: star.append(t))) == [8, 9]
    assert set(star) == {2}


def test_a_generator_counts_until_it_runs_out(pool):
    seen = []
    out = list(pool.imap(square, (x for x in range(12)), progress=lambda d, t: seen.append((d, t))))
    assert out == [x * x for x in range(12)]
    assert seen[-1] == (12, 12)                     # known once the input ran out
    assert seen[0][1] is None or seen[0][1] == 12   # not before (unless it ran out first)


def test_the_plain_line_shows_percentage_and_eta(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # the plain line, not tqdm's
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    out = io.StringIO()
    bar = ProgressBar(200, "work", stream=out)
    bar.started -= 2.0                              # 2 s in, 50 done: 25/s, 150 left: 6 s
    bar.update(50, 200)
    line = out.getvalue()
    assert "25%" in line and "50/200" in line and "ETA 0:06" in line, line
    bar.update(200, 200)
    bar.close()
    assert "100%" in out.getvalue().splitlines()[-1] and "ETA" not in out.getvalue().splitlines()[-1]
