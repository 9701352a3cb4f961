"""Every example of processing-concept.md sections 3-11, run for real.

The examples are written as the concept shows them, with ``suitkaise``
read as ``shmproc``.  What they leave undefined (``process_file``,
``risky_api_call``, ``fetch_next_batch``, ...) is defined below as small
module-level stand-ins doing tiny real work, so every class and helper
pickles by reference under every start method.  Network calls go to a
local HTTP server (``api`` fixture) instead of example.com; durations are
shrunk (sleep 0.1 -> 0.005, join_in 60 -> ~0.3 s, 50 items -> 10).

Each test asserts the outcome the concept documents for its example.
"""
from __future__ import annotations

import builtins
import csv
import json
import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import START_METHODS

from shmproc import docs, processing, sktime
from shmproc.circuit import Circuit
from shmproc.processing import (
    MainLoopError, OnFinishError, PostLoopError, PreloopError, Process, ProcessConfig,
    ProcessError, ProcessTimers, ResultError, TimeoutConfig, TimeoutError, timesection,
)


# The local HTTP server runs in a thread; Python >= 3.12 warns when such a
# process forks.  The fork children here never touch that thread's state.
pytestmark = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded, use of fork:DeprecationWarning")


def run(p, method=None, timeout=30):
    """start() `p` (under `method`, if given), wait for it, return it."""
    if method is not None:
        p.config.start_method = method
    p.start()
    assert p.wait(timeout=timeout), f"{p!r} did not finish within {timeout} s"
    assert p.is_alive is False
    return p


def outcome(fn, *args):
    """fn(*args) as ("ok", value) or ("raised", exception without traceback).

    Why: a failing test's traceback stays alive until the
    next test runs (pytest keeps it in sys.last_traceback), and Process
    objects in its frames would hold their shared memory past the leak check.
    """
    try:
        return "ok", fn(*args)
    except Exception as exc:
        exc.__traceback__ = None
        exc.__context__ = exc.__cause__ = None
        return "raised", exc


# =====================================================================================
# The local HTTP service standing in for example.com
# =====================================================================================
#
#   GET /api/<key>?fail_first=N&drop=1&poison_every=K
#       Request number c (0-based, counted per key): c < N fails -- 503, or with
#       drop=1 the connection is closed without a response.  Otherwise it
#       returns {"key", "seq": c - N, "items": [...], "poison": bool} where
#       poison is true on every K-th successful request.
#   GET /hits/<key>   -> {"hits": number of /api/<key> requests so far}

class _ApiHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):          # keep the test output clean
        pass

    def _send_json(self, status, payload):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        query = {k: int(v[0]) for k, v in urllib.parse.parse_qs(url.query).items()}
        parts = url.path.strip("/").split("/")
        server = self.server
        if len(parts) == 2 and parts[0] == "hits":
            with server.lock:
                hits = server.hits.get(parts[1], 0)
            return self._send_json(200, {"hits": hits})
        if len(parts) != 2 or parts[0] != "api":
            return self._send_json(404, {"error": "not found"})
        key = parts[1]
        with server.lock:
            count = server.hits.get(key, 0)
            server.hits[key] = count + 1
        fail_first = query.get("fail_first", 0)
        if count < fail_first:
            if query.get("drop"):
                self.close_connection = True      # no response at all: the client errors
                return
            return self._send_json(503, {"error": "unavailable", "attempt": count})
        seq = count - fail_first
        every = query.get("poison_every", 0)
        self._send_json(200, {
            "key": key,
            "seq": seq,
            "items": [seq, seq + 1, seq + 2],
            "poison": bool(every) and seq % every == every - 1,
        })


class Api:
    """Handle on the running server: URLs and request counts."""

    def __init__(self, server):
        self.server = server
        self.base = f"http://127.0.0.1:{server.server_address[1]}"

    def url(self, key=None, **query):
        key = key or uuid.uuid4().hex
        qs = urllib.parse.urlencode(query)
        return f"{self.base}/api/{key}" + (f"?{qs}" if qs else "")

    def hits(self, url):
        key = urllib.parse.urlsplit(url).path.rsplit("/", 1)[1]
        with self.server.lock:
            return self.server.hits.get(key, 0)


