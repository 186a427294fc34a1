// SPDX-License-Identifier: Apache-2.0
/*
 * eni-ipam datapath: two TC ingress programs.
 *
 * from_pod  on the host side of each pod veth: anti-spoofing, then
 *           same-node pods: redirect into the peer pod (bpf_redirect_peer),
 *           destinations in host_routes: the node's stack,
 *           others: rewrite MACs and send out of the ENI owning the source IP.
 * from_eni  on each ENI: packets for a local pod go straight into the pod
 *           (bpf_redirect_peer); everything else passes to the node's stack.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <stddef.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "eni_ipam.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ENI_IPAM_MAX_ENDPOINTS);
	__type(key, struct endpoint_key);
	__type(value, struct endpoint_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ENI_IPAM_MAX_ENDPOINTS);
	__type(key, __u32);
	__type(value, struct veth_owner);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pod_veths SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 256);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct host_route_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} host_routes SEC(".maps");

/*
 * Indexed by counter slot (allocated by the agent); slot 0 collects drops on attached veths
 * without an endpoint. An array, not a hash: the JIT inlines the lookup.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ENI_IPAM_MAX_ENDPOINTS + 1);
	__type(key, __u32);
	__type(value, struct endpoint_counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} endpoint_counters SEC(".maps");

static __always_inline struct endpoint_counters *counters_of(__u32 slot)
{
	return bpf_map_lookup_elem(&endpoint_counters, &slot);
}

static __always_inline void count_drop(__u32 slot, __u32 reason)
{
	struct endpoint_counters *c = counters_of(slot);

	if (c && reason < ENI_IPAM_DROP_REASONS)
		c->drops[reason] += 1;
}

/* Decrements the TTL with an incremental checksum update, as a router does. */
static __always_inline void decrement_ttl(struct iphdr *ip)
{
	__u32 sum = ip->check;

	sum += bpf_htons(0x0100);
	ip->check = (__u16)(sum + (sum >= 0xffff));
	ip->ttl -= 1;
}

static __always_inline void set_macs(struct ethhdr *eth, const __u8 *src, const __u8 *dst)
{
	__builtin_memcpy(eth->h_source, src, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, dst, ETH_ALEN);
}

/* Parses Ethernet + IPv4; returns NULL for anything else (passed to the stack). */
static __always_inline struct iphdr *ipv4_header(struct __sk_buff *skb, struct ethhdr **eth)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *e = data;
	struct iphdr *ip = data + sizeof(*e);

	if ((void *)(ip + 1) > data_end)
		return NULL;
	if (e->h_proto != bpf_htons(ETH_P_IP) || ip->ihl < 5 || ip->version != 4)
		return NULL;
	*eth = e;
	return ip;
}

SEC("classifier")
int from_pod(struct __sk_buff *skb)
{
	struct ethhdr *eth;
	struct iphdr *ip = ipv4_header(skb, &eth);

	if (!ip)
		return TC_ACT_OK;

	__u32 veth = skb->ifindex;
	struct endpoint_key src = {.pod_ip = ip->saddr};
	struct endpoint_info *self = bpf_map_lookup_elem(&endpoints, &src);

	if (!self || self->pod_veth_ifindex != veth) {
		struct veth_owner *owner = bpf_map_lookup_elem(&pod_veths, &veth);

		if (owner)
			count_drop(owner->counter_slot, ENI_IPAM_DROP_SPOOFED_SOURCE);
		else
			count_drop(ENI_IPAM_UNATTRIBUTED_SLOT, ENI_IPAM_DROP_UNKNOWN_VETH);
		return TC_ACT_SHOT;
	}
	/* Let the kernel answer with ICMP time exceeded. */
	if (ip->ttl <= 1)
		return TC_ACT_OK;

	__u64 len = skb->len;
	struct endpoint_key dst = {.pod_ip = ip->daddr};
	struct endpoint_info *peer = bpf_map_lookup_elem(&endpoints, &dst);

	if (!peer) {
		struct host_route_key host = {.prefixlen = 32, .addr = ip->daddr};

		if (bpf_map_lookup_elem(&host_routes, &host))
			return TC_ACT_OK;
	}
	struct endpoint_counters *c = counters_of(self->counter_slot);

	if (c) {
		c->tx_packets += 1;
		c->tx_bytes += len;
	}
	decrement_ttl(ip);
	if (peer) {
		struct endpoint_counters *pc = counters_of(peer->counter_slot);

		if (pc) {
			pc->rx_packets += 1;
			pc->rx_bytes += len;
		}
		set_macs(eth, eth->h_dest, peer->pod_mac);
		return bpf_redirect_peer(peer->pod_veth_ifindex, 0);
	}
	set_macs(eth, self->eni_mac, self->gateway_mac);
	return bpf_redirect(self->eni_ifindex, 0);
}

SEC("classifier")
int from_eni(struct __sk_buff *skb)
{
	struct ethhdr *eth;
	struct iphdr *ip = ipv4_header(skb, &eth);

	if (!ip)
		return TC_ACT_OK;

	struct endpoint_key dst = {.pod_ip = ip->daddr};
	struct endpoint_info *pod = bpf_map_lookup_elem(&endpoints, &dst);

	if (!pod || ip->ttl <= 1)
		return TC_ACT_OK;

	struct endpoint_counters *c = counters_of(pod->counter_slot);

	if (c) {
		c->rx_packets += 1;
		c->rx_bytes += skb->len;
	}
	decrement_ttl(ip);
	set_macs(eth, eth->h_dest, pod->pod_mac);
	return bpf_redirect_peer(pod->pod_veth_ifindex, 0);
}

#ifdef ENI_IPAM_UPGRADE_TEST
/*
 * Only in the "next version" object build.rs compiles for datapath/tests/upgrade.rs: one
 * more map, so the object and its map layout both differ from this build's.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} upgrade_test SEC(".maps");
#endif
