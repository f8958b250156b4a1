"""The distributed build's client side: a bounded window of tasks, results in order."""

import concurrent.futures
import itertools
import random
import threading
import time

import pytest

from ciml.dataset.distributed import ClusterStream


class _Cluster:
    """Threads standing in for Dask workers; futures finish out of order."""

    def __init__(self, threads=2):
        self.pool = concurrent.futures.ThreadPoolExecutor(8)
        self._threads = threads
        self.keys = itertools.count()
        self.lock = threading.Lock()
        self.in_flight = self.most_in_flight = self.submitted = 0

    def threads(self):
        return self._threads

    def submit(self, fn, *args):
        with self.lock:
            self.submitted += 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)

        def run():
            time.sleep(random.random() / 500)
            try:
                return fn(*args)
            finally:
                with self.lock:
                    self.in_flight -= 1

        future = self.pool.submit(run)
        future.key = next(self.keys)
        return future


def test_results_come_back_in_order_with_a_bounded_window():
    random.seed(3)
    cluster = _Cluster(threads=2)
    stream = ClusterStream(build=None, cluster=cluster)
    taken = []

    def tasks():
        for i in range(300):
            taken.append(i)
            # Never more than the window ahead of what was handed back.
            assert i - len(got) <= stream._window()
            yield (1, lambda x: x * x, i)

    got = []
    for result in stream._results(tasks()):
        got.append(result)
    assert got == [i * i for i in range(300)]
    assert cluster.submitted == 300
    assert cluster.most_in_flight <= stream._window() == 8


def test_a_failing_task_stops_the_results():
    cluster = _Cluster()
    stream = ClusterStream(build=None, cluster=cluster)

    def boom(i):
        if i == 5:
            raise RuntimeError("worker lost")
        return i

    with pytest.raises(RuntimeError, match="worker lost"):
        list(stream._results((1, boom, i) for i in range(50)))
