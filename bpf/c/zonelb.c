// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// zonelb's transparent redirection: cgroup-v2 hooks that steer TCP connects
// from enrolled pod network namespaces to selected Service addresses into the
// node-local zonelb proxy, and remember where each connection was going.
//
// Flow for one redirected connection:
//   connect4/6   rewrite the destination to the proxy; keep the original one
//                in socket-local storage (zlb_origdst).
//   sockops      at ACTIVE_ESTABLISHED copy it into zlb_tuples, keyed by the
//                4-tuple the proxy will see on its accepted socket; delete it
//                when the socket reaches TCP_CLOSE.
//   getpeername  the application sees the address it dialled.
//
// Fail-open: redirect only while the proxy's listening socket sits in the
// zlb_listeners SOCKMAP and the process that registered it has not begun
// to exit. The kernel removes the socket when it closes (also on SIGKILL),
// but a dying process closes its sockets only at the very end of its exit,
// its accepted connections before its listener: clients that reconnect at
// once would be steered to a listener about to reset them. So BPF programs
// mark the owner (zlb_owners) exiting at the first sign: SIGKILL
// delivered to it, the Go runtime beginning to crash in it (a uprobe the
// proxy attaches to its own binary), or any of its threads exiting in a
// group exit. The mark is looked up on every connect, never cached.
//
// Layout rule: the structs below are shared with Go through bpf2go. Changing
// one changes the map layout; the loader then migrates or replaces the
// pinned map (see docs/bpf.md), so keep changes deliberate.

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// ctx_read loads a context field as written. Without it clang may merge
// loads of neighbouring fields (local_ip4 and local_ip6[3]) into one load
// through a computed context pointer, which the verifier rejects.
#define ctx_read(field) (*(volatile typeof(field) *)&(field))

#define ZLB_AF_INET 2
#define ZLB_AF_INET6 10
#define ZLB_SOCK_STREAM 1

// Family tags stored in keys and values (not AF_* so that they fit a byte
// and read plainly from Go).
#define ZLB_FAMILY_V4 4
#define ZLB_FAMILY_V6 6

// orig_dst.flags
#define ZLB_ORIG_V4_MAPPED 1 // the application dialled ::ffff:a.b.c.d

// The enums below are the Go-C contract: bpf2go exports them (-type in
// gen.go), the Go side uses the generated constants, and contract_test.go
// fails when this file and the committed object drift apart.

// Bits of config.flags.
enum zlb_cfg_flag {
	ZLB_CFG_SHORTCUT = 1, // add pod<->proxy sockets to zlb_shortcut for sk_msg
	ZLB_CFG_ENROLL_ALL = 2, // every non-host netns under the attach cgroup is enrolled
};

// Listener slots in zlb_listeners and zlb_owners.
enum zlb_listener_slot {
	ZLB_LISTENER_V4 = 0,
	ZLB_LISTENER_V6 = 1,
	ZLB_LISTENER_SLOTS,
};

// Counters in zlb_counters, one per outcome.

// Kernel constants the tracing programs compare with (stable for years):
// SIGKILL, TRACE_SIGNAL_DELIVERED (include/trace/events/signal.h) and
// SIGNAL_GROUP_EXIT (include/linux/sched/signal.h).
#define ZLB_SIGKILL 9
#define ZLB_TRACE_SIGNAL_DELIVERED 0
#define ZLB_SIGNAL_GROUP_EXIT 0x4

enum zlb_counter {
	ZLB_C_REDIRECTED = 0,
	ZLB_C_SKIP_HOST_NETNS,
	ZLB_C_SKIP_NOT_ENROLLED,
	ZLB_C_SKIP_NOT_SELECTED,
	ZLB_C_SKIP_MARKED,
	ZLB_C_SKIP_PROXY_DOWN,
	ZLB_C_SKIP_NOT_TCP,
	ZLB_C_SKIP_NO_V6_PROXY,
	ZLB_C_STORAGE_FAILED,
	ZLB_C_TUPLE_RECORDED,
	ZLB_C_TUPLE_FAILED,
	ZLB_C_GETPEERNAME_REWRITTEN,
	ZLB_C_SHORTCUT_SOCKETS,
	ZLB_C_SKIP_PROXY_EXITING, // listener still registered, its process exiting
	ZLB_C_PROXY_EXITS,        // a registered proxy process began to exit
	ZLB_C_SKIP_OPTED_OUT,     // the caller's cgroup or an ancestor is in zlb_optout
	ZLB_C_MAX,
};

