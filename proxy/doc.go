// Package proxy is zonelb's per-request HTTP/2 proxy.
//
// One listener takes every connection the node steers to it and tells the
// protocol apart by the first bytes (unless its [Route] says HTTP/2 only):
// cleartext HTTP/2 with prior knowledge (what gRPC clients speak), HTTP/1.1,
// or anything else, which is relayed as opaque TCP to one picked endpoint.
// HTTP requests and gRPC calls are balanced one by one: each asks the
// connection's [Picker] for an endpoint, runs over an upstream HTTP/2
// connection pooled per endpoint, and reports its outcome and time to first
// response byte back to the picker, which is the signal Peak-EWMA needs.
//
// HTTP/2 is forwarded frame by frame by the package's own engine, on
// x/net/http2's Framer and hpack: one read loop per connection (client or
// endpoint), no goroutine per stream, frames batched per connection.
// HTTP/1.1 clients are served by net/http and go upstream through the same
// pool.
//
// What the proxy guarantees, and how:
//
//   - gRPC semantics end to end: headers, trailers and trailers-only
//     responses, status codes and messages, binary metadata, cancellation in
//     both directions, and grpc-timeout forwarded minus the time spent here
//     (an expired deadline is answered with DEADLINE_EXCEEDED and the
//     upstream stream is cancelled).
//   - Bounded memory per stream: window is returned to one hop only for
//     bytes the other hop took, so a slow reader stalls its own stream
//     through HTTP/2 flow control instead of growing a queue here. See
//     [Config.StreamWindow] and [Stats] for the bound and its accounting.
//   - RFC 9113's error handling on the client side (h2spec passes in full),
//     and defences against abusive clients (floods, rapid reset, stalled
//     readers).
//   - Transparent retry, once, on another endpoint, only where the request
//     provably never reached the application (connect error, REFUSED_STREAM,
//     a stream above the server's GOAWAY last-stream-id, a stream written
//     beyond what the endpoint's FIN acknowledged), and never after
//     response headers arrived (gRPC's rule, A6). Otherwise the client gets
//     UNAVAILABLE (gRPC) or 502/503 (HTTP), never a hang.
//   - Graceful shutdown: GOAWAY to clients, in-flight streams finish up to a
//     drain timeout, then everything closes.
//
// The package knows nothing of Kubernetes or BPF: which service a
// connection belongs to comes from a [Router] the caller supplies.
package proxy
