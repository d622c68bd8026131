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
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

func main() {
	zonelb := flag.String("zonelb", "bin/zonelb", "the zonelb binary")
	n := flag.Int("n", 10000, "client connections to hold open")
	flag.Parse()
	if err := run(*zonelb, *n); err != nil {
		fmt.Fprintln(os.Stderr, "h2conns:", err)
		os.Exit(1)
	}
}

func run(zonelb string, n int) error {
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

	cmd := exec.Command(zonelb, "proxy", "--listen", "127.0.0.1:0", "--protocol", "h2", "--to", backend.Addr().String())
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	addr, err := listenAddr(stderr)
	if err != nil {
		return err
	}
	go io.Copy(io.Discard, stderr)

	// One connection first, so that the upstream connection and the
	// proxy's steady state exist before the baseline.
	first, err := open(addr)
	if err != nil {
		return err
	}
	defer first.Close()
	time.Sleep(500 * time.Millisecond)
	base, err := rss(cmd.Process.Pid)
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
	runtime.GC()
	time.Sleep(2 * time.Second) // let the proxy settle
	after, err := rss(cmd.Process.Pid)
	if err != nil {
		return err
	}
	fmt.Printf("zonelb proxy RSS: %.1f MiB with 1 client connection, %.1f MiB with %d more (opened in %v)\n",
		float64(base)/(1<<20), float64(after)/(1<<20), n, opened.Round(time.Millisecond))
	fmt.Printf("per client HTTP/2 connection (preface, SETTINGS, one call, held open): %.1f KiB\n",
		float64(after-base)/float64(n)/1024)
	return nil
}

var listening = regexp.MustCompile(`msg="proxy listening" addr=(\S+)`)

func listenAddr(r io.Reader) (string, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if m := listening.FindStringSubmatch(sc.Text()); m != nil {
			return m[1], nil
		}
	}
	return "", errors.New("zonelb proxy did not start")
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
