"""The anchor of ``bench/load_lockstep.py``: the pacing the harness used before open loop.

Closed-loop users paced with Locust's ``constant_throughput`` (each user waits for its
response, then for the rest of its period), staggered at the start like the old harness
locustfile. Writes each request's actual start to ``BENCH_STARTS_PATH``, one per line.
"""

import itertools
import os
import time

import gevent
from locust import FastHttpUser, constant_throughput, events, task

RATE = float(os.environ["BENCH_RATE"])
USERS = int(os.environ["BENCH_USERS"])
_numbers = itertools.count()
_starts: list[str] = []


@events.request.add_listener
def record(start_time: float, **_: object) -> None:
    _starts.append(f"{start_time!r}\n")


@events.quitting.add_listener
def write(**_: object) -> None:
    with open(os.environ["BENCH_STARTS_PATH"], "w") as out:
        out.writelines(_starts)


class PacedUser(FastHttpUser):
    wait_time = constant_throughput(RATE / USERS)
    network_timeout = 10.0
    connection_timeout = 10.0

    def on_start(self) -> None:
        gevent.sleep((next(_numbers) % USERS) / RATE)
        self._cp_last_run = time.perf_counter()

    @task
    def get_item(self) -> None:
        self.client.get("/product/1")