// Addresses are four big-endian 32-bit words; IPv4 uses addr[0] only.
// Ports are in network byte order.
struct svc_key {
	__u32 addr[4];
	__u16 port;
	__u8 family;
	__u8 pad;
};

struct config {
	__u64 host_netns; // the agent's namespace: never redirected
	__u32 proxy4;
	__u32 proxy6[4];
	__u16 port4;
	__u16 port6;
	__u32 mark;
	enum zlb_cfg_flag flags; // a set of bits; also puts the enum in BTF for bpf2go
};

// listener_owner is the process that registered a listener slot, by its
// thread-group id in the initial pid namespace (what the tracing programs
// see, whatever namespace the proxy runs in), and whether it has begun to
// exit. Written by zlb_claim in the registering process, then by the
// tracing programs; 0 is no owner.
struct listener_owner {
	__u32 tgid;
	__u32 exiting;
};

// claim_args is zlb_claim's context (BPF_PROG_RUN input).
struct claim_args {
	__u32 slot;
};

// Just the fields the tracing programs read, relocated against the running
// kernel's BTF (CO-RE: the ___zlb suffix is dropped when matching names).
struct signal_struct___zlb {
	struct {
		int counter;
	} live;
	unsigned int flags;
} __attribute__((preserve_access_index));

struct task_struct___zlb {
	int tgid;
	struct signal_struct___zlb *signal;
} __attribute__((preserve_access_index));

struct orig_dst {
	__u32 addr[4];
	__u16 port;
	__u8 family;
	__u8 flags;
	__u32 service_id;
};

// tuple_key names a connection as the proxy sees it on accept: client is
// the pod's address and port, proxy the proxy's. v4-mapped sockets are
// keyed as IPv4, which is what an IPv4 (or dual-stack, unmapped) proxy sees.
// side is 0 for the pod's socket and 1 for the proxy's accepted socket
// (zlb_shortcut only; always 0 in zlb_tuples).
struct tuple_key {
	__u32 client[4];
	__u32 proxy[4];
	__u16 client_port;
	__u16 proxy_port;
	__u8 family;
	__u8 side;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} zlb_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct svc_key);
	__type(value, __u32);
} zlb_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u8);
} zlb_netns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct orig_dst);
} zlb_origdst SEC(".maps");

// zlb_optout holds the cgroup-v2 ids of cgroups whose processes are never
// redirected (a pod's cgroup: every container below it). Written by the
// agent from the pods' zonelb.io/redirect label.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u8);
} zlb_optout SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct tuple_key);
	__type(value, struct orig_dst);
} zlb_tuples SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, ZLB_LISTENER_SLOTS);
	__type(key, enum zlb_listener_slot); // also puts the enum in BTF for bpf2go
	__type(value, __u64);
} zlb_listeners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct listener_owner);
} zlb_owners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, struct tuple_key);
	__type(value, __u64);
} zlb_shortcut SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ZLB_C_MAX);
	__type(key, enum zlb_counter); // also puts the enum in BTF for bpf2go
	__type(value, __u64);
} zlb_counters SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *v = bpf_map_lookup_elem(&zlb_counters, &which);
	if (v)
		*v += 1; // per-CPU slot: no atomics needed
}

static __always_inline struct config *load_config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&zlb_config, &zero);
}

