"""Shop visitors and a few testers, written the way Locust's own examples are (it imports
nothing from the harness). A tester's requests carry ``end-user: tester``, the header the
mesh routes to the canary version; a visitor's carry none.

Used by ../header-routing-isolates-fault.yaml (``load.locustfile``).
"""

import random

from locust import FastHttpUser, between, task


class Visitor(FastHttpUser):
    weight = 3
    wait_time = between(0.05, 0.15)

    @task
    def view_product(self):
        self.client.get(f"/product/{random.randint(1, 100)}", name="visitor")


class Tester(FastHttpUser):
    weight = 1
    wait_time = between(0.05, 0.15)

    @task
    def view_product(self):
        self.client.get(
            f"/product/{random.randint(1, 100)}", name="tester", headers={"end-user": "tester"}
        )