@pytest.fixture(scope="module")
def api():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ApiHandler)
    server.daemon_threads = True
    server.lock = threading.Lock()
    server.hits = {}
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield Api(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# =====================================================================================
# Stand-ins for the helpers the examples call but do not define
# =====================================================================================

class _UrllibResponse:
    """The part of requests.Response the examples use."""

    def __init__(self, url, status_code, body):
        self.url = url
        self.status_code = status_code
        self.content = body

    def raise_for_status(self):
        if self.status_code >= 400:
            raise OSError(f"{self.status_code} Error for url: {self.url}")

    def json(self):
        return json.loads(self.content)


class _UrllibRequests:
    """requests.get() on urllib, for when requests is not installed."""

    @staticmethod
    def get(url, timeout=None):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return _UrllibResponse(url, response.status, response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return _UrllibResponse(url, exc.code, exc.read())


try:                          # the concept's examples call requests.get(...)
    import requests
except ImportError:           # pragma: no cover - not a dependency: urllib stands in
    requests = _UrllibRequests()


class ApiResponse:
    """What risky_api_call returns: a `.status` and the decoded body."""

    def __init__(self, status, body):
        self.status = status
        self.body = body


def risky_api_call(url):
    """GET `url` with urllib; an HTTP error status is returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return ApiResponse(response.status, json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        with exc:
            return ApiResponse(exc.code, json.loads(exc.read()))


def process_file(path):
    """Read a CSV file and sum its 'value' column."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {"file": os.path.basename(path), "rows": len(rows),
            "total": sum(int(r["value"]) for r in rows)}


def process_item(item):
    return item * item


def setup_work():
    return sum(range(50))


def do_main_work():
    return sorted(range(200, 0, -1))[0]


def cleanup():
    return [].clear()


def do_work():
    return sum(i * i for i in range(300))


def expensive_computation(task):
    return sum(i * i for i in range(task["n"]))


def generate_task(i):
    return {"id": i, "n": 20_000 + 1_000 * i}


def fetch_next_batch(source):
    response = requests.get(source["url"], timeout=10)
    response.raise_for_status()
    return response.json()


def process_batch(batch):
    if batch["poison"]:
        raise ValueError(f"poisoned batch {batch['seq']}")
    sktime.sleep(0.005)
    return sum(batch["items"])


def do_task(task_id):
    return sum(range(task_id * 1000))


# =====================================================================================
# §3 The Process class
# =====================================================================================

class MyProcess(Process):
    def __init__(self):
        # Your initialization - self.config is already available!
        self.counter = 0
        self.config.num_loops = 10

    def __loop__(self):
        # Your core work happens here
        self.counter += 1

    def __result__(self):
        # Return whatever you want to retrieve from the subprocess
        return self.counter


@pytest.mark.parametrize("method", START_METHODS)
def test_s3_basic_structure(method):
    p = MyProcess()
    p.config.start_method = method
    p.start()
    p.wait()
    result = p.result  # Returns 10
    assert result == 10


class DataProcess(Process):               # "✅ Just write your __init__ naturally"
    def __init__(self, data):
        self.data = data
        self.config.num_loops = 10

    def __loop__(self):
        self.data = self.data + [self.current_lap]

    def __result__(self):
        return self.data


class DataProcessWithSuper(Process):      # "❌ No need for this" -- but it still works
    def __init__(self, data):
        super().__init__()  # Not required!
        self.data = data
        self.config.num_loops = 10

    def __loop__(self):
        self.data = self.data + [self.current_lap]

    def __result__(self):
        return self.data


@pytest.mark.parametrize("cls", [DataProcess, DataProcessWithSuper])
def test_s3_no_super_init_needed(cls):
    p = cls(["start"])
    assert p.config.num_loops == 10 and p.data == ["start"]
    run(p)
    assert p.result == ["start", *range(10)]


def test_s3_all_available_properties():
    p = MyProcess()
    # Before start: the documented types and initial values.
    assert isinstance(p.config, ProcessConfig)
    assert p.timers is None and p.error is None
    assert p.current_lap == 0 and p.is_alive is False and p.result is None

    s = MyProcess()
    s.config.num_loops = None                      # run until stopped, to watch it live
    s.start()
    try:
        assert s.is_alive is True
        deadline = time.monotonic() + 10
        while s.current_lap < 3 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert s.current_lap >= 3                  # live lap count from the worker
    finally:
        s.stop()
        assert s.wait(timeout=30)
    assert s.is_alive is False
    assert s.result == s.current_lap >= 3
    assert s.error is None


# =====================================================================================
# §4 Lifecycle methods
# =====================================================================================

class Lifecycle(Process):
    """The snippets of §4 put together in one class."""

    def __init__(self, items, fail_on=None):
        self.items = items
        self.results = []
        self.lap_times = []
        self.fail_on = fail_on
        self.config.num_loops = len(items)

    def __preloop__(self):
        self.start_time = sktime.now()
        print(f"Starting lap {self.current_lap}")

    def __loop__(self):
        item = self.items[self.current_lap]
        if item == self.fail_on:
            raise ValueError(f"bad item {item}")
        result = process_item(item)
        self.results.append(result)

    def __postloop__(self):
        elapsed = sktime.elapsed(self.start_time)
        self.lap_times.append(elapsed)

    def __onfinish__(self):
        self.summary = {
            "total_items": len(self.results),
            "mean_time": sum(self.lap_times) / len(self.lap_times),
            "results": self.results,
        }

    def __result__(self):
        return self.summary

    def __error__(self):
        print(f"Process failed: {self.error}")
        return self.error  # Default behavior


def test_s4_lifecycle_methods(capfd):
    p = run(Lifecycle([1, 2, 3, 4]))
    summary = p.result
    assert summary["total_items"] == 4 and summary["results"] == [1, 4, 9, 16]
    assert isinstance(summary["mean_time"], float) and summary["mean_time"] >= 0
    out = capfd.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("Starting lap")] == [
        f"Starting lap {i}" for i in range(4)]