// proxy_up reports whether the proxy's listener for this family is in the
// SOCKMAP right now. The lookup takes a reference that must be dropped.
static __always_inline int proxy_up(__u32 slot)
{
	struct bpf_sock *l = bpf_map_lookup_elem(&zlb_listeners, &slot);
	if (!l)
		return 0;
	bpf_sk_release(l);
	return 1;
}

// ZLB_OPTOUT_DEPTH bounds the ancestor walk: a pod's cgroup sits a few
// levels below the root (kubepods[/qos]/pod<uid>, under a slice or the
// kubelet's cgroup root); containers one level below it.
#define ZLB_OPTOUT_DEPTH 16

// opted_out reports whether the calling task's cgroup-v2 cgroup, or one of
// its ancestors, is in zlb_optout. Walking every level up from the root
// finds the pod's cgroup whatever the layout (cgroupfs or systemd, any
// QoS class, any cgroup root); levels below the task's own return id 0.
static __always_inline int opted_out(void)
{
	for (int level = 1; level < ZLB_OPTOUT_DEPTH; level++) {
		__u64 id = bpf_get_current_ancestor_cgroup_id(level);
		if (id == 0)
			return 0;
		if (bpf_map_lookup_elem(&zlb_optout, &id))
			return 1;
	}
	return 0;
}

// steer runs the checks common to connect4 and connect6. It returns the
// service id (> 0 never assumed: 0 is a valid id) through *svc and 1 when
// the connect must be redirected.
static __always_inline int steer(struct bpf_sock_addr *ctx, struct config *cfg,
				 struct svc_key *key, __u32 slot, __u32 *svc)
{
	if (ctx->type != ZLB_SOCK_STREAM || ctx->protocol != IPPROTO_TCP) {
		count(ZLB_C_SKIP_NOT_TCP);
		return 0;
	}
	__u64 cookie = bpf_get_netns_cookie(ctx);
	if (cookie == cfg->host_netns || cookie == bpf_get_netns_cookie(NULL)) {
		count(ZLB_C_SKIP_HOST_NETNS);
		return 0;
	}
	// With ENROLL_ALL the attach cgroup is the scope (on a node: the pods'
	// cgroups); otherwise only namespaces enrolled one by one.
	if (!(cfg->flags & ZLB_CFG_ENROLL_ALL) && !bpf_map_lookup_elem(&zlb_netns, &cookie)) {
		count(ZLB_C_SKIP_NOT_ENROLLED);
		return 0;
	}
	__u32 *id = bpf_map_lookup_elem(&zlb_services, key);
	if (!id) {
		count(ZLB_C_SKIP_NOT_SELECTED);
		return 0;
	}
	if (opted_out()) {
		count(ZLB_C_SKIP_OPTED_OUT);
		return 0;
	}
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 0;
	if (cfg->mark && (sk->mark & cfg->mark) == cfg->mark) {
		count(ZLB_C_SKIP_MARKED);
		return 0;
	}
	if (slot == ZLB_LISTENER_V6 && cfg->port6 == 0) {
		count(ZLB_C_SKIP_NO_V6_PROXY);
		return 0;
	}
	if (!proxy_up(slot)) {
		count(ZLB_C_SKIP_PROXY_DOWN);
		return 0;
	}
	struct listener_owner *owner = bpf_map_lookup_elem(&zlb_owners, &slot);
	if (owner && owner->exiting) {
		count(ZLB_C_SKIP_PROXY_EXITING);
		return 0;
	}
	*svc = *id;
	return 1;
}

static __always_inline struct orig_dst *remember(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return NULL;
	struct orig_dst *od = bpf_sk_storage_get(&zlb_origdst, sk, 0,
						 BPF_SK_STORAGE_GET_F_CREATE);
	if (!od)
		count(ZLB_C_STORAGE_FAILED);
	return od;
}

