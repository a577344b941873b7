//go:build tools

// The programs scripts/build builds from this module, pinned by go.mod and go.sum.
package tools

import (
	_ "sigs.k8s.io/cri-tools/cmd/crictl"
)
