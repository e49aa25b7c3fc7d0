"""``KubePlatform().deploy(scenario, run_dir)``: pin the kube context (the guard refuses it
with zero API calls unless it is kind, harness-made or allow-listed), then deploy the run
into a namespace of its own and delete everything labelled with the run's id at the end.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from harness.journal import KubeRunRecord
from harness.kube.render import run_namespace
from harness.platforms.kube.client import KubeClient
from harness.platforms.kube.context import default_kubeconfig, harness_state, pin_context
from harness.platforms.kube.deployment import KubeDeployment, KubeTarget, deployed
from harness.platforms.kube.objects import KubeImages
from harness.platforms.kube.options import DEFAULT_INGRESS_URL, KubeOptions
from harness.runlock import runner_marker
from harness.scenario.models import Scenario

__all__ = ["KubePlatform"]


def cluster_images() -> KubeImages:
    """The refs of the images ``harness cluster up`` builds and loads (content-addressed:
    the same inputs give the same tags, and a build with unchanged inputs is a cache hit)."""
    from harness.cluster.images import build_images, with_optional_images

    built = build_images(names=with_optional_images(("app", "proxyv2")))
    toxiproxy = built.get("toxiproxy")
    return KubeImages(
        app=built["app"].ref,
        proxy=built["proxyv2"].ref,
        toxiproxy=None if toxiproxy is None else toxiproxy.ref,
    )


def default_kubeconfig_for_runs() -> Path | None:
    """kubectl's kubeconfig (``$KUBECONFIG``, ``~/.kube/config``) when there is one; else the
    one ``harness cluster up`` wrote (``--local``'s first, then kind's: neither touches
    ``~/.kube/config``); else None (the guard's error then names the missing file)."""
    if os.environ.get("KUBECONFIG") or default_kubeconfig().exists():
        return None
    from harness.cluster.state import state_directory

    for name in ("harness-local", "kind-harness"):
        made = state_directory(name) / "kubeconfig"
        if made.exists():
            return made
    return None


class KubePlatform:
    """``with KubePlatform(options).deploy(scenario, run_dir) as deployment: ...``"""

    name = "kube"

    def __init__(
        self,
        options: KubeOptions,
        *,
        seed: int | None = None,
        log: Callable[[str], None] = lambda _: None,
        images: Callable[[], KubeImages] = cluster_images,
        record: Callable[[KubeRunRecord], None] = lambda _: None,
    ) -> None:
        """``record``: called with where the run will write, before its first write (the
        runner puts it in the journal, for ``harness cleanup``)."""
        self.options = options
        self.seed = seed
        self.log = log
        self.images = images
        self.record = record

    @contextlib.contextmanager
    def deploy(self, scenario: Scenario, run_dir: Path) -> Iterator[KubeDeployment]:
        context = pin_context(
            self.options.kubeconfig or default_kubeconfig_for_runs(),
            context=self.options.context,
            allow=self.options.allow_contexts,
        )
        self.log(f"kube: {context.describe()}")
        ingress_url = self.options.ingress_url
        port = harness_state(context).get("ingress_port")
        if ingress_url == DEFAULT_INGRESS_URL and isinstance(port, int):
            ingress_url = f"http://127.0.0.1:{port}"  # where `cluster up --local` forwards it
        run_id = run_dir.name
        self.record(context.record(run_namespace(run_id)))
        client = KubeClient(context, run_id, runner=runner_marker(os.getpid()))
        target = KubeTarget(
            api=client.api,
            context=context.name,
            ingress_url=ingress_url,
            images=self.images(),
            apply=client.apply,
            delete_namespace=lambda _namespace: _delete(client, self.log),
        )
        try:
            with deployed(scenario, run_dir, run_id, target, self.seed, self.log) as deployment:
                yield deployment
        finally:
            client.close()


def _delete(client: KubeClient, log: Callable[[str], None]) -> None:
    report = client.delete_owned()
    log(f"kube: deleted {', '.join(report.namespaces) or 'no namespace'}")
