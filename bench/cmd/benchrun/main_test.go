package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/zonelb/zonelb/bench/runner"
)

func TestParseRates(t *testing.T) {
	got, err := parseRates(" 1000, 5000 ,")
	if err != nil || !slices.Equal(got, []int{1000, 5000}) {
		t.Fatalf("got %v %v", got, err)
	}
	for _, bad := range []string{"", "1k", "0", "-5"} {
		if _, err := parseRates(bad); err == nil {
			t.Errorf("parseRates(%q) accepted", bad)
		}
	}
}

func TestAvailablePeersSkipsMissingProgramsAndRejectsUnknownOnes(t *testing.T) {
	bin := runner.Binaries{Zonelb: "/nonexistent/zonelb", HAProxy: "sh", Nginx: "sh", Caddy: "sh"}
	var stderr bytes.Buffer
	got, err := availablePeers([]string{"direct", "zonelb", "haproxy"}, bin, &stderr)
	if err != nil || !slices.Equal(got, []string{"direct", "haproxy"}) {
		t.Fatalf("got %v %v", got, err)
	}
	if !strings.Contains(stderr.String(), "skipping zonelb") {
		t.Fatalf("no note about the skipped peer: %q", stderr.String())
	}
	if _, err := availablePeers([]string{"envoy"}, bin, &stderr); err == nil {
		t.Fatal("unknown peer accepted")
	}
}

func TestBadFlagExitsWithStatus2(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-rates", "fast"}, func(string) string { return "" }, &stdout, &stderr); code != 2 {
		t.Fatalf("exit %d, want 2 (stderr %q)", code, stderr.String())
	}
	if code := run([]string{"-no-such-flag"}, func(string) string { return "" }, &stdout, &stderr); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
}
