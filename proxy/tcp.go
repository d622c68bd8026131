package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/zonelb/zonelb/zone"
)

// relayTCP connects c to a picked endpoint and copies bytes both ways until
// both directions are closed. A failed connect is retried once on another
// endpoint: nothing was sent yet.
func (p *Proxy) relayTCP(c *sniffedConn) {
	p.mu.Lock()
	if p.shutdown.Load() {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.tcpConns[c] = struct{}{}
	p.tcpWG.Add(1)
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.tcpConns, c)
		p.mu.Unlock()
		c.Close()
		p.tcpWG.Done()
	}()

	dialer := p.cfg.dialer()
	var avoid netip.AddrPort
	for attempt := 0; attempt < 2; attempt++ {
		picked, err := c.route.Picker.Pick(avoid)
		if err != nil {
			p.log.Warn("opaque TCP: no endpoint", "service", c.route.Service, "err", err)
			return
		}
		start := p.cfg.Now()
		up, err := dialer.DialContext(context.Background(), "tcp", picked.Endpoint.Addr.String())
		if err != nil {
			picked.Done(zone.Result{Outcome: zone.NotReached})
			avoid = picked.Endpoint.Addr
			p.log.Debug("opaque TCP: connect failed", "endpoint", avoid.String(), "err", err)
			continue
		}
		connect := p.cfg.Now().Sub(start)
		sent, recv := p.pipe(c, up.(*net.TCPConn))
		picked.Done(zone.Result{Outcome: zone.Success, TTFB: connect, BytesSent: sent, BytesReceived: recv})
		return
	}
}

// pipe copies both directions, passing half-closes along, and returns the
// bytes sent to and received from up.
func (p *Proxy) pipe(down *sniffedConn, up *net.TCPConn) (sent, recv int64) {
	defer up.Close()
	done := make(chan int64, 1)
	go func() {
		n, err := p.copyBuffer(down.Conn, up)
		if err != nil && !errors.Is(err, net.ErrClosed) {
			// Reset the other side too rather than leave it hanging.
			down.Conn.SetDeadline(time.Now())
		}
		if tc, ok := down.Conn.(interface{ CloseWrite() error }); ok {
			tc.CloseWrite()
		}
		done <- n
	}()
	n, err := p.copyBuffer(up, down)
	if err != nil && !errors.Is(err, io.EOF) {
		up.SetDeadline(time.Now())
	}
	up.CloseWrite()
	return n, <-done
}
