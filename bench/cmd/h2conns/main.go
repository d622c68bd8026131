// Command h2conns measures what an open client HTTP/2 connection costs the
// zonelb proxy in memory: it starts `zonelb proxy --protocol h2` in front of
// an h2c backend on loopback, opens N client connections that each send the
// preface, SETTINGS and one request and read its response, keeps them all
// open, and reports the proxy's RSS growth per connection.
//
//	go run ./bench/cmd/h2conns -zonelb bin/zonelb -n 10000
//
// Loopback only. The proxy and this command need about N+100 file
// descriptors each; the command raises its own limit, which the proxy
// inherits.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/zonelb/zonelb/internal/proxycmd"
)

func main() {
	zonelb := flag.String("zonelb", "bin/zonelb", "the zonelb binary")
	n := flag.Int("n", 10000, "client connections to hold open")
	heap := flag.String("heap", "", "write the proxy's heap profile, with the connections open, to this file")
	flag.Parse()
	if err := run(*zonelb, *n, *heap); err != nil {
		fmt.Fprintln(os.Stderr, "h2conns:", err)
		os.Exit(1)
	}
}

func run(zonelb string, n int, heapFile string) error {
	lim := syscall.Rlimit{Cur: uint64(n + 1000), Max: uint64(n + 1000)}
	var cur syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &cur); err == nil && cur.Max > lim.Max {
		lim.Max = cur.Max
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("raise the file descriptor limit to %d: %w", lim.Cur, err)
	}

	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &protos, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello\n")
	})}
	go srv.Serve(backend)
	defer srv.Close()

	adminL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	admin := adminL.Addr().String()
	adminL.Close()
	p, err := proxycmd.Start(context.Background(), zonelb, "--protocol", "h2", "--to", backend.Addr().String(), "--admin", admin)
	if err != nil {
		return err
	}
	defer p.Stop(time.Minute)
	addr := p.Addr

	// One connection first, so that the upstream connection and the
	// proxy's steady state exist before the baseline.
	first, err := open(addr)
	if err != nil {
		return err
	}
	defer first.Close()
	time.Sleep(500 * time.Millisecond)
	if err := proxyGC(admin); err != nil {
		return err
	}
	base, err := rss(p.Pid())
	if err != nil {
		return err
	}
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	start := time.Now()
	for i := 0; i < n; i++ {
		c, err := open(addr)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		conns = append(conns, c)
	}
	opened := time.Since(start)
	time.Sleep(2 * time.Second) // let the proxy settle
	// A GC in the proxy (what a heap profile with gc=1 does), so that RSS
	// counts what the connections hold, not garbage from opening them.
	if err := proxyGC(admin); err != nil {
		return err
	}
	time.Sleep(2 * time.Second)
	after, err := rss(p.Pid())
	if err != nil {
		return err
	}
	fmt.Printf("zonelb proxy RSS: %.1f MiB with 1 client connection, %.1f MiB with %d more (opened in %v)\n",
		float64(base)/(1<<20), float64(after)/(1<<20), n, opened.Round(time.Millisecond))
	fmt.Printf("per client HTTP/2 connection (preface, SETTINGS, one call, held open): %.1f KiB\n",
		float64(after-base)/float64(n)/1024)
	if st, err := memStats(admin); err == nil {
		fmt.Printf("proxy runtime: %s\n", st)
	}
	if heapFile != "" {
		resp, err := http.Get("http://" + admin + "/debug/pprof/heap")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		f, err := os.Create(heapFile)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(f, resp.Body)
		return err
	}
	return nil
}

// open makes one client connection: preface, SETTINGS, one GET, its
// response read to the end, SETTINGS acked.
func open(addr string) (net.Conn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.Write([]byte(http2.ClientPreface))
	fr.WriteSettings()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, kv := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":path", "/"}, {":authority", "x"}} {
		enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
	}
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			c.Close()
			return nil, err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.DataFrame:
			if f.StreamEnded() {
				return c, nil
			}
		case *http2.MetaHeadersFrame:
			if f.StreamEnded() {
				return c, nil
			}
		case *http2.RSTStreamFrame, *http2.GoAwayFrame:
			c.Close()
			return nil, fmt.Errorf("proxy answered %v", f)
		}
	}
}

// proxyGC makes the proxy collect garbage, through its admin endpoint.
func proxyGC(admin string) error {
	resp, err := http.Get("http://" + admin + "/debug/pprof/heap?gc=1")
	if err != nil {
		return fmt.Errorf("proxy admin endpoint: %w", err)
	}
	io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}

// memStats reads a few runtime.MemStats figures from the proxy's heap
// profile in text form.
func memStats(admin string) (string, error) {
	resp, err := http.Get("http://" + admin + "/debug/pprof/heap?debug=1")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		for _, k := range []string{"# HeapInuse = ", "# StackInuse = ", "# Sys = "} {
			if v, ok := strings.CutPrefix(line, k); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				out = append(out, fmt.Sprintf("%s %.1f MiB", strings.TrimSuffix(strings.TrimPrefix(k, "# "), " = "), float64(n)/(1<<20)))
			}
		}
	}
	return strings.Join(out, ", "), nil
}

// rss reads a process's resident set size.
func rss(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}
