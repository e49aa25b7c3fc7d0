// The sandbox ("pause") image's only program: it holds a pod's namespaces open, doing
// nothing, until the runtime stops the sandbox with SIGTERM or SIGINT; then it exits 0.
// Built statically (CGO_ENABLED=0) by harness/cluster/images.py.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