SEC("cgroup/connect4")
int zlb_connect4(struct bpf_sock_addr *ctx)
{
	struct config *cfg = load_config();
	if (!cfg || cfg->port4 == 0)
		return 1;

	struct svc_key key = {};
	key.family = ZLB_FAMILY_V4;
	key.addr[0] = ctx->user_ip4;
	key.port = (__u16)ctx->user_port;

	__u32 svc = 0;
	if (!steer(ctx, cfg, &key, ZLB_LISTENER_V4, &svc))
		return 1;
	struct orig_dst *od = remember(ctx);
	if (!od)
		return 1; // cannot recover the destination later: do not redirect
	od->family = ZLB_FAMILY_V4;
	od->flags = 0;
	od->addr[0] = key.addr[0];
	od->addr[1] = 0;
	od->addr[2] = 0;
	od->addr[3] = 0;
	od->port = key.port;
	od->service_id = svc;

	ctx->user_ip4 = cfg->proxy4;
	ctx->user_port = cfg->port4;
	count(ZLB_C_REDIRECTED);
	return 1;
}

static __always_inline int is_v4_mapped(__u32 a0, __u32 a1, __u32 a2)
{
	return a0 == 0 && a1 == 0 && a2 == bpf_htonl(0x0000ffff);
}

SEC("cgroup/connect6")
int zlb_connect6(struct bpf_sock_addr *ctx)
{
	struct config *cfg = load_config();
	if (!cfg)
		return 1;

	__u32 a0 = ctx->user_ip6[0], a1 = ctx->user_ip6[1];
	__u32 a2 = ctx->user_ip6[2], a3 = ctx->user_ip6[3];
	int mapped = is_v4_mapped(a0, a1, a2);
	if (mapped && cfg->port4 == 0)
		return 1;

	struct svc_key key = {};
	key.port = (__u16)ctx->user_port;
	if (mapped) {
		key.family = ZLB_FAMILY_V4;
		key.addr[0] = a3;
	} else {
		key.family = ZLB_FAMILY_V6;
		key.addr[0] = a0;
		key.addr[1] = a1;
		key.addr[2] = a2;
		key.addr[3] = a3;
	}

	__u32 svc = 0;
	__u32 slot = mapped ? ZLB_LISTENER_V4 : ZLB_LISTENER_V6;
	if (!steer(ctx, cfg, &key, slot, &svc))
		return 1;
	struct orig_dst *od = remember(ctx);
	if (!od)
		return 1;
	od->family = key.family;
	od->flags = mapped ? ZLB_ORIG_V4_MAPPED : 0;
	od->addr[0] = key.addr[0];
	od->addr[1] = key.addr[1];
	od->addr[2] = key.addr[2];
	od->addr[3] = key.addr[3];
	od->port = key.port;
	od->service_id = svc;

	if (mapped) {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0x0000ffff);
		ctx->user_ip6[3] = cfg->proxy4;
		ctx->user_port = cfg->port4;
	} else {
		ctx->user_ip6[0] = cfg->proxy6[0];
		ctx->user_ip6[1] = cfg->proxy6[1];
		ctx->user_ip6[2] = cfg->proxy6[2];
		ctx->user_ip6[3] = cfg->proxy6[3];
		ctx->user_port = cfg->port6;
	}
	count(ZLB_C_REDIRECTED);
	return 1;
}

SEC("cgroup/getpeername4")
int zlb_getpeername4(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 1;
	struct orig_dst *od = bpf_sk_storage_get(&zlb_origdst, sk, 0, 0);
	if (!od || od->family != ZLB_FAMILY_V4 || (od->flags & ZLB_ORIG_V4_MAPPED))
		return 1;
	ctx->user_ip4 = od->addr[0];
	ctx->user_port = od->port;
	count(ZLB_C_GETPEERNAME_REWRITTEN);
	return 1;
}

