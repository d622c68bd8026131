// Package cli holds what zonelb's commands share on their command line:
// flag sets that report a bad flag in one line, help text, usage errors
// with exit status 2, and the logging flags.
//
// Both binaries use it: zonelb (the node agent and its tools) and
// zonelb-proxy (the standalone proxy, which must not carry the agent's
// dependencies), so it knows nothing of either.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// NewFlagSet returns a flag set for the command called name (as a user
// types it, "zonelb daemon") that reports errors through Parse, in one
// line, instead of printing the defaults.
func NewFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// Parse parses args. It returns (0, true) after printing help (synopsis
// and flags) to stdout, (2, true) after a one-line usage error on stderr,
// and (0, false) to go on.
func Parse(fs *flag.FlagSet, synopsis string, args []string, stdout, stderr io.Writer) (int, bool) {
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		printHelp(fs, synopsis, stdout)
		return 0, true
	case err != nil:
		fmt.Fprintf(stderr, "%s: %v (run '%s --help')\n", fs.Name(), err, fs.Name())
		return 2, true
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "%s: unexpected argument %q (run '%s --help')\n", fs.Name(), fs.Arg(0), fs.Name())
		return 2, true
	}
	return 0, false
}

func printHelp(fs *flag.FlagSet, synopsis string, w io.Writer) {
	fmt.Fprintf(w, "Usage: %s [flags]\n\n%s\n\nFlags:\n", fs.Name(), strings.TrimSpace(synopsis))
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// UsageError prints a one-line error about the configuration of the
// command called name and returns exit status 2.
func UsageError(stderr io.Writer, name string, format string, args ...any) int {
	fmt.Fprintf(stderr, "%s: %s\n", name, fmt.Sprintf(format, args...))
	return 2
}

// LogFlags are the logging flags every long-running command takes.
type LogFlags struct {
	level  string
	format string
}

// Register adds --log-level and --log-format to fs.
func (l *LogFlags) Register(fs *flag.FlagSet) {
	fs.StringVar(&l.level, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&l.format, "log-format", "text", "log format: text or json")
}

// Logger returns the logger the flags ask for, writing to w.
func (l *LogFlags) Logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", l.level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch l.format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", l.format)
}
