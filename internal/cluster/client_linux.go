package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/zonelb/zonelb/internal/netlab"
)

// Client is a workload running in a client pod.
type Client struct {
	Pod *netlab.Pod
	h   *helperProc
}

// StartClient starts w in pod; calls begin at once.
func (c *Cluster) StartClient(ctx context.Context, pod *netlab.Pod, w Workload) (*Client, error) {
	h, err := startHelper(ctx, pod, "client "+pod.Name, roleClient,
		clientArgs{Workload: w, Self: pod.IP.String()}, c.logFile(pod.Name))
	if err != nil {
		return nil, err
	}
	if err := h.send("go"); err != nil {
		h.Kill()
		return nil, err
	}
	return &Client{Pod: pod, h: h}, nil
}

// Snapshot returns what the client saw since its last snapshot (or start).
func (cl *Client) Snapshot(ctx context.Context) (Window, error) {
	var msg clientMsg
	if err := cl.h.request(ctx, "snap", &msg); err != nil {
		return Window{}, err
	}
	if msg.Window == nil {
		return Window{}, fmt.Errorf("%s: no window in answer", cl.h.name)
	}
	return *msg.Window, nil
}

// Stop ends the calls, waits for those in flight and returns the last
// window.
func (cl *Client) Stop(ctx context.Context) (Window, error) {
	var msg clientMsg
	err := cl.h.request(ctx, "stop", &msg)
	// The client exits after its last window; make sure it is gone.
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if werr := cl.h.Wait(wctx); werr != nil {
		cl.h.Kill()
		err = errors.Join(err, werr)
	}
	if err != nil {
		return Window{}, err
	}
	if msg.Window == nil {
		return Window{}, fmt.Errorf("%s: no window in answer", cl.h.name)
	}
	return *msg.Window, nil
}

// Clients is a workload running in several client pods.
type Clients []*Client

// StartClients starts w in every client pod.
func (c *Cluster) StartClients(ctx context.Context, w Workload) (Clients, error) {
	var cs Clients
	for _, pod := range c.Clients {
		cl, err := c.StartClient(ctx, pod, w)
		if err != nil {
			cs.Stop(ctx)
			return nil, err
		}
		cs = append(cs, cl)
	}
	return cs, nil
}

// Snapshot merges the clients' windows since their last snapshot.
func (cs Clients) Snapshot(ctx context.Context) (Window, error) {
	var ws []Window
	for _, cl := range cs {
		w, err := cl.Snapshot(ctx)
		if err != nil {
			return Window{}, err
		}
		ws = append(ws, w)
	}
	return Merge(ws...), nil
}

// Stop stops every client and merges their last windows.
func (cs Clients) Stop(ctx context.Context) (Window, error) {
	var ws []Window
	var errs []error
	for _, cl := range cs {
		w, err := cl.Stop(ctx)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ws = append(ws, w)
	}
	return Merge(ws...), errors.Join(errs...)
}
