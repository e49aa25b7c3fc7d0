"""A shop visitor, written the way Locust's own examples are (it imports nothing from the
harness): two kinds of request, kept apart in the verdicts by their ``name=``.

A copy of scenarios/locustfiles/shop_visitor.py for the unit and load tests.
"""

import random

from locust import HttpUser, between, task


class ShopVisitor(HttpUser):
    wait_time = between(0.05, 0.15)

    @task(3)
    def view_product(self):
        self.client.get(f"/product/{random.randint(1, 100)}", name="product")

    @task(1)
    def view_cart(self):
        self.client.get(f"/cart/{random.randint(1, 100)}", name="cart")
