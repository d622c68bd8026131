package kubenode

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/zonelb/zonelb/internal/testenv"
)

// Images the node gets (`make image` builds them into bin/images).
const (
	pauseImage   = "zonelb.test/pause:v1"
	testpodImage = "zonelb.test/testpod:v1"
)

// imageSet is the image tarballs and zonelb's reference.
type imageSet struct {
	dir       string
	zonelbRef string
}

func (s imageSet) tarballs() []string {
	return []string{filepath.Join(s.dir, "zonelb.tar"), filepath.Join(s.dir, "testpod.tar"), filepath.Join(s.dir, "pause.tar")}
}

// moduleRoot walks up from the working directory to zonelb's go.mod.
func moduleRoot(tb testing.TB) string {
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(data, []byte("module github.com/zonelb/zonelb\n")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatal("no zonelb go.mod above the working directory")
		}
		dir = parent
	}
}

// findImages locates the tarballs: beside $ZONELB_BIN (bin/images, as the
// Makefile builds them), else in the module's bin/images.
func findImages(tb testing.TB) imageSet {
	tb.Helper()
	dir := filepath.Join(moduleRoot(tb), "bin", "images")
	if bin := os.Getenv("ZONELB_BIN"); bin != "" {
		dir = filepath.Join(filepath.Dir(bin), "images")
	}
	s := imageSet{dir: dir}
	for _, f := range s.tarballs() {
		if _, err := os.Stat(f); err != nil {
			testenv.SkipOrFail(tb, fmt.Sprintf("image %s missing (%v): run `make image`", f, err))
		}
	}
	ref, err := repoTag(filepath.Join(dir, "zonelb.tar"))
	if err != nil {
		tb.Fatalf("zonelb image: %v", err)
	}
	s.zonelbRef = ref
	return s
}

// repoTag reads the image reference from a docker-save tarball's manifest.
func repoTag(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return "", fmt.Errorf("%s: no manifest.json", path)
		}
		if err != nil {
			return "", fmt.Errorf("read %s: %w", path, err)
		}
		if h.Name != "manifest.json" {
			continue
		}
		var m []struct{ RepoTags []string }
		if err := json.NewDecoder(tr).Decode(&m); err != nil {
			return "", fmt.Errorf("%s manifest: %w", path, err)
		}
		if len(m) != 1 || len(m[0].RepoTags) != 1 {
			return "", fmt.Errorf("%s manifest: want one image with one tag, got %+v", path, m)
		}
		return m[0].RepoTags[0], nil
	}
}

// testpodBin is the testpod binary the images were made from (bin/testpod),
// which the peers run outside any container.
func (s imageSet) testpodBin(tb testing.TB) string {
	bin := filepath.Join(filepath.Dir(s.dir), "testpod")
	if _, err := os.Stat(bin); err != nil {
		testenv.SkipOrFail(tb, fmt.Sprintf("%s missing (%v): run `make image`", bin, err))
	}
	return bin
}