def test_s4_error_hook_gets_self_error(capfd):
    p = run(Lifecycle([1, 2, 3, 4], fail_on=3))
    with pytest.raises(MainLoopError, match="on lap 2: ValueError: bad item 3") as info:
        p.result
    assert info.value.current_lap == 2 and isinstance(info.value.original_error, ValueError)
    assert isinstance(p.error, MainLoopError)                 # the parent also holds it
    out = capfd.readouterr().out
    assert "Process failed: Error in __loop__ on lap 2: ValueError: bad item 3" in out


# =====================================================================================
# §5 Configuration
# =====================================================================================

class ConfiguredProcess(Process):
    def __init__(self):
        # Number of loops before stopping (None = infinite)
        self.config.num_loops = 100

        # Time limit in seconds (None = no limit)
        self.config.join_in = 30.0

        # Retry attempts on error (1 = no retries)
        self.config.lives = 3

        # Per-section timeouts
        self.config.timeouts.preloop = 30.0
        self.config.timeouts.loop = 300.0
        self.config.timeouts.postloop = 60.0
        self.config.timeouts.onfinish = 60.0
        self.laps = 0

    def __preloop__(self):
        pass

    def __loop__(self):
        self.laps += 1

    def __postloop__(self):
        pass

    def __onfinish__(self):
        self.finished = True

    def __result__(self):
        return (self.laps, self.finished, self.config.lives)


def test_s5_configuration():
    p = ConfiguredProcess()
    c = p.config
    assert (c.num_loops, c.join_in, c.lives) == (100, 30.0, 3)
    assert (c.timeouts.preloop, c.timeouts.loop, c.timeouts.postloop, c.timeouts.onfinish) == (
        30.0, 300.0, 60.0, 60.0)
    run(p)
    assert p.result == (100, True, 3)           # num_loops reached first; no life used


def test_s5_config_defaults():
    for config in (ProcessConfig(), Minimal().config, processing.Process().config):
        assert config.num_loops is None
        assert config.join_in is None
        assert config.lives == 1
        assert isinstance(config.timeouts, TimeoutConfig)
        t = config.timeouts
        assert (t.preloop, t.loop, t.postloop, t.onfinish) == (30.0, 300.0, 60.0, 60.0)


# =====================================================================================
# §6 Timing with @timesection
# =====================================================================================

class TimedProcess(processing.Process):
    def __init__(self):
        self.config.num_loops = 100

    @timesection()
    def __preloop__(self):
        setup_work()

    @timesection()
    def __loop__(self):
        do_main_work()

    @timesection()
    def __postloop__(self):
        cleanup()

    def __result__(self):
        return {
            "loop_mean": self.timers.loop.mean,
            "loop_min": self.timers.loop.min,
            "loop_max": self.timers.loop.max,
            "total_time": self.timers.full_loop.total_time,
        }


def test_s6_timesection():
    p = run(TimedProcess())
    r = p.result
    assert all(isinstance(v, float) for v in r.values())
    assert 0 <= r["loop_min"] <= r["loop_mean"] <= r["loop_max"]
    # Available timers: each a full sktime.Timer, also in the parent after the run.
    timers = p.timers
    assert isinstance(timers, ProcessTimers)
    for name in ("preloop", "loop", "postloop", "full_loop"):
        timer = getattr(timers, name)
        assert isinstance(timer, sktime.Timer) and timer.num_times == 100
    assert timers.onfinish is None                        # __onfinish__ was not timed
    assert timers.loop.mean == pytest.approx(r["loop_mean"])
    assert r["total_time"] == pytest.approx(timers.full_loop.total_time)
    # full_loop aggregates preloop + loop + postloop of each lap.
    parts = timers.preloop.total_time + timers.loop.total_time + timers.postloop.total_time
    assert timers.full_loop.total_time == pytest.approx(parts)
    for stat in ("mean", "min", "max", "stdev", "total_time"):
        assert isinstance(getattr(timers.loop, stat), float)


class TimedOnFinish(Process):
    def __init__(self):
        self.config.num_loops = 2

    @timesection()
    def __onfinish__(self):
        do_work()

    def __result__(self):
        return self.timers.onfinish.num_times


