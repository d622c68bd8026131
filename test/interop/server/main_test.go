package main

import "testing"

func TestRequireLoopback(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:0":    true,
		"127.0.0.2:9000": true,
		"[::1]:0":        true,
		":0":             false, // every interface
		"0.0.0.0:0":      false,
		"10.0.0.1:0":     false,
		"localhost:0":    false, // a name could resolve anywhere
		"127.0.0.1":      false, // no port
	} {
		if err := requireLoopback(addr); (err == nil) != ok {
			t.Errorf("requireLoopback(%q) = %v, want ok=%v", addr, err, ok)
		}
	}
}
