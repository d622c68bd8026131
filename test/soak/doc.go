// Package soak is zonelb's long run under churn (`make soak`; a short form
// runs in `make test`): the mini cluster (internal/cluster) under steady
// gRPC load while, on a seeded schedule, endpoints scale down and up, pods
// are killed, a zone's capacity drops and comes back, a zone fails, the
// daemon's configuration is reloaded, the daemon is upgraded (a new
// binary, pins kept) and SIGKILLed. It joins every failed call with what
// the backends received (none may be saveable) and samples the daemon's
// RSS, goroutines, open fds, BPF map entries and upstream connections each
// second, against leak bounds.
//
// Test code only; it touches nothing outside the lab it builds.
package soak