def test_s6_onfinish_timer():
    p = run(TimedOnFinish())
    assert p.result == 1 and p.timers.onfinish.num_times == 1 and p.timers.loop is None


def test_s6_timesection_only_on_lifecycle_methods():
    with pytest.raises(ValueError, match="timethis"):
        class Wrong(Process):
            @timesection()
            def helper(self):
                pass


# =====================================================================================
# §7 Error handling
# =====================================================================================

class FailsIn(Process):
    def __init__(self, section, lap=3):
        self.section = section
        self.lap = lap
        self.config.num_loops = 5

    def _fail(self, section):
        if self.section == section and self.current_lap == self.lap:
            raise KeyError(f"{section} broke")

    def __preloop__(self):
        self._fail("preloop")

    def __loop__(self):
        self._fail("loop")

    def __postloop__(self):
        self._fail("postloop")

    def __onfinish__(self):
        if self.section == "onfinish":
            raise KeyError("onfinish broke")

    def __result__(self):
        if self.section == "result":
            raise KeyError("result broke")
        return "fine"


class SlowLoop(Process):
    def __init__(self):
        self.config.num_loops = 3
        self.config.timeouts.loop = 0.2

    def __loop__(self):
        if self.current_lap == 1:
            sktime.sleep(5)


@pytest.mark.parametrize("section,cls,lap", [
    ("preloop", PreloopError, 3), ("loop", MainLoopError, 3), ("postloop", PostLoopError, 3),
    ("onfinish", OnFinishError, 5), ("result", ResultError, 5),
])
def test_s7_section_specific_errors(section, cls, lap):
    my_process = run(FailsIn(section))
    try:
        result = my_process.result
    except Exception as e:
        assert type(e) is cls and isinstance(e, ProcessError)
        print(f"Loop failed on lap {e.current_lap}")
        print(f"Original error: {e.original_error}")
        assert e.current_lap == lap
        assert isinstance(e.original_error, KeyError)
        assert e.original_error.args == (f"{section} broke",)
    else:
        pytest.fail(f"no error raised; got {result!r}")


def test_s7_timeout_error():
    t0 = time.monotonic()
    p = run(SlowLoop())
    with pytest.raises(TimeoutError) as info:
        p.result
    assert time.monotonic() - t0 < 4                # interrupted: the 5 s sleep did not finish
    e = info.value
    assert isinstance(e, ProcessError) and isinstance(e, builtins.TimeoutError)
    assert e.section == "__loop__" and e.timeout == 0.2 and e.current_lap == 1


class RetryingProcess(Process):
    def __init__(self, api_url):
        self.api_url = api_url                # where risky_api_call goes (the local server)
        self.config.lives = 3  # 3 attempts total
        self.config.num_loops = 1

    def __loop__(self):
        response = risky_api_call(self.api_url)
        if response.status != 200:
            raise ConnectionError("API failed")


def test_s7_lives_retry_until_success(api):
    url = api.url(fail_first=2)                   # two 503s, then 200
    p = run(RetryingProcess(url))
    assert p.result is None and p.error is None   # third attempt succeeded
    assert api.hits(url) == 3


def test_s7_lives_exhausted(api):
    url = api.url(fail_first=3)
    p = run(RetryingProcess(url))
    with pytest.raises(MainLoopError, match="ConnectionError: API failed") as info:
        p.result
    assert isinstance(info.value.original_error, ConnectionError)
    assert info.value.current_lap == 0
    assert api.hits(url) == 3                     # 3 attempts total, then __error__


# =====================================================================================
# §8 Control methods
# =====================================================================================

class Ticker(Process):
    def __init__(self):
        self.finished = False

    def __loop__(self):
        sktime.sleep(0.002)

    def __onfinish__(self):
        self.finished = True

    def __result__(self):
        return {"laps": self.current_lap, "finished": self.finished}


def test_s8_start_and_wait():
    p = MyProcess()
    p.start()  # Process is now running in background
    p.wait()  # Blocks here
    # Process is now done
    assert p.is_alive is False and p.result == 10


def test_s8_stop_is_graceful():
    p = Ticker()
    p.start()
    sktime.sleep(0.05)
    p.stop()  # Signal stop
    assert p.wait(timeout=30)  # Wait for graceful shutdown
    r = p.result
    assert r["finished"] is True and r["laps"] >= 1 and r["laps"] == p.current_lap


def test_s8_kill():
    p = Ticker()
    p.start()
    p.kill()  # Immediate termination
    # p.result will be None
    assert p.result is None and p.is_alive is False


