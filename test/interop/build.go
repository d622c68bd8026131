package interop

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// GRPCVersion is the grpc-go release whose interop client and server the
// harness runs. It must match google.golang.org/grpc in go.mod, which the
// server is built with.
const GRPCVersion = "v1.85.0"

// ClientPackage is the upstream interop client's import path.
const ClientPackage = "google.golang.org/grpc/interop/client"

// Package paths, relative to the repository root, of what BuildServer and
// BuildProxy build.
const (
	serverPackage = "./test/interop/server"
	proxyPackage  = "./cmd/zonelb"
)

// RepoRoot finds the repository root: the nearest directory at or above the
// working directory that holds go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find repository root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find repository root: no go.mod above the working directory")
		}
		dir = parent
	}
}

// CacheDir is where built interop binaries are kept between runs:
// .cache/interop under the repository root (ignored by git).
func CacheDir(repoRoot string) string {
	return filepath.Join(repoRoot, ".cache", "interop")
}

// HasProxy reports whether the repository has the proxy's main package.
func HasProxy(repoRoot string) bool {
	_, err := os.Stat(filepath.Join(repoRoot, proxyPackage, "main.go"))
	return err == nil
}

// BuildClient returns the path of the upstream interop client binary at
// GRPCVersion, building it into cacheDir the first time. It is installed by
// version (`go install pkg@version`), so it builds with grpc-go's own
// go.mod and its cloud dependencies stay out of ours.
func BuildClient(ctx context.Context, cacheDir string) (string, error) {
	bin := filepath.Join(cacheDir, "interop-client-"+GRPCVersion)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("create interop cache %s: %w", cacheDir, err)
	}
	// Install into a private directory and rename, so that concurrent runs
	// never see a half-written binary.
	tmp, err := os.MkdirTemp(cacheDir, "build-")
	if err != nil {
		return "", fmt.Errorf("create build directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	cmd := exec.CommandContext(ctx, "go", "install", ClientPackage+"@"+GRPCVersion)
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "GOBIN="+tmp)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install %s@%s: %w\n%s", ClientPackage, GRPCVersion, err, out)
	}
	if err := os.Rename(filepath.Join(tmp, "client"), bin); err != nil {
		return "", fmt.Errorf("move interop client into %s: %w", cacheDir, err)
	}
	return bin, nil
}

// BuildServer builds the loopback interop server into outDir.
func BuildServer(ctx context.Context, repoRoot, outDir string) (string, error) {
	return goBuild(ctx, repoRoot, serverPackage, filepath.Join(outDir, "interop-server"))
}

// BuildProxy builds the zonelb binary into outDir.
func BuildProxy(ctx context.Context, repoRoot, outDir string) (string, error) {
	return goBuild(ctx, repoRoot, proxyPackage, filepath.Join(outDir, "zonelb"))
}

func goBuild(ctx context.Context, repoRoot, pkg, out string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = repoRoot
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return out, nil
}
