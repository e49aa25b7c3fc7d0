# The sample app's image for the kind path (`harness cluster up` runs `docker build` where a
# Docker daemon runs, then `kind load`s it). Without Docker (`cluster up --local`), the
# harness builds an equivalent, smaller image from this host's files instead:
# harness/cluster/images.py.
FROM python:3.11-slim

# nft for partition faults: the pods' helper container runs it in the pod's network
# namespace (harness/platforms/kube/processes.py).
RUN apt-get update && apt-get install -y --no-install-recommends nftables \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY harness ./harness
# The whole package with its dependencies: the app itself needs only aiohttp, but the
# package's import path is the same as in every other run of the harness.
RUN pip install --no-cache-dir . && rm -rf /src

WORKDIR /
# An unprivileged user, as the locally built image has it.
USER 65532:65532
ENTRYPOINT ["python3", "-m", "harness.app.service"]
