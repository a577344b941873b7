//go:build tools

// The programs scripts/build builds from this module, pinned by go.mod and go.sum: etcd and
// its two command-line tools, for the release-shaped tree of the lab's release test.
package tools

import (
	_ "go.etcd.io/etcd/etcdctl/v3"
	_ "go.etcd.io/etcd/etcdutl/v3"
	_ "go.etcd.io/etcd/server/v3"
)