def test_s8_result_property():
    p = Lifecycle([5, 6, 7], fail_on=6)
    p.start()
    p.wait()
    try:
        data = p.result  # Deserializes and returns __result__() output
    except MainLoopError as e:
        message = f"Process failed: {e}"
    else:
        pytest.fail(f"expected MainLoopError, got {data!r}")
    assert message == "Process failed: Error in __loop__ on lap 1: ValueError: bad item 6"
    ok = run(Lifecycle([5, 6, 7]))
    assert ok.result["results"] == [25, 36, 49]
    assert ok.result is ok.result                 # deserialized once, cached


# =====================================================================================
# §9 docs
# =====================================================================================

def test_s9_docs_download(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.chdir(project)
    monkeypatch.setenv("HOME", str(home))

    target = docs.download("a/file/path")
    assert target == (project / "a" / "file" / "path").resolve()
    assert any(target.rglob("*.md"))

    with pytest.raises(PermissionError):          # outside the project without consent
        docs.download()
    # downloading to a place outside the user's project root
    with docs.Permission():
        # auto adds to Downloads folder
        where = docs.download()
    assert where == (home / "Downloads" / "shmproc-docs").resolve()
    assert any(where.rglob("*.md"))


# =====================================================================================
# §10 Real examples
# =====================================================================================

# ---- 1. Batch File Processor ---------------------------------------------------------

class FileProcessor(processing.Process):
    def __init__(self, file_list):
        self.files = file_list
        self.results = []
        self.config.num_loops = len(file_list)

    @timesection()
    def __loop__(self):
        file_path = self.files[self.current_lap]
        result = process_file(file_path)
        self.results.append(result)

    def __result__(self):
        return {
            "processed": len(self.results),
            "avg_time": self.timers.loop.mean,
            "totals": [r["total"] for r in self.results],
        }


def _write_csvs(folder):
    files = []
    for i, name in enumerate(["data1.csv", "data2.csv", "data3.csv"], start=1):
        path = folder / name
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["name", "value"])
            for j in range(i * 5):
                writer.writerow([f"row{j}", j])
        files.append(str(path))
    return files


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_example1_batch_file_processor(tmp_path, method):
    files = _write_csvs(tmp_path)
    processor = FileProcessor(files)
    processor.config.start_method = method
    processor.start()

    # Do other work while processing...
    other = sum(range(1000))

    processor.wait()
    result = processor.result
    assert other == 499500
    assert result["processed"] == 3
    assert isinstance(result["avg_time"], float) and result["avg_time"] >= 0
    assert f"Average time per file: {result['avg_time']:.2f}s".endswith("s")   # formats
    assert result["totals"] == [sum(range(5)), sum(range(10)), sum(range(15))]


# ---- 2. Web Scraper with Rate Limiting -----------------------------------------------

class WebScraper(Process):
    def __init__(self, urls):
        self.urls = urls
        self.data = []
        self.config.num_loops = len(urls)
        self.config.lives = 3  # Retry failed requests

    def __loop__(self):
        url = self.urls[self.current_lap]
        response = requests.get(url, timeout=10)
        response.raise_for_status()
        self.data.append(response.json())

        # Rate limit: small delay between requests
        sktime.sleep(0.005)

    def __result__(self):
        return self.data


def test_example2_web_scraper(api):
    urls = [api.url(), api.url()]
    scraper = WebScraper(urls)
    scraper.start()
    scraper.wait()
    data = scraper.result
    assert len(data) == 2                                   # "Got 2 responses"
    assert [d["key"] for d in data] == [u.rsplit("/", 1)[1] for u in urls]


@pytest.mark.parametrize("method", START_METHODS)
def test_example2_web_scraper_retries_with_fresh_state(api, method):
    # The second page fails once: the second life starts again from lap 0 with
    # the state of start(), so data holds each page once.
    urls = [api.url(), api.url(fail_first=1)]
    scraper = run(WebScraper(urls), method)
    data = scraper.result
    assert len(data) == 2 and [d["seq"] for d in data] == [1, 0]
    assert api.hits(urls[0]) == 2 and api.hits(urls[1]) == 2


def test_example2_web_scraper_gives_up_after_three_lives(api):
    urls = [api.url(fail_first=10)]
    scraper = run(WebScraper(urls))
    with pytest.raises(MainLoopError, match="503") as info:
        scraper.result
    assert info.value.current_lap == 0
    assert api.hits(urls[0]) == 3


# ---- 3. Progress Tracking Demo -------------------------------------------------------

class ProgressTracker(processing.Process):
    def __init__(self, total_items):
        self.total = total_items
        self.processed = 0
        self.config.num_loops = total_items

    @timesection()
    def __loop__(self):
        # Simulate work
        sktime.sleep(0.005)
        self.processed += 1

    def __result__(self):
        return {
            "completed": self.processed,
            "total": self.total,
            "avg_time": self.timers.loop.mean,
            "total_time": self.timers.loop.total_time,
        }