SEC("cgroup/getpeername6")
int zlb_getpeername6(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 1;
	struct orig_dst *od = bpf_sk_storage_get(&zlb_origdst, sk, 0, 0);
	if (!od)
		return 1;
	if (od->flags & ZLB_ORIG_V4_MAPPED) {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0x0000ffff);
		ctx->user_ip6[3] = od->addr[0];
	} else if (od->family == ZLB_FAMILY_V6) {
		ctx->user_ip6[0] = od->addr[0];
		ctx->user_ip6[1] = od->addr[1];
		ctx->user_ip6[2] = od->addr[2];
		ctx->user_ip6[3] = od->addr[3];
	} else {
		return 1;
	}
	ctx->user_port = od->port;
	count(ZLB_C_GETPEERNAME_REWRITTEN);
	return 1;
}

// local_is_client selects which end of the socket is the pod: 1 for the
// pod's own (active) socket, 0 for the proxy's accepted (passive) socket.
static __always_inline int tuple_from_sockops(struct bpf_sock_ops *skops,
					      struct tuple_key *key,
					      int local_is_client)
{
	__u16 local_port = bpf_htons((__u16)ctx_read(skops->local_port));
	__u16 remote_port = (__u16)(ctx_read(skops->remote_port) >> 16);
	__u32 l[4], r[4];

	if (ctx_read(skops->family) == ZLB_AF_INET) {
		key->family = ZLB_FAMILY_V4;
		l[0] = ctx_read(skops->local_ip4);
		r[0] = ctx_read(skops->remote_ip4);
		l[1] = l[2] = l[3] = 0;
		r[1] = r[2] = r[3] = 0;
	} else if (ctx_read(skops->family) == ZLB_AF_INET6) {
		__u32 r0 = ctx_read(skops->remote_ip6[0]), r1 = ctx_read(skops->remote_ip6[1]);
		__u32 r2 = ctx_read(skops->remote_ip6[2]), r3 = ctx_read(skops->remote_ip6[3]);
		if (is_v4_mapped(r0, r1, r2)) {
			key->family = ZLB_FAMILY_V4;
			l[0] = ctx_read(skops->local_ip6[3]);
			r[0] = r3;
			l[1] = l[2] = l[3] = 0;
			r[1] = r[2] = r[3] = 0;
		} else {
			key->family = ZLB_FAMILY_V6;
			l[0] = ctx_read(skops->local_ip6[0]);
			l[1] = ctx_read(skops->local_ip6[1]);
			l[2] = ctx_read(skops->local_ip6[2]);
			l[3] = ctx_read(skops->local_ip6[3]);
			r[0] = r0;
			r[1] = r1;
			r[2] = r2;
			r[3] = r3;
		}
	} else {
		return 0;
	}

	if (local_is_client) {
		__builtin_memcpy(key->client, l, sizeof(l));
		__builtin_memcpy(key->proxy, r, sizeof(r));
		key->client_port = local_port;
		key->proxy_port = remote_port;
	} else {
		__builtin_memcpy(key->client, r, sizeof(r));
		__builtin_memcpy(key->proxy, l, sizeof(l));
		key->client_port = remote_port;
		key->proxy_port = local_port;
	}
	return 1;
}

static __always_inline int is_proxy_endpoint(struct config *cfg, struct tuple_key *key)
{
	if (key->family == ZLB_FAMILY_V4)
		return cfg->port4 && key->proxy[0] == cfg->proxy4 &&
		       key->proxy_port == cfg->port4;
	return cfg->port6 && key->proxy_port == cfg->port6 &&
	       key->proxy[0] == cfg->proxy6[0] && key->proxy[1] == cfg->proxy6[1] &&
	       key->proxy[2] == cfg->proxy6[2] && key->proxy[3] == cfg->proxy6[3];
}

SEC("sockops")
int zlb_sockops(struct bpf_sock_ops *skops)
{
	struct tuple_key key = {};

	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB: {
		struct bpf_sock *sk = skops->sk;
		if (!sk)
			return 1;
		struct orig_dst *od = bpf_sk_storage_get(&zlb_origdst, sk, 0, 0);
		if (!od)
			return 1; // not a redirected socket
		if (!tuple_from_sockops(skops, &key, 1))
			return 1;
		if (bpf_map_update_elem(&zlb_tuples, &key, od, BPF_ANY) == 0)
			count(ZLB_C_TUPLE_RECORDED);
		else
			count(ZLB_C_TUPLE_FAILED);
		// Ask for state changes so that the entry goes at close.
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
						   BPF_SOCK_OPS_STATE_CB_FLAG);
		struct config *cfg = load_config();
		if (cfg && (cfg->flags & ZLB_CFG_SHORTCUT)) {
			key.side = 0;
			if (bpf_sock_hash_update(skops, &zlb_shortcut, &key, BPF_ANY) == 0)
				count(ZLB_C_SHORTCUT_SOCKETS);
		}
		return 1;
	}
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB: {
		struct config *cfg = load_config();
		if (!cfg || !(cfg->flags & ZLB_CFG_SHORTCUT))
			return 1;
		if (!tuple_from_sockops(skops, &key, 0))
			return 1;
		if (!is_proxy_endpoint(cfg, &key))
			return 1;
		key.side = 1;
		if (bpf_sock_hash_update(skops, &zlb_shortcut, &key, BPF_ANY) == 0)
			count(ZLB_C_SHORTCUT_SOCKETS);
		return 1;
	}
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] != BPF_TCP_CLOSE)
			return 1;
		if (!tuple_from_sockops(skops, &key, 1))
			return 1;
		bpf_map_delete_elem(&zlb_tuples, &key);
		return 1;
	}
	return 1;
}

// zlb_shortcut_msg hands data written on one end of a pod<->proxy
// connection straight to the peer socket's receive queue, skipping the TCP
// stack in between. Without a peer entry the message takes the normal path.
SEC("sk_msg")
int zlb_shortcut_msg(struct sk_msg_md *msg)
{
	struct tuple_key key = {};
	__u16 local_port = bpf_htons((__u16)ctx_read(msg->local_port));
	__u16 remote_port = (__u16)(ctx_read(msg->remote_port) >> 16);
	__u32 l[4] = {}, r[4] = {};

	if (ctx_read(msg->family) == ZLB_AF_INET) {
		key.family = ZLB_FAMILY_V4;
		l[0] = ctx_read(msg->local_ip4);
		r[0] = ctx_read(msg->remote_ip4);
	} else if (ctx_read(msg->family) == ZLB_AF_INET6) {
		__u32 r0 = ctx_read(msg->remote_ip6[0]), r1 = ctx_read(msg->remote_ip6[1]);
		__u32 r2 = ctx_read(msg->remote_ip6[2]), r3 = ctx_read(msg->remote_ip6[3]);
		if (is_v4_mapped(r0, r1, r2)) {
			key.family = ZLB_FAMILY_V4;
			l[0] = ctx_read(msg->local_ip6[3]);
			r[0] = r3;
		} else {
			key.family = ZLB_FAMILY_V6;
			l[0] = ctx_read(msg->local_ip6[0]);
			l[1] = ctx_read(msg->local_ip6[1]);
			l[2] = ctx_read(msg->local_ip6[2]);
			l[3] = ctx_read(msg->local_ip6[3]);
			r[0] = r0;
			r[1] = r1;
			r[2] = r2;
			r[3] = r3;
		}
	} else {
		return SK_PASS;
	}

	// Try the pod's view first: this socket is the pod's, the peer is the
	// proxy's accepted socket (side 1).
	__builtin_memcpy(key.client, l, sizeof(l));
	__builtin_memcpy(key.proxy, r, sizeof(r));
	key.client_port = local_port;
	key.proxy_port = remote_port;
	key.side = 1;
	if (bpf_msg_redirect_hash(msg, &zlb_shortcut, &key, BPF_F_INGRESS) == SK_PASS)
		return SK_PASS;

	// Otherwise this is the proxy's socket and the peer is the pod's.
	__builtin_memcpy(key.client, r, sizeof(r));
	__builtin_memcpy(key.proxy, l, sizeof(l));
	key.client_port = remote_port;
	key.proxy_port = local_port;
	key.side = 0;
	bpf_msg_redirect_hash(msg, &zlb_shortcut, &key, BPF_F_INGRESS);
	return SK_PASS;
}

