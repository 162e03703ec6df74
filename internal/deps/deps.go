// Package deps pins dependencies while packages that use them are written.
// Temporary: removed once every dependency has a real importer.
package deps

import (
	_ "github.com/ThalesGroup/crypto11"
	_ "github.com/hashicorp/go-hclog"
	_ "github.com/hashicorp/raft"
	_ "github.com/hashicorp/raft-wal"
	_ "github.com/miekg/pkcs11"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "go.etcd.io/bbolt"
	_ "google.golang.org/grpc/health"
	_ "google.golang.org/grpc/reflection"
)
