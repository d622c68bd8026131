package backend

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

func startFleet(t *testing.T, n int) *Fleet {
	t.Helper()
	f, err := Start(slog.New(slog.DiscardHandler), "127.0.0.1", n)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(f.Close)
	return f
}

func TestStartRefusesNonLoopbackHost(t *testing.T) {
	if _, err := Start(slog.New(slog.DiscardHandler), "0.0.0.0", 1); err == nil {
		t.Fatal("Start on 0.0.0.0 succeeded; backends must stay on loopback")
	}
}

func TestUnaryCallReturnsRequestedSizeAndCountsPerInstance(t *testing.T) {
	f := startFleet(t, 2)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn, err := grpc.NewClient(f.Addrs().GRPC[1], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	client := testgrpc.NewTestServiceClient(conn)
	for range 3 {
		resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseSize: 1024, Payload: &testgrpc.Payload{Body: make([]byte, 1024)}})
		if err != nil {
			t.Fatalf("UnaryCall: %v", err)
		}
		if got := len(resp.GetPayload().GetBody()); got != 1024 {
			t.Fatalf("payload size = %d, want 1024", got)
		}
	}
	if _, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseSize: maxPayload + 1}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("oversized response_size: got %v, want InvalidArgument", err)
	}
	got := f.Counts().GRPC
	if got[0] != 0 || got[1] != 4 {
		t.Fatalf("gRPC counts = %v, want [0 4]", got)
	}
}

func TestHTTPServesH2CAndHTTP1AndCounts(t *testing.T) {
	f := startFleet(t, 2)
	var h2c http.Protocols
	h2c.SetUnencryptedHTTP2(true)
	var h1 http.Protocols
	h1.SetHTTP1(true)
	for _, tc := range []struct {
		name      string
		protocols *http.Protocols
		wantMajor int
	}{{"h2c", &h2c, 2}, {"http1", &h1, 1}} {
		t.Run(tc.name, func(t *testing.T) {
			client := &http.Client{Transport: &http.Transport{Protocols: tc.protocols}, Timeout: 10 * time.Second}
			defer client.CloseIdleConnections()
			resp, err := client.Get("http://" + f.Addrs().HTTP[0] + "/")
			if err != nil {
				t.Fatalf("GET: %v", err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("read body: %v", err)
			}
			if resp.StatusCode != http.StatusOK || len(body) != HTTPBodySize || resp.ProtoMajor != tc.wantMajor {
				t.Fatalf("got status %d, %d bytes, HTTP/%d; want 200, %d bytes, HTTP/%d",
					resp.StatusCode, len(body), resp.ProtoMajor, HTTPBodySize, tc.wantMajor)
			}
		})
	}
	if got := f.Counts().HTTP; got[0] != 2 || got[1] != 0 {
		t.Fatalf("HTTP counts = %v, want [2 0]", got)
	}
}

func TestAdminReportsCounts(t *testing.T) {
	f := startFleet(t, 3)
	resp, err := http.Get("http://" + f.Addrs().Admin + "/counts")
	if err != nil {
		t.Fatalf("GET /counts: %v", err)
	}
	defer resp.Body.Close()
	var c Counts
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		t.Fatalf("decode counts: %v", err)
	}
	if len(c.GRPC) != 3 || len(c.HTTP) != 3 {
		t.Fatalf("counts = %+v, want 3 entries each", c)
	}
}
