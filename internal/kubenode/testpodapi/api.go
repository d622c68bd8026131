// Package testpodapi is what the real node's test pods (testpod) and the
// tests that drive them (test/kubenode) exchange: the JSON of a client
// pod's answers and the header that carries a call's id. It is test
// infrastructure, never part of the product, and imports nothing, so the
// static test binary stays small.
package testpodapi

// CallIDHeader carries a call's id from a client pod to the backends,
// which log what they receive; the mini cluster's backends
// (internal/cluster.CallHeader) use the same name.
const CallIDHeader = "x-zonelb-call-id"

// Call is one call's outcome.
type Call struct {
	Backend string `json:"backend,omitempty"`
	Zone    string `json:"zone,omitempty"`
	Peer    string `json:"peer,omitempty"`
	Conn    string `json:"conn,omitempty"` // the client's local address
	Err     string `json:"err,omitempty"`
}

// Load is the outcome of a load run.
type Load struct {
	OK       int            `json:"ok"`
	Failed   int            `json:"failed"`
	Errors   []string       `json:"errors,omitempty"`   // the first 20, with their times
	Failures []Failure      `json:"failures,omitempty"` // up to MaxFailures
	Backends map[string]int `json:"backends"`
	Peers    map[string]int `json:"peers"`
	// Conns: the client's connections (by local address) and when each
	// first answered a call, so that a test can tell a call that failed
	// on a connection made before some event from one made after it.
	Conns map[string]int64 `json:"conns"` // local address -> Unix ns of its first answer
}

// Failure is one failed call: its id, when it started, the connection it
// went out on (its local address; empty if it never went out) and what it
// said.
type Failure struct {
	ID    string `json:"id"`
	Start int64  `json:"start"` // Unix nanoseconds
	Conn  string `json:"conn,omitempty"`
	Err   string `json:"err"`
}

// MaxFailures bounds what a load run keeps; a test that sees Failed above
// len(Failures) cannot classify the rest and says so.
const MaxFailures = 5000
