package interop

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"
)

// Server is a running interop server process (./server).
type Server struct {
	*Process
	// Addr is the gRPC address, 127.0.0.1:PORT.
	Addr string
	// StatsAddr serves GET /calls with CallStats.
	StatsAddr string
}

// readyTimeout bounds how long a child may take to come up.
const readyTimeout = 20 * time.Second

// StartServer starts the interop server binary bin on loopback ports it
// picks itself and waits for its ready line. The caller must Stop it.
func StartServer(ctx context.Context, logger *slog.Logger, bin, name string) (*Server, error) {
	first := make(chan string, 1)
	p, err := startProcess(logger, name, bin, []string{"--name", name}, first)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	line, err := waitLine(ctx, p, first)
	if err != nil {
		_ = p.Kill()
		return nil, err
	}
	var ready struct{ GRPC, Stats string }
	if err := json.Unmarshal([]byte(line), &ready); err != nil || ready.GRPC == "" || ready.Stats == "" {
		_ = p.Kill()
		return nil, fmt.Errorf("%s: unexpected ready line %q (%v)", name, line, err)
	}
	return &Server{Process: p, Addr: ready.GRPC, StatsAddr: ready.Stats}, nil
}

// Calls asks the server how many calls reached its handlers.
func (s *Server) Calls(ctx context.Context) (CallStats, error) {
	var st CallStats
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.StatsAddr+"/calls", nil)
	if err != nil {
		return st, fmt.Errorf("ask %s for its calls: %w", s.Name, err)
	}
	// A transport of its own: no proxy from the environment, loopback only.
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return st, fmt.Errorf("ask %s for its calls: %w", s.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("ask %s for its calls: HTTP %s", s.Name, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("decode %s's calls: %w", s.Name, err)
	}
	return st, nil
}
