package proxy

// PING acknowledgements ride with the next frames for their connection.
//
// gRPC's BDP estimator (grpc-go and its ports) sends a PING, with a
// connection WINDOW_UPDATE before it, whenever data arrives and its last
// PING was acknowledged: on a connection of small calls, one per call in
// each direction. An endpoint's arrives with the response it follows,
// which goes to the client; a client's arrives alone after each response.
// Acknowledged at once, each costs a write of its own to a peer that has
// nothing else coming (two of the four writes of a forwarded call), and
// each such write wakes that peer.
//
// So an acknowledgement is held apart from the connection's buffer
// (connWriter.acks) and leaves after the next frames written to the
// connection: the next request to that endpoint, the next response to
// that client. Coming after the data, it also lets a gRPC peer read that
// data while its PING is still outstanding, so the peer pings about half
// as often. The hold is bounded by the connection's read loop, with no
// timer of its own: the loop releases what is held when it finds the
// socket empty, and when its backstop deadline passes (frameLoop), which
// is pending whenever it waits after a read it did not confirm empty, as
// it does after reading a PING. A PING is therefore acknowledged within
// frameBackstop (200 ms) on a quiet connection, at once on a busy one.
// Keepalive timeouts are seconds; a peer that times its round trips with
// PINGs sees up to frameBackstop more on a connection with nothing else to
// carry the acknowledgement. Connections that are not sockets (net.Pipe in
// tests) have no such loop and acknowledge at once.
//
// Measured 2026-12-06 on the shared 2-core VM, as make bench pins the proxy
// (4 client connections, 1 KiB each way): 6 interleaved rounds of
// `benchrun -peers zonelb,haproxy -workloads grpc -runs 1 -rates
// 200,1000,5000 -sat-phase 1s -profile 0` for this build and the one
// before, CPU per call 0.84x the build before's at 200 and at 1000
// calls/s (lower in all 6 rounds each), 0.99x at 5000 (4 of 6), 0.96x at
// saturation (5 of 6). At 5000 calls/s (perf stat on the proxy) writes
// per call fell from 3.6-3.7 to 2.0; HAProxy makes 4.3.
//
// What was tried before: acknowledgements left in the connection's buffer
// went out anyway, because creditClient and creditUpstream add their
// connection to the batch whether or not they wrote (hence the separate
// acks buffer); and a hold bounded by a proxy-wide 10 ms timer saved as
// much at 1000 calls/s (0.89x) but cost 1.04x at 5000 and 1.09x at
// saturation: every wake-up of this VM's CPU costs a process tens of
// microseconds (docs/benchmarks.md, "Where zonelb's CPU goes"), and the
// backstop the read loop keeps anyway costs nothing more.

// maxHeldAcks bounds the bytes of acknowledgements held on a connection
// (a PING flood is cut by the flood guards before it matters).
const maxHeldAcks = 1 << 10

// queueAck queues the acknowledgement of a PING carrying data, held as
// described above; it reports whether it was held (false: it is in the
// buffer, and the connection wants a flush). Call with wmu held.
func (h *h2conn) queueAck(data [8]byte) (held bool) {
	if h.w.raw == nil {
		h.fr.WritePing(true, data)
		return false
	}
	h.w.ackMode = true
	h.fr.WritePing(true, data)
	h.w.ackMode = false
	return true
}

// releaseAcks writes the acknowledgements held on h, through b.
func (h *h2conn) releaseAcks(b *batch) {
	h.wmu.Lock()
	held := len(h.w.acks) > 0
	if held {
		h.w.mergeAcks()
	}
	h.wmu.Unlock()
	if held {
		b.add(h)
		b.flush()
	}
}
