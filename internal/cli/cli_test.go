package cli

import (
	"bytes"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		args       []string
		code       int
		done       bool
		out, err   string
		errOneLine bool
	}{
		{args: []string{"--n", "3"}},
		{args: []string{"--help"}, code: 0, done: true, out: "Usage: zonelb try [flags]\n\nTries.\n\nFlags:\n  -n int"},
		{args: []string{"--nope"}, code: 2, done: true, err: "zonelb try: flag provided but not defined: -nope (run 'zonelb try --help')", errOneLine: true},
		{args: []string{"--n", "x"}, code: 2, done: true, err: `zonelb try: invalid value "x" for flag -n`, errOneLine: true},
		{args: []string{"extra"}, code: 2, done: true, err: `zonelb try: unexpected argument "extra" (run 'zonelb try --help')`, errOneLine: true},
	} {
		fs := NewFlagSet("zonelb try")
		fs.Int("n", 1, "how many")
		var stdout, stderr bytes.Buffer
		code, done := Parse(fs, "\nTries.\n", tc.args, &stdout, &stderr)
		if code != tc.code || done != tc.done {
			t.Errorf("%q: Parse = (%d, %v), want (%d, %v)", tc.args, code, done, tc.code, tc.done)
		}
		if !strings.HasPrefix(stdout.String(), tc.out) || (tc.out == "" && stdout.Len() > 0) {
			t.Errorf("%q: stdout %q, want it to start with %q", tc.args, stdout.String(), tc.out)
		}
		if !strings.HasPrefix(stderr.String(), tc.err) || (tc.err == "" && stderr.Len() > 0) {
			t.Errorf("%q: stderr %q, want it to start with %q", tc.args, stderr.String(), tc.err)
		}
		if tc.errOneLine && strings.Count(stderr.String(), "\n") != 1 {
			t.Errorf("%q: stderr %q, want one line", tc.args, stderr.String())
		}
	}
}

func TestUsageError(t *testing.T) {
	var stderr bytes.Buffer
	if code := UsageError(&stderr, "zonelb-proxy", "--listen %q: want IP:PORT", "x"); code != 2 {
		t.Errorf("exit status %d, want 2", code)
	}
	if want := "zonelb-proxy: --listen \"x\": want IP:PORT\n"; stderr.String() != want {
		t.Errorf("stderr %q, want %q", stderr.String(), want)
	}
}

func TestLogFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{args: nil},
		{args: []string{"--log-level", "debug", "--log-format", "json"}},
		{args: []string{"--log-level", "loud"}, err: `--log-level "loud": want debug, info, warn or error`},
		{args: []string{"--log-format", "xml"}, err: `--log-format "xml": want text or json`},
	} {
		fs := NewFlagSet("zonelb try")
		var l LogFlags
		l.Register(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		log, err := l.Logger(&out)
		switch {
		case tc.err != "":
			if err == nil || err.Error() != tc.err {
				t.Errorf("%q: error %v, want %q", tc.args, err, tc.err)
			}
			continue
		case err != nil:
			t.Fatalf("%q: %v", tc.args, err)
		}
		log.Debug("seen at debug")
		if wantDebug := len(tc.args) > 0; strings.Contains(out.String(), "seen at debug") != wantDebug {
			t.Errorf("%q: debug line logged = %v, want %v (%q)", tc.args, !wantDebug, wantDebug, out.String())
		}
	}
}
