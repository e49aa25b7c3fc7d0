"""A stand-in for `go` in the installer's unit tests, where a real build takes minutes.

It understands just what harness.toolchain runs: `env GOVERSION`, `mod download -json`,
`install PKG@VER...` and `build -o DIR/ PKG...`. Each call is appended to $FAKE_GO_CALLS;
$FAKE_GO_VERSION sets the version it reports; $FAKE_GO_FAIL=build|install makes that fail.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

KUBE_GO_MOD = """module k8s.io/kubernetes

go 1.26.0

godebug default=go1.26

require (
\tk8s.io/api v0.0.0
\tk8s.io/apiserver v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/apiserver => ./staging/src/k8s.io/apiserver
)
"""


def main(args: list[str]) -> int:
    calls = os.environ.get("FAKE_GO_CALLS")
    if calls:
        with open(calls, "a") as out:
            out.write(json.dumps({"args": args, "cwd": os.getcwd()}) + "\n")
    fail = os.environ.get("FAKE_GO_FAIL")
    if args == ["env", "GOVERSION"]:
        print(os.environ.get("FAKE_GO_VERSION", "go1.26.8"))
        return 0
    if args[:3] == ["mod", "download", "-json"]:
        module, version = args[3].split("@")
        root = Path(os.environ["FAKE_GO_MODCACHE"]) / f"{module}@{version}"
        if module == "istio.io/istio":
            files = {
                "tools/packaging/common/envoy_bootstrap.json": '{"node": {}}\n',
                "manifests/charts/base/files/crd-all.gen.yaml": "kind: CustomResourceDefinition\n",
                "manifests/charts/base/Chart.yaml": "name: base\n",
                "manifests/charts/istio-control/istio-discovery/Chart.yaml": "name: istiod\n",
                "manifests/charts/gateway/Chart.yaml": "name: gateway\n",
                "go.mod": "module istio.io/istio\n",
            }
        else:
            files = {"go.mod": KUBE_GO_MOD}
        files["version.info"] = json.dumps({"Version": version, "Time": "2026-10-27T12:01:04Z"})
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        print(
            json.dumps(
                {
                    "Path": module,
                    "Version": version,
                    "Dir": str(root),
                    "GoMod": str(root / "go.mod"),
                    "Info": str(root / "version.info"),
                }
            )
        )
        return 0
    if args[0] == "install":
        if fail == "install":
            print("pilot/cmd/pilot-agent/main.go:1: syntax error", file=sys.stderr)
            return 1
        for package in args[1:]:
            name = package.split("@")[0].rsplit("/", 1)[-1]
            Path(os.environ["GOBIN"], name).write_text(f"fake {package}\n")
        return 0
    if args[0] == "build":
        if not Path("go.mod").is_file():
            print("go: go.mod file not found", file=sys.stderr)
            return 1
        if fail == "build":
            print("cmd/kube-apiserver/apiserver.go:7: undefined: app", file=sys.stderr)
            return 1
        flags = [arg for arg in args[1:] if arg.startswith("-ldflags=")]
        out = Path(args[args.index("-o") + 1])
        for package in args[args.index("-o") + 2 :]:
            (out / package.rsplit("/", 1)[-1]).write_text(f"fake {package} {flags}\n")
        return 0
    print(f"fake go: unsupported arguments {args}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
