"""The anchor of ``bench/load_driver.py``: raw Locust, nothing of the harness.

One ``FastHttpUser`` task with no wait (each user sends its next request when the previous
one answered) and no per-request sampling: the most one Locust process can push through.
"""

from locust import FastHttpUser, constant, task


class RawFastHttpUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def get_item(self) -> None:
        self.client.get("/product/1")
