package proxy_test

import (
	"context"
	"io"
	"net/http"
	"testing"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/zonelb/zonelb/proxy"
)

// The forwarding hot path, end to end on loopback: client, proxy and
// backend run in this process, so ns/op and allocs/op cover all three; a
// change in the proxy shows as a change here (compare with benchstat).
// The proxy's own cost beside real peers is `make bench`.

// BenchmarkForwardH2 forwards h2c GETs with a 1 KiB response, over one
// client connection.
func BenchmarkForwardH2(b *testing.B) {
	body := make([]byte, 1024)
	h2 := startRawH2Backend(b, func(w http.ResponseWriter, r *http.Request) { w.Write(body) })
	_, addr := startProxy(b, proxy.NewRoundRobin(endpointsOf(h2)))
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true) // h2c with prior knowledge, as gRPC clients speak
	client := &http.Client{Transport: &http.Transport{Protocols: &protos}}
	url := "http://" + addr + "/"
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		resp, err := client.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// BenchmarkForwardGRPCUnary forwards gRPC unary calls with 1 KiB each way,
// over one client connection.
func BenchmarkForwardGRPCUnary(b *testing.B) {
	be := startBackend(b, "a")
	_, addr := startProxy(b, proxy.NewRoundRobin(endpointsOf(be)))
	client := dial(b, addr)
	req := &testgrpc.SimpleRequest{ResponseSize: 1024, Payload: &testgrpc.Payload{Body: make([]byte, 1024)}}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := client.UnaryCall(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
}