def test_example3_progress_tracker():
    p = ProgressTracker(10)
    p.start()
    p.wait()

    result = p.result
    assert result["completed"] == result["total"] == 10
    assert result["total_time"] >= 10 * 0.005
    assert result["avg_time"] >= 0.005
    assert result["avg_time"] == pytest.approx(result["total_time"] / 10)


# ---- 4. Worker Pool Pattern ----------------------------------------------------------

class TaskWorker(processing.Process):
    def __init__(self, worker_id, task_data):
        self.worker_id = worker_id
        self.task = task_data
        self.result_value = None
        self.config.num_loops = 1

    @timesection()
    def __loop__(self):
        # Heavy computation
        self.result_value = expensive_computation(self.task)

    def __result__(self):
        return {
            "worker": self.worker_id,
            "result": self.result_value,
            "time": self.timers.loop.most_recent,
        }


def test_example4_worker_pool():
    # Create worker pool
    tasks = [generate_task(i) for i in range(8)]
    workers = [TaskWorker(i, task) for i, task in enumerate(tasks)]

    # Start all workers (parallel execution)
    start = sktime.now()
    for w in workers:
        w.start()

    # Wait and collect results
    for w in workers:
        assert w.wait(timeout=30)

    elapsed = sktime.elapsed(start)
    results = [w.result for w in workers]

    assert isinstance(elapsed, float) and elapsed > 0
    assert [r["worker"] for r in results] == list(range(8))
    assert [r["result"] for r in results] == [expensive_computation(t) for t in tasks]
    assert all(isinstance(r["time"], float) and r["time"] > 0 for r in results)
    assert len({w.pid for w in workers}) == 8                  # eight separate processes


# ---- 5. Resilient Data Pipeline ------------------------------------------------------

class DataPipeline(Process):
    def __init__(self, source_config):
        self.source = source_config
        self.batches_processed = 0
        self.errors_recovered = 0

        self.config.join_in = 0.3  # Run for 5 minutes (shrunk)
        self.config.lives = 5  # 5 retry attempts
        self.config.timeouts.loop = 60.0  # 1 min per batch

    def __preloop__(self):
        self.batch = fetch_next_batch(self.source)

    def __loop__(self):
        process_batch(self.batch)
        self.batches_processed += 1

    def __error__(self):
        # Log error but still return partial results
        self.errors_recovered = 5 - self.config.lives
        return {
            "status": "partial",
            "batches": self.batches_processed,
            "errors": self.errors_recovered,
            "last_error": str(self.error),
        }

    def __result__(self):
        return {
            "status": "complete",
            "batches": self.batches_processed,
        }


def test_example5_pipeline_complete(api):
    pipeline = DataPipeline({"url": api.url()})
    t0 = time.monotonic()
    pipeline.start()
    pipeline.wait()
    result = pipeline.result
    assert result["status"] == "complete"
    assert result["batches"] >= 1
    assert pipeline.error is None
    assert 0.3 <= time.monotonic() - t0 < 10                  # ended by join_in


def test_example5_pipeline_recovers(api):
    # The source is down for the first two fetches: two lives are used up in
    # __preloop__, the third runs to join_in.
    url = api.url(fail_first=2)
    pipeline = run(DataPipeline({"url": url}))
    result = pipeline.result
    assert result["status"] == "complete" and result["batches"] >= 1
    assert api.hits(url) >= 3


def test_example5_pipeline_partial_when_all_lives_fail(api):
    # Every third batch is poisoned: each life processes two, then fails.
    pipeline = run(DataPipeline({"url": api.url(poison_every=3)}))
    result = pipeline.result                       # returned, not raised: __error__'s value
    assert result["status"] == "partial"
    assert result["batches"] == 2                  # the last life's fresh count
    assert result["errors"] == 4                   # __error__ runs with config.lives == 1
    assert result["last_error"].startswith("Error in __loop__ on lap 2: ValueError: poisoned batch")
    assert isinstance(pipeline.error, MainLoopError)


# ---- 6. Monitoring with Circuit Breaker ----------------------------------------------

class ServiceMonitor(processing.Process):
    def __init__(self, endpoint, join_in=0.3):
        self.endpoint = endpoint
        self.circuit = Circuit(shorts=5)  # Break after 5 failures
        self.health_checks = []
        self.config.join_in = join_in  # Monitor for 1 minute (shrunk)

    @timesection()
    def __loop__(self):
        try:
            response = requests.get(self.endpoint, timeout=5)
            self.health_checks.append({
                "time": sktime.now(),
                "status": response.status_code,
                "latency": self.timers.loop.most_recent,
            })
        except Exception as e:
            self.circuit.short()
            self.health_checks.append({
                "time": sktime.now(),
                "error": str(e),
            })

        # Stop monitoring if circuit breaks
        if self.circuit.broken:
            self.stop()

        sktime.sleep(0.005)  # Check every 2 seconds (shrunk)

    def __result__(self):
        return {
            "checks": len(self.health_checks),
            "circuit_broken": self.circuit.broken,
            "avg_latency": self.timers.loop.mean,
            "history": self.health_checks[-10:],  # Last 10 checks
        }


