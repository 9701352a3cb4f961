"""What test_submit_direct.py's workers run: a light module, so that a
spawn worker imports only this (and shmproc), not pytest and the test file.
test_submit_direct.py imports every name from here."""
import os
import time

from shmproc.processing import Process


def square(x):
    return x * x


def nap(s):
    time.sleep(s)
    return s


def die_if(flag, marker=None):
    """Ends its worker when `flag` is set (only the first time, if a marker
    file is given: a retry then succeeds)."""
    if flag:
        if marker is None or not os.path.exists(marker):
            if marker is not None:
                open(marker, "w").close()
            os._exit(3)
    return "alive"


class Unpicklable:
    def __reduce__(self):
        raise TypeError("no pickling for this one")


class Tells(Process):
    def __init__(self, n):
        self.n = n
        self.config.num_loops = 1

    def __loop__(self):
        for i in range(self.n):
            self.tell(i)

    def __result__(self):
        return "told"
