package daemon

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The fault triggers exist only when configured; grow holds what it
// allocated and refuses sizes out of bounds. (The panic itself is
// exercised on the real binary: test/e2e TestDaemonKilledUnderLoad.)
func TestFaultTriggersOnlyWhenConfigured(t *testing.T) {
	post := func(a *admin, path string) (int, string) {
		rec := httptest.NewRecorder()
		a.mux(true).ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, nil))
		return rec.Code, rec.Body.String()
	}
	m := NewMetrics("zone-a", "test", nil, nil, nil)
	off := &admin{metrics: m}
	for _, p := range []string{"/debug/fault/panic", "/debug/fault/grow?mib=1"} {
		if code, _ := post(off, p); code != http.StatusNotFound {
			t.Errorf("faultTriggers off: POST %s = %d, want 404", p, code)
		}
	}
	on := &admin{metrics: m, faults: true}
	if code, body := post(on, "/debug/fault/grow?mib=2"); code != http.StatusOK || !strings.Contains(body, "holding 2 MiB") {
		t.Errorf("grow 2 MiB: %d %q", code, body)
	}
	if code, body := post(on, "/debug/fault/grow?mib=3"); code != http.StatusOK || !strings.Contains(body, "holding 5 MiB") {
		t.Errorf("grow 3 more MiB: %d %q", code, body)
	}
	for _, q := range []string{"0", "-1", "x", "100000"} {
		if code, _ := post(on, "/debug/fault/grow?mib="+q); code != http.StatusBadRequest {
			t.Errorf("grow mib=%s: %d, want 400", q, code)
		}
	}
	for _, c := range on.ballast.held {
		for i := 0; i < len(c); i += 4096 {
			if c[i] != 1 {
				t.Fatal("grow left a page untouched")
			}
		}
	}
}