@pytest.mark.parametrize("method", START_METHODS)
def test_example6_circuit_breaks_after_five_shorts_and_stops(api, method):
    url = api.url(fail_first=1000, drop=1)          # the service never answers
    monitor = ServiceMonitor(url, join_in=20.0)
    t0 = time.monotonic()
    run(monitor, method)
    result = monitor.result
    assert time.monotonic() - t0 < 15               # stopped by the circuit, not by join_in
    assert result["circuit_broken"] is True
    assert result["checks"] == 5 and api.hits(url) == 5
    assert all("error" in check and "status" not in check for check in result["history"])
    assert isinstance(result["avg_latency"], float)
    times = [check["time"] for check in result["history"]]
    assert times == sorted(times)


def test_example6_circuit_survives_a_short_outage(api):
    url = api.url(fail_first=3, drop=1)             # three failures: the circuit holds
    monitor = run(ServiceMonitor(url))
    result = monitor.result
    assert result["circuit_broken"] is False
    checks, history = result["checks"], result["history"]
    assert checks == api.hits(url) >= 4
    assert len(history) == min(10, checks)          # the last 10 checks
    for k, check in enumerate(history, start=checks - len(history)):
        if k < 3:
            assert set(check) == {"time", "error"}, check
        else:
            assert check["status"] == 200 and isinstance(check["latency"], float), check


def test_example6_healthy_service(api):
    # A healthy service: every check records a status and a latency; none is an error.
    kind, result = outcome(lambda: run(ServiceMonitor(api.url(), join_in=0.03)).result)
    assert kind == "ok", result
    assert result["circuit_broken"] is False
    assert 1 <= result["checks"] == len(result["history"])     # history holds every check
    assert all(c.get("status") == 200 and "latency" in c for c in result["history"]), \
        result["history"]


# =====================================================================================
# §11 Function-by-function examples
# =====================================================================================

# ---- Creating a Process --------------------------------------------------------------

def raw_worker(serialized_data, result_queue):  # the "without processing" version
    try:
        data = pickle.loads(serialized_data)
        result = {"value": sum(data["items"])}
        result_queue.put(pickle.dumps(result))
    except Exception as e:
        result_queue.put(pickle.dumps(e))


class MyWorker(Process):  # 2
    def __init__(self, items):  # 3
        self.items = items
        self.config.num_loops = 1  # 4

    def __loop__(self):  # 5
        self.value = sum(self.items)

    def __result__(self):  # 6
        return {"value": self.value}


@pytest.mark.parametrize("method", START_METHODS)
def test_s11_creating_a_process(method):
    p = MyWorker([1, 2, 3])  # 7
    p.config.start_method = method
    p.start()  # 8
    p.wait()  # 9
    result = p.result  # 10 {"value": 6}
    assert result == {"value": 6}


def test_s11_creating_a_process_matches_raw_multiprocessing():
    data = {"items": [1, 2, 3]}
    serialized = pickle.dumps(data)
    ctx = multiprocessing.get_context("fork")
    result_queue = ctx.Queue()
    process = ctx.Process(target=raw_worker, args=(serialized, result_queue))
    process.start()
    serialized_result = result_queue.get(timeout=30)
    process.join(timeout=30)
    result_queue.close()
    result_queue.join_thread()
    result = pickle.loads(serialized_result)
    assert not isinstance(result, Exception)
    assert result == run(MyWorker(data["items"])).result == {"value": 6}


# ---- Adding Timing -------------------------------------------------------------------

class TimedWorker(Process):
    def __init__(self):
        self.config.num_loops = 100

    @timesection()  # 1
    def __loop__(self):
        do_work()

    def __result__(self):
        # Then access statistics
        return (self.timers.loop.mean,  # Automatic!
                self.timers.loop.min,
                self.timers.loop.max)


def test_s11_adding_timing():
    times = []                                        # the hand-made version
    for i in range(100):
        start = time.time()
        do_work()
        times.append(time.time() - start)
    assert min(times) <= sum(times) / len(times) <= max(times)

    p = run(TimedWorker())
    mean, lo, hi = p.result
    assert all(isinstance(x, float) for x in (mean, lo, hi)) and 0 <= lo <= mean <= hi
    assert p.timers.loop.num_times == 100


# ---- Retry Logic ---------------------------------------------------------------------

class RetryWorker(Process):

    def __init__(self):

        # just edit config.lives
        self.config.lives = 3  # 1
        self.config.num_loops = 1
        self.attempts_seen = []

    def __loop__(self):
        self.attempts_seen.append(self.config.lives)
        if self.config.lives > 1:                     # fails on the first two attempts
            raise OSError(f"transient failure with {self.config.lives} lives left")

    def __result__(self):
        return self.attempts_seen


