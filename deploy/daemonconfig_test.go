package deploy

import (
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/zonelb/zonelb/daemon"
)

// The ConfigMap's config.yaml is accepted by the daemon's own loader and
// validation, exactly as the DaemonSet runs it (NODE_NAME from the
// downward API), and means what the comments say.
func TestConfigMapLoadsInTheDaemon(t *testing.T) {
	var cm corev1.ConfigMap
	typed(t, "ConfigMap", ConfigMapName, &cm)
	raw := cm.Data[ConfigKey]
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(raw), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := daemon.LoadConfigFile(path)
	if err != nil {
		t.Fatalf("daemon rejects the ConfigMap: %v", err)
	}
	cfg = cfg.WithDefaults(func(k string) string {
		if k == "NODE_NAME" {
			return "node-1"
		}
		return ""
	})
	if err := cfg.Validate(); err != nil {
		t.Fatalf("daemon config invalid: %v", err)
	}
	if cfg.Redirect.SocketMark != 0x5a4c || cfg.Proxy.Listen != "169.254.20.11:15001" || !cfg.RedirectEnabled() || cfg.Redirect.Enroll != "all" {
		t.Fatalf("config read as %+v", cfg)
	}
}
