"""A locustfile written the way Locust's own examples are: it knows nothing of the harness.

Two kinds of request, kept apart by their ``name=``: a product page and a product's
reviews (the shop answers any path under /product/).
"""

import random

from locust import HttpUser, between, task


class ShopVisitor(HttpUser):
    wait_time = between(0.05, 0.15)

    @task(3)
    def view_product(self):
        product_id = random.randint(1, 100)
        self.client.get(f"/product/{product_id}", name="product")

    @task(1)
    def read_reviews(self):
        product_id = random.randint(1, 100)
        self.client.get(f"/product/{product_id}/reviews", name="reviews")
