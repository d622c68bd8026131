// Package interop runs the grpc-go interop suite (google.golang.org/grpc
// v1.85.0 client and server) through the zonelb proxy.
//
// It builds the binaries (the upstream interop client, a loopback-only
// interop server from ./server, and cmd/zonelb), starts them as child
// processes, runs interop cases and reads how many calls each server
// handled. Tests in this package use it for a few rounds; `make interop`
// runs the same test for 100.
//
// It must not listen on or connect to anything but loopback, and it must
// not leave processes behind: every process it starts is stopped by its own
// pid through Process.Stop, which callers register with t.Cleanup.
// It is test tooling: product code must not import it.
package interop
