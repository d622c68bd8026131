package interop

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

func TestCallCounterTracksActiveCalls(t *testing.T) {
	var c CallCounter
	info := &grpc.UnaryServerInfo{FullMethod: "/s/M"}
	var during CallStats
	_, err := c.UnaryInterceptor(t.Context(), nil, info, func(context.Context, any) (any, error) {
		during = c.Snapshot()
		return nil, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if during.Total != 1 || during.Active["/s/M"] != 1 {
		t.Errorf("inside the handler: %+v, want 1 call, 1 active", during)
	}
	after := c.Snapshot()
	if after.Total != 1 || after.Methods["/s/M"] != 1 || after.ActiveTotal() != 0 {
		t.Errorf("after the handler: %+v, want 1 call, none active", after)
	}
}

// A stream left open on a server (what a proxy that loses a cancellation
// leaves behind) makes WaitIdle fail, naming the method; once the stream
// is cancelled it passes.
func TestWaitIdleSeesAnOpenStream(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := BuildServer(t.Context(), root, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := StartServer(t.Context(), testLogger(t), bin, "server-open-stream")
	if err != nil {
		t.Fatal(err)
	}
	stopOnCleanup(t, srv.Process)

	conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithNoProxy())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stream, err := testgrpc.NewTestServiceClient(conn).FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A message makes sure the call reached the handler.
	if err := stream.Send(&testgrpc.StreamingOutputCallRequest{ResponseParameters: []*testgrpc.ResponseParameters{{Size: 1}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	servers := []*Server{srv}
	err = WaitIdle(t.Context(), servers, 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), testgrpc.TestService_FullDuplexCall_FullMethodName) {
		t.Fatalf("WaitIdle with a stream open = %v, want an error naming FullDuplexCall", err)
	}
	cancel()
	if err := WaitIdle(t.Context(), servers, settleBound); err != nil {
		t.Fatalf("WaitIdle after cancelling the stream: %v", err)
	}
}
