"""The stdlib's initializer pattern with functions from the __main__ script (issue 12).

    _model = None
    def init(path): global _model; _model = load(path)
    def predict(x): return _model(x)
    Pool(initializer=init, initargs=(...,)).map(predict, xs)

multiprocessing runs this as written (the worker's __main__ holds both
functions).  shmproc ships __main__ functions by value (so lambdas and
closures work under every start method), and now rebuilds them in one
namespace per worker, so the initializer's globals reach the tasks.
"""
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent('''
    import sys
    import shmproc

    _model = None
    OFFSET = 1

    def init(scale):
        global _model
        _model = scale

    def predict(x):
        return _model * x + OFFSET + helper()

    def helper():
        return 0

    def state(_):
        return _model

    if __name__ == "__main__":
        method = sys.argv[1]
        with shmproc.Pool(2, initializer=init, initargs=(10,), start_method=method) as pool:
            assert pool.map(predict, range(4)) == [1, 11, 21, 31], pool.map(predict, range(4))
            assert pool.submit(lambda x: _model + x, 1).result() == 11   # a lambda too
            assert set(pool.map(state, range(8), chunksize=1)) == {10}
            OFFSET = 100                  # as the stdlib: the workers keep what they have...
            assert pool.map(predict, [1]) == [11]
            # ...until a function that uses it is sent: the parent's newer value comes with it
            assert pool.map(lambda _: OFFSET, [0, 1], chunksize=1) == [100, 100]
        with shmproc.Executor(2, initializer=init, initargs=(3,)) as ex:
            assert list(ex.map(predict, [1, 2])) == [103, 106]
        print("ok")
''')


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_initializer_state_reaches_tasks_from_main(tmp_path, method):
    """multiprocessing.Pool(initializer=init): the globals init sets are the
    ones the tasks read, with every function defined in the main script."""
    script = tmp_path / "main_script.py"
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(script), method], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
