package deploy

import (
	"bufio"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// No container engine runs here, so the image cannot be built. These tests
// check what can be: the Dockerfile's stages against go.mod and the
// DaemonSet, and its build command, run for real, yields a static binary
// that carries the version it was given.

// dockerfile is the part of the Dockerfile the tests look at.
type dockerfile struct {
	froms      []string // image of each FROM, in order
	buildRun   string   // the RUN line that runs `go build`
	copies     []string // COPY instructions
	entrypoint string
	user       string
}

func parseDockerfile(t *testing.T) dockerfile {
	t.Helper()
	f, err := os.Open("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var d dockerfile
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			t.Fatalf("Dockerfile line continuation in %q: keep each instruction on one line so this test can read it", line)
		}
		instr, rest, _ := strings.Cut(line, " ")
		switch strings.ToUpper(instr) {
		case "FROM":
			fields := strings.Fields(rest)
			fields = slices.DeleteFunc(fields, func(f string) bool { return strings.HasPrefix(f, "--platform=") })
			d.froms = append(d.froms, fields[0])
		case "RUN":
			if strings.Contains(rest, "go build") {
				d.buildRun = rest
			}
		case "COPY":
			d.copies = append(d.copies, rest)
		case "ENTRYPOINT":
			d.entrypoint = rest
		case "USER":
			d.user = rest
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDockerfileStages(t *testing.T) {
	d := parseDockerfile(t)
	if len(d.froms) != 2 {
		t.Fatalf("%d stages, want 2 (builder, runtime)", len(d.froms))
	}

	// The builder's Go is the one go.mod asks for.
	raw, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+)\.(\d+)(\.\d+)?$`).FindSubmatch(raw)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	wantBuilder := "golang:" + string(m[1]) + "." + string(m[2])
	if d.froms[0] != wantBuilder {
		t.Errorf("builder image %s, want %s (go.mod's go directive)", d.froms[0], wantBuilder)
	}

	// The runtime stage is minimal and runs the binary as root, as the
	// DaemonSet does.
	if base := d.froms[1]; !strings.HasPrefix(base, "gcr.io/distroless/static") && base != "scratch" {
		t.Errorf("runtime image %s: want distroless/static or scratch", base)
	}
	if strings.Contains(d.froms[1], "nonroot") {
		t.Error("runtime image is a nonroot variant, but the daemon runs as uid 0")
	}
	if d.user != "0:0" {
		t.Errorf("USER %q, want 0:0", d.user)
	}

	// The binary the build writes is the one copied and run, and the one
	// the DaemonSet starts.
	out := flagValue(t, shellFields(t, d.buildRun, nil), "-o")
	if !slices.ContainsFunc(d.copies, func(c string) bool { return strings.Contains(c, "--from=") && strings.Contains(c, out+" /zonelb") }) {
		t.Errorf("no COPY --from of %s to /zonelb: %q", out, d.copies)
	}
	if d.entrypoint != `["/zonelb"]` {
		t.Errorf(`ENTRYPOINT %s, want ["/zonelb"]`, d.entrypoint)
	}
	if c := daemonContainer(t); !slices.Equal(c.Command, []string{"/zonelb"}) {
		t.Errorf("the DaemonSet runs %q, the image has /zonelb", c.Command)
	}
}

// TestDockerfileBuildCommand runs the Dockerfile's own go build command
// (for this machine's architecture, into a temporary file) and checks
// that the result is a static binary that reports the version it was
// built with.
func TestDockerfileBuildCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/zonelb (-short)")
	}
	d := parseDockerfile(t)
	const version = "v0.0.0-dockerfile-test"
	vars := map[string]string{"TARGETOS": "linux", "TARGETARCH": runtime.GOARCH, "VERSION": version}
	words := shellFields(t, d.buildRun, vars)

	// Leading NAME=value words are the environment.
	var env []string
	for len(words) > 0 && strings.Contains(words[0], "=") && !strings.HasPrefix(words[0], "-") {
		env = append(env, words[0])
		words = words[1:]
	}
	if !slices.Contains(env, "CGO_ENABLED=0") {
		t.Errorf("build environment %q: want CGO_ENABLED=0 (a static binary for distroless/static)", env)
	}
	if len(words) < 2 || words[0] != "go" || words[1] != "build" {
		t.Fatalf("build command %q: want go build ...", words)
	}
	if !slices.Contains(words, "-trimpath") || words[len(words)-1] != "./cmd/zonelb" {
		t.Errorf("build command %q: want -trimpath and ./cmd/zonelb", words)
	}
	bin := filepath.Join(t.TempDir(), "zonelb")
	i := slices.Index(words, "-o")
	words[i+1] = bin

	cmd := exec.Command("go", words[1:]...)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s (in the repository root, with %q): %v\n%s", strings.Join(words, " "), env, err, out)
	}

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary has a dynamic loader (PT_INTERP): not static")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the binary needs shared libraries %v", libs)
	}

	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("zonelb version: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), version) {
		t.Errorf("zonelb version printed %q: the -X main.version flag did not take (renamed variable?)", out)
	}
}

// shellFields splits a RUN line into words the way sh would for the forms
// the Dockerfile uses: spaces separate words, double quotes group them,
// and $NAME expands from vars (unknown names stay as they are when vars
// is nil, for tests that only look at the shape).
func shellFields(t *testing.T, line string, vars map[string]string) []string {
	t.Helper()
	if strings.ContainsAny(line, "'`;&|<>\\") {
		t.Fatalf("RUN %q: uses shell syntax this test does not read; keep the build command a plain command line", line)
	}
	expanded := regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?`).ReplaceAllStringFunc(line, func(ref string) string {
		if vars == nil {
			return ref
		}
		name := strings.Trim(ref, "${}")
		v, ok := vars[name]
		if !ok {
			t.Fatalf("RUN %q: no value for $%s", line, name)
		}
		return v
	})
	var words []string
	var cur strings.Builder
	inQuote, inWord := false, false
	for _, r := range expanded {
		switch {
		case r == '"':
			inQuote = !inQuote
			inWord = true
		case r == ' ' && !inQuote:
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inQuote {
		t.Fatalf("RUN %q: unbalanced quote", line)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

func flagValue(t *testing.T, words []string, flag string) string {
	t.Helper()
	i := slices.Index(words, flag)
	if i < 0 || i+1 >= len(words) {
		t.Fatalf("no %s in %q", flag, words)
	}
	return words[i+1]
}
