// Package h2spec runs the h2spec HTTP/2 conformance suite against the real
// zonelb binary (`zonelb proxy --protocol h2`) with an h2c backend behind it.
package h2spec

import (
	"bytes"
	"context"
	"encoding/xml"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zonelb/zonelb/internal/proxycmd"
	"github.com/zonelb/zonelb/internal/testenv"
)

// h2spec's default run has 145 cases; the proxy owns the server side of
// HTTP/2 and must pass every one (no allow-list).
const wantCases = 145

func TestH2Spec(t *testing.T) {
	h2spec := findTool(t, "h2spec")
	bin := os.Getenv("ZONELB_BIN")
	if bin == "" {
		testenv.SkipOrFail(t, "ZONELB_BIN not set: run through `make test`")
	}

	// The backend answers GET / with 200 and a body, as h2spec needs.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	protos.SetHTTP1(true)
	srv := &http.Server{Protocols: &protos, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "hello from the backend\n")
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	addr := startProxy(t, bin, l.Addr().String())
	host, port, _ := net.SplitHostPort(addr)
	report := filepath.Join(t.TempDir(), "report.xml")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, _ := exec.CommandContext(ctx, h2spec, "-h", host, "-p", port, "-o", "5", "-j", report).CombinedOutput()

	r := readReport(t, report)
	t.Logf("h2spec: %d cases, %d skipped, %d failed %v", r.cases, r.skipped, len(r.failed), r.failed)
	if r.cases != wantCases || r.skipped != 0 || len(r.failed) != 0 {
		t.Fatalf("h2spec: %d cases run, %d skipped, %d failed %v; want %d, 0, 0\n%s",
			r.cases, r.skipped, len(r.failed), r.failed, wantCases, out)
	}
}

type report struct {
	cases, skipped int
	failed         []string // case ids like "http2/4.2/1"
}

// readReport parses h2spec's JUnit report.
func readReport(t *testing.T, path string) report {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("h2spec wrote no report: %v", err)
	}
	// h2spec copies what a case read into its report unescaped, NUL bytes
	// included (seen once: "illegal character code U+0000"), which XML
	// forbids: replace them so the report parses.
	data = bytes.ReplaceAll(data, []byte{0}, []byte("\uFFFD"))
	var suites struct {
		Suites []struct {
			Package string `xml:"package,attr"`
			Cases   []struct {
				Failure *struct{} `xml:"failure"`
				Error   *struct{} `xml:"error"`
				Skipped *struct{} `xml:"skipped"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(data, &suites); err != nil {
		t.Fatalf("parse h2spec report: %v", err)
	}
	var r report
	for _, s := range suites.Suites {
		for i, c := range s.Cases {
			r.cases++
			switch {
			case c.Skipped != nil:
				r.skipped++
			case c.Failure != nil || c.Error != nil:
				// h2spec names a case by its section and its position.
				r.failed = append(r.failed, s.Package+"/"+strconv.Itoa(i+1))
			}
		}
	}
	sort.Strings(r.failed)
	return r
}

func startProxy(t *testing.T, bin, backend string) string {
	t.Helper()
	// --protocol h2: an HTTP/2-only port, where a connection that does
	// not start with the preface is refused (h2spec 3.5/2).
	p, err := proxycmd.Start(t.Context(), bin, "--protocol", "h2", "--to", backend)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(10 * time.Second) })
	return p.Addr
}

// findTool looks for a test tool in the repository's tool cache (where the
// Makefile installs it), then on PATH.
func findTool(t *testing.T, name string) string {
	t.Helper()
	if out, err := exec.Command("git", "rev-parse", "--show-toplevel").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), ".cache", "bin", name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	testenv.SkipOrFail(t, name+" not installed: run `make test`, which installs it")
	return ""
}
