package proxy

import (
	"bufio"
	"net"
	"testing"
	"time"
)

func TestGRPCTimeoutRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1S", time.Second, true},
		{"100m", 100 * time.Millisecond, true},
		{"99999999n", 99999999, true},
		{"2H", 2 * time.Hour, true},
		{"5u", 5 * time.Microsecond, true},
		{"", 0, false},
		{"S", 0, false},
		{"123456789S", 0, false}, // 9 digits
		{"10x", 0, false},
		{"-1S", 0, false},
	} {
		got, ok := parseGRPCTimeout(tc.in)
		if ok != tc.ok || got != tc.want {
			t.Errorf("parseGRPCTimeout(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
	for _, d := range []time.Duration{1, 999, time.Millisecond, 1234567 * time.Microsecond, 3 * time.Hour, 1<<63 - 1} {
		s := formatGRPCTimeout(d)
		back, ok := parseGRPCTimeout(s)
		if !ok || back < d || float64(back-d) > float64(d)*1e-7+1 {
			t.Errorf("formatGRPCTimeout(%v) = %q, parses back to %v", d, s, back)
		}
	}
}

func FuzzParseGRPCTimeout(f *testing.F) {
	f.Add("1S")
	f.Add("99999999H")
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := parseGRPCTimeout(s)
		if ok && d < 0 {
			t.Fatalf("negative timeout %v from %q", d, s)
		}
	})
}

func TestSniff(t *testing.T) {
	for _, tc := range []struct {
		name   string
		chunks []string // arrive separately
		want   protocol
	}{
		{"h2 preface at once", []string{string(h2Preface)}, protoHTTP},
		{"h2 preface in pieces", []string{"PRI * HT", "TP/2.0\r\n", "\r\nSM\r\n\r\n"}, protoHTTP},
		{"http1 GET", []string{"GET / HTTP/1.1\r\n\r\n"}, protoHTTP},
		{"http1 short", []string{"PO", "ST /x HTTP/1.0\r\n\r\n"}, protoHTTP},
		{"tls", []string{"\x16\x03\x01\x02\x00"}, protoOpaque},
		{"almost preface", []string{"PRI * HTTP/1.1\r\n"}, protoOpaque},
		{"silent", nil, protoOpaque},
		{"GETX", []string{"GETX"}, protoOpaque},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer client.Close()
			defer server.Close()
			go func() {
				for _, c := range tc.chunks {
					client.Write([]byte(c))
				}
			}()
			br := bufio.NewReader(server)
			if got := sniff(server, br, 200*time.Millisecond); got != tc.want {
				t.Fatalf("sniff = %v, want %v", got, tc.want)
			}
			// Nothing consumed: the peeked bytes are still there.
			if len(tc.chunks) > 0 {
				b, _ := br.Peek(1)
				if len(b) == 0 || b[0] != tc.chunks[0][0] {
					t.Fatalf("sniff consumed input")
				}
			}
		})
	}
}

func TestConfigValidation(t *testing.T) {
	ok := Config{Router: StaticRouter{}}
	if _, err := ok.withDefaults(); err != nil {
		t.Fatalf("defaults rejected: %v", err)
	}
	for name, c := range map[string]Config{
		"no router":     {},
		"tiny window":   {Router: StaticRouter{}, StreamWindow: 100},
		"huge window":   {Router: StaticRouter{}, StreamWindow: 8 << 20},
		"min above max": {Router: StaticRouter{}, MinConnsPerEndpoint: 4, MaxConnsPerEndpoint: 2},
		"negative":      {Router: StaticRouter{}, DialTimeout: -1},
	} {
		if _, err := c.withDefaults(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
