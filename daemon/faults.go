package daemon

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Fault triggers: off unless the configuration sets admin.faultTriggers,
// served only on admin.address (loopback by default, beside pprof). They
// exist so that tests can make the real binary die the ways a node proxy
// dies in production, which no signal from outside reproduces:
//
//	POST /debug/fault/panic        an unrecovered panic in a new goroutine
//	                               (Go's crash path: stack dump, exit status 2)
//	POST /debug/fault/grow?mib=N   allocate N MiB more, every page written, and
//	                               keep it: inside a memory cgroup with a
//	                               limit, the kernel's OOM killer ends it
//
// test/e2e's TestDaemonKilledUnderLoad uses both.

// PanicMarker starts the message of a requested panic, followed by the
// Unix time in nanoseconds at which it began.
const PanicMarker = "zonelb: panic requested on /debug/fault/panic at"

// maxGrowMiB bounds one grow request.
const maxGrowMiB = 4096

// ballast is memory a grow request holds for the life of the process.
type ballast struct {
	mu   sync.Mutex
	held [][]byte
}

func (b *ballast) grow(mib int) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	for range mib {
		chunk := make([]byte, 1<<20)
		for i := 0; i < len(chunk); i += 4096 {
			chunk[i] = 1 // fault the page in: charged to the cgroup now
		}
		b.held = append(b.held, chunk)
	}
	return len(b.held)
}

// registerFaults adds the fault triggers to mux.
func registerFaults(mux *http.ServeMux, b *ballast) {
	mux.HandleFunc("POST /debug/fault/panic", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("panicking\n"))
		http.NewResponseController(w).Flush()
		// Not in the handler's goroutine: net/http recovers those. The
		// message holds the moment (Unix ns) the panic began, for tests
		// that judge what happened from then on.
		go func() {
			panic(fmt.Sprintf("%s %d (admin.faultTriggers)", PanicMarker, time.Now().UnixNano()))
		}()
	})
	mux.HandleFunc("POST /debug/fault/grow", func(w http.ResponseWriter, r *http.Request) {
		mib, err := strconv.Atoi(r.URL.Query().Get("mib"))
		if err != nil || mib <= 0 || mib > maxGrowMiB {
			http.Error(w, fmt.Sprintf("mib=%q: want 1-%d", r.URL.Query().Get("mib"), maxGrowMiB), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "holding %d MiB\n", b.grow(mib))
	})
}
