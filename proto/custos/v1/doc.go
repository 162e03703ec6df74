// Package custosv1 holds the generated protobuf messages and gRPC services
// of custos's public API (proto/custos/v1/*.proto; regenerate with
// `make proto`). This file is written by hand; the rest is generated.
package custosv1
