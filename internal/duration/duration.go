// Package duration is a time.Duration written as "10s" in JSON and YAML
// (through sigs.k8s.io/yaml, which goes by JSON): the one form every
// zonelb configuration file uses. It knows nothing else.
package duration

import (
	"encoding/json"
	"fmt"
	"time"
)

// Duration is a time.Duration that marshals as "10s".
type Duration time.Duration

// UnmarshalJSON parses "10s"-style durations.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration such as \"10s\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration such as \"10s\", got %q", s)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes the duration as "10s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }
