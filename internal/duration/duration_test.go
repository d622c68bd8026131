package duration

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestDurationRoundTrips(t *testing.T) {
	var v struct{ D Duration }
	if err := json.Unmarshal([]byte(`{"D":"1m30s"}`), &v); err != nil || time.Duration(v.D) != 90*time.Second {
		t.Fatalf("parse 1m30s: %v, %v", time.Duration(v.D), err)
	}
	b, err := json.Marshal(v)
	if err != nil || string(b) != `{"D":"1m30s"}` {
		t.Fatalf("marshal: %s, %v", b, err)
	}
	for _, bad := range []string{`{"D":"soon"}`, `{"D":10}`} {
		if err := json.Unmarshal([]byte(bad), &v); err == nil || !strings.Contains(err.Error(), "duration") {
			t.Errorf("%s: got %v, want an error about a duration", bad, err)
		}
	}
}