// zlb_claim records the calling process as the owner of a listener slot,
// not exiting. The proxy runs it (BPF_PROG_RUN) right before it puts its
// listener in zlb_listeners: only a BPF program knows the caller's tgid in
// the initial pid namespace.
SEC("syscall")
int zlb_claim(struct claim_args *args)
{
	__u32 slot = args->slot;
	if (slot > ZLB_LISTENER_V6)
		return 1;
	struct listener_owner owner = {
		.tgid = bpf_get_current_pid_tgid() >> 32,
		.exiting = 0,
	};
	if (bpf_map_update_elem(&zlb_owners, &slot, &owner, BPF_ANY))
		return 1;
	return 0;
}

// owner_exiting marks every slot owned by tgid as exiting.
static __always_inline void owner_exiting(__u32 tgid)
{
	if (tgid == 0)
		return;
#pragma unroll
	for (__u32 i = 0; i <= ZLB_LISTENER_V6; i++) {
		__u32 slot = i;
		struct listener_owner *o = bpf_map_lookup_elem(&zlb_owners, &slot);
		if (o && o->tgid == tgid && !o->exiting) {
			o->exiting = 1;
			count(ZLB_C_PROXY_EXITS);
		}
	}
}

static __always_inline int owns_a_slot(__u32 tgid)
{
#pragma unroll
	for (__u32 i = 0; i <= ZLB_LISTENER_V6; i++) {
		__u32 slot = i;
		struct listener_owner *o = bpf_map_lookup_elem(&zlb_owners, &slot);
		if (o && o->tgid == tgid && tgid != 0)
			return 1;
	}
	return 0;
}

// zlb_signal_generate: a SIGKILL delivered to the proxy (kubelet, the OOM
// killer, kill -9) dooms it at once, before any of its threads runs again:
// from here on no connect is steered to it. tp_btf/signal_generate args:
// (int sig, struct kernel_siginfo *info, struct task_struct *task,
//  int group, int result).
SEC("tp_btf/signal_generate")
int zlb_signal_generate(__u64 *ctx)
{
	if ((int)ctx[0] != ZLB_SIGKILL || (int)ctx[4] != ZLB_TRACE_SIGNAL_DELIVERED)
		return 0;
	struct task_struct___zlb *task = (struct task_struct___zlb *)ctx[2];
	owner_exiting(task->tgid);
	return 0;
}

// zlb_process_exit: any other way out (a Go panic or fatal error and
// os.Exit all end in exit_group; a fatal signal other than SIGKILL) runs
// do_exit in every thread; the first one is still long before the process
// closes its files. Only a group exit counts (or the last thread): a
// single thread ending (a locked goroutine's thread) is not the proxy
// going away. tp_btf/sched_process_exit args: (struct task_struct *p[,
// bool group_dead]).
SEC("tp_btf/sched_process_exit")
int zlb_process_exit(__u64 *ctx)
{
	struct task_struct___zlb *task = (struct task_struct___zlb *)ctx[0];
	__u32 tgid = task->tgid;
	if (!owns_a_slot(tgid))
		return 0;
	struct signal_struct___zlb *sig = task->signal;
	if ((sig->flags & ZLB_SIGNAL_GROUP_EXIT) || sig->live.counter == 0)
		owner_exiting(tgid);
	return 0;
}

// zlb_go_crash: the Go runtime begins to crash. The proxy attaches it as a
// uprobe on runtime.startpanic_m in its own executable, for its own pid
// only: every unrecovered panic, fatal error (throw) and fatal signal
// passes there before the runtime prints its report, which can take
// milliseconds (all goroutines' stacks) while the process still holds its
// listener and no longer serves it. Exit (zlb_process_exit) comes after.
SEC("uprobe")
int zlb_go_crash(void *ctx)
{
	owner_exiting(bpf_get_current_pid_tgid() >> 32);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
