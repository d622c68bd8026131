// Package proxy is zonelb's per-request HTTP/2 proxy.
//
// One listener takes every connection the node steers to it and tells the
// protocol apart by the first bytes: cleartext HTTP/2 with prior knowledge
// (what gRPC clients speak), HTTP/1.1, or anything else, which is relayed as
// opaque TCP to one picked endpoint. HTTP requests and gRPC calls are
// balanced one by one: each asks the connection's [Picker] for an endpoint,
// runs over an upstream HTTP/2 connection pooled per endpoint, and reports
// its outcome and time to first response byte back to the picker, which is
// the signal Peak-EWMA needs.
//
// What the proxy guarantees, and how:
//
//   - gRPC semantics end to end: headers, trailers and trailers-only
//     responses, status codes and messages, binary metadata, cancellation in
//     both directions, and grpc-timeout forwarded minus the time spent here
//     (an expired deadline is answered with DEADLINE_EXCEEDED and the
//     upstream stream is cancelled).
//   - Bounded memory per stream: bytes move with blocking copies through one
//     pooled buffer per direction, so a slow reader stalls its own stream
//     through HTTP/2 flow control instead of growing a queue here. See
//     [Config.StreamWindow] and [Stats] for the bound and its accounting.
//   - Transparent retry, once, on another endpoint, only where the request
//     provably never reached the application (connect error, REFUSED_STREAM,
//     a stream above the server's GOAWAY last-stream-id), and never after
//     response headers arrived (gRPC's rule, A6). Otherwise the client gets
//     UNAVAILABLE (gRPC) or 502/503 (HTTP), never a hang.
//   - Graceful shutdown: GOAWAY to clients, in-flight streams finish up to a
//     drain timeout, then everything closes.
//
// The package knows nothing of Kubernetes or BPF: which service a
// connection belongs to comes from a [Router] the caller supplies.
package proxy