def test_s11_retry_logic():
    calls = []

    def risky_operation():
        calls.append(1)
        if len(calls) < 3:
            raise OSError("transient")
        return "ok"

    max_retries = 3                                   # the hand-made version
    for attempt in range(max_retries):
        try:
            result = risky_operation()
            break
        except Exception:
            if attempt == max_retries - 1:
                raise
            time.sleep(0.001)
    assert result == "ok" and len(calls) == 3

    p = RetryWorker()
    assert p.config.lives == 3
    run(p)
    assert p.result == [1]          # the successful third life started from fresh state


# ---- Multiple Parallel Workers -------------------------------------------------------

def raw_parallel_worker(task_id, result_queue):
    result = do_task(task_id)
    result_queue.put((task_id, result))


class Worker(Process):

    def __init__(self, task_id):
        self.task_id = task_id
        self.config.num_loops = 1

    def __loop__(self):
        self.result = do_task(self.task_id)

    def __result__(self):
        return (self.task_id, self.result)


def _parallel_workers_example():
    # simple, easy to read for loops
    workers = [Worker(i) for i in range(4)]  # 1

    for w in workers:  # 2
        w.start()  # 3

    for w in workers:  # 4
        w.wait()  # 5

    results = {tid: res for tid, res in (w.result for w in workers)}  # 6
    return results


def _raw_parallel_workers():
    ctx = multiprocessing.get_context("fork")
    result_queue = ctx.Queue()
    processes = []
    for i in range(4):
        p = ctx.Process(target=raw_parallel_worker, args=(i, result_queue))
        p.start()
        processes.append(p)
    results = dict(result_queue.get(timeout=30) for _ in range(4))
    for p in processes:
        p.join(timeout=30)
    result_queue.close()
    result_queue.join_thread()
    return results


def test_s11_multiple_parallel_workers():
    raw = _raw_parallel_workers()
    assert raw == {tid: do_task(tid) for tid in range(4)}
    kind, results = outcome(_parallel_workers_example)
    assert kind == "ok", results
    assert results == raw                        # results for every tid


# =====================================================================================
# No "__main__ limitation" (§12): local classes, helpers and closures work everywhere
# =====================================================================================

@pytest.mark.parametrize("method", START_METHODS)
def test_local_class_with_helper_and_closure(method):
    offset = 100
    scale = lambda x: x * 3                      # noqa: E731 - a lambda, on purpose

    def add_offset(x):                           # a closure over `offset`
        return x + offset

    class LocalProcessor(Process):
        def __init__(self, items):
            self.items = items
            self.out = []
            self.config.num_loops = len(items)

        def __loop__(self):
            self.out.append(self._helper(self.items[self.current_lap]))

        def _helper(self, x):
            return add_offset(scale(x))

        def __result__(self):
            return {"out": self.out, "hello": self._hello(), "pid": os.getpid()}

        def _hello(self):
            return "hello"

    p = run(LocalProcessor([1, 2, 3]), method)
    result = p.result
    assert result["out"] == [103, 106, 109] and result["hello"] == "hello"
    assert result["pid"] == p.pid != os.getpid()


_MAIN_SCRIPT = textwrap.dedent("""
    import json, os
    from shmproc.processing import Process

    class MyProcessor(Process):
        def __init__(self):
            self.config.num_loops = 2
            self.seen = []

        def __loop__(self):
            self.seen.append(self._helper())    # a helper method of a __main__ class

        def _helper(self):
            return "hello"

        def __result__(self):
            return self.seen

    if __name__ == "__main__":
        out = {}
        for method in ("fork", "forkserver", "spawn"):
            p = MyProcessor()
            p.config.start_method = method
            p.start()
            assert p.wait(timeout=30)
            out[method] = p.result
        print(json.dumps(out))
""")


def test_classes_defined_in_main_work_under_every_start_method(tmp_path):
    script = tmp_path / "main.py"
    script.write_text(_MAIN_SCRIPT)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == {
        m: ["hello", "hello"] for m in START_METHODS}


# =====================================================================================
# §14 Import patterns
# =====================================================================================

class Minimal(Process):
    def __loop__(self):
        pass


class MinimalTimed(processing.Process):
    @timesection()
    def __loop__(self):
        pass


@pytest.mark.parametrize("cls", [Minimal, MinimalTimed])
def test_s14_import_patterns(cls):
    p = cls()
    p.start()
    deadline = time.monotonic() + 10
    while p.current_lap < 5 and time.monotonic() < deadline:
        time.sleep(0.001)
    p.stop()
    assert p.wait(timeout=30)
    assert p.result is None and p.current_lap >= 5
    assert (p.timers is not None) == (cls is MinimalTimed)
