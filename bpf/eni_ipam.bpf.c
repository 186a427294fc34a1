// SPDX-License-Identifier: Apache-2.0
/*
 * eni-ipam datapath: two TC ingress programs and one TC egress program.
 *
 * The fast path (a redirect that bypasses the node's stack) takes only IPv4 TCP or UDP, not
 * a fragment, TTL > 1, whose 5-tuple is not in `nat_flows` (replies of flows the node's
 * netfilter NATed). Everything else goes to the node's stack (TC_ACT_OK), where policy
 * routing sends it out of the right ENI and conntrack reverses NAT.
 *
 * from_pod   on the host side of each pod veth: anti-spoofing on every frame (ARP only for
 *            the pod's own address, IPv4 only from it, everything else dropped and counted),
 *            then for the fast path: a pod on the node: redirect into it (bpf_redirect_peer);
 *            a destination in host_routes: the node's stack; others: rewrite MACs and send
 *            out of the ENI owning the source IP.
 * from_eni   on each ENI: fast-path packets for a local pod go straight into the pod
 *            (bpf_redirect_peer); everything else passes to the node's stack.
 * nat_learn  at TC egress of each pod veth (host side) and each ENI: for packets the node's
 *            netfilter marked with ENI_IPAM_NAT_MARK (flows conntrack NATed), records the
 *            reverse 5-tuple in nat_flows so that replies go through the stack.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
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

/* Reply tuples of NATed flows (written by nat_learn, read by the fast path). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, ENI_IPAM_NAT_FLOWS);
	__type(key, struct nat_flow_key);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nat_flows SEC(".maps");

/*
 * An ARP packet for IPv4 over Ethernet (RFC 826), as it follows the Ethernet header
 * (linux/if_arp.h is not used: it pulls in libc headers a BPF build cannot take).
 */
#define ARP_HW_ETHER 1
struct arp_ipv4 {
	__be16 hw_type;
	__be16 proto_type;
	__u8 hw_len;
	__u8 proto_len;
	__be16 op;
	__u8 sender_mac[ETH_ALEN];
	__be32 sender_ip;
	__u8 target_mac[ETH_ALEN];
	__be32 target_ip;
} __attribute__((packed));

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

/*
 * Drops a frame that arrived from pod veth `veth`, counted against the veth's pod, or as
 * unknown_veth (unattributed) when the veth has no pod.
 */
static __always_inline int drop_from_veth(__u32 veth, __u32 reason)
{
	struct veth_owner *owner = bpf_map_lookup_elem(&pod_veths, &veth);

	if (owner)
		count_drop(owner->counter_slot, reason);
	else
		count_drop(ENI_IPAM_UNATTRIBUTED_SLOT, ENI_IPAM_DROP_UNKNOWN_VETH);
	return TC_ACT_SHOT;
}

/* Packets an skb stands for: a GSO skb leaves as gso_segs segments. */
static __always_inline __u64 packets_of(struct __sk_buff *skb)
{
	__u32 segs = skb->gso_segs;

	return segs > 1 ? segs : 1;
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

/*
 * Makes sure the first `len` bytes of the frame are in the linear buffer, pulling them in
 * (bpf_skb_pull_data) when they are not. Returns 0 when they are there; -1 when the frame is
 * shorter. Packet pointers taken before a call are invalid after it.
 */
static __always_inline int make_linear(struct __sk_buff *skb, __u32 len)
{
	if ((void *)(long)skb->data + len <= (void *)(long)skb->data_end)
		return 0;
	if (skb->len < len || bpf_skb_pull_data(skb, len))
		return -1;
	return 0;
}

/* What the IPv4 parser found. */
enum ipv4_parse {
	IPV4_OK,
	/* Shorter than its header, or a bad version or IHL. */
	IPV4_MALFORMED,
};

/*
 * Finds the IPv4 header of an Ethernet frame whose EtherType is IPv4, pulling it into the
 * linear buffer when needed.
 */
static __always_inline enum ipv4_parse ipv4_header(struct __sk_buff *skb, struct ethhdr **eth,
						   struct iphdr **ip)
{
	if (make_linear(skb, sizeof(struct ethhdr) + sizeof(struct iphdr)))
		return IPV4_MALFORMED;

	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *e = data;
	struct iphdr *i = data + sizeof(*e);

	if ((void *)(i + 1) > data_end)
		return IPV4_MALFORMED;
	if (i->version != 4 || i->ihl < 5)
		return IPV4_MALFORMED;
	*eth = e;
	*ip = i;
	return IPV4_OK;
}

/*
 * Whether an IPv4 packet may take the fast path by itself (TCP or UDP, not a fragment,
 * TTL > 1): anything else needs the node's stack (ICMP errors, time exceeded, reassembly).
 */
static __always_inline int fast_path_candidate(const struct iphdr *ip)
{
	return (ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP) &&
	       (ip->frag_off & bpf_htons(0x3fff)) == 0 && ip->ttl > 1;
}

/*
 * Reads the 5-tuple of a TCP or UDP packet whose IPv4 header `*ip` was found by
 * ipv4_header, pulling its ports (the first 4 bytes of the L4 header, the same for both) into
 * the linear buffer when needed; `*eth` and `*ip` are taken again afterwards. Returns 0 on
 * success, -1 if the ports are not in the packet.
 */
static __always_inline int flow_of(struct __sk_buff *skb, struct ethhdr **eth, struct iphdr **ip,
				   struct nat_flow_key *flow)
{
	__u32 l4 = sizeof(struct ethhdr) + (*ip)->ihl * 4;

	if (make_linear(skb, l4 + 2 * sizeof(__be16)))
		return -1;

	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *e = data;
	struct iphdr *i = data + sizeof(*e);
	__be16 *ports = data + l4;

	if ((void *)(i + 1) > data_end || (void *)(ports + 2) > data_end)
		return -1;
	flow->saddr = i->saddr;
	flow->daddr = i->daddr;
	flow->sport = ports[0];
	flow->dport = ports[1];
	flow->proto = i->protocol;
	*eth = e;
	*ip = i;
	return 0;
}

/* Whether the packet with 5-tuple `flow` is a reply of a NATed flow (needs conntrack). */
static __always_inline int is_nat_reply(const struct nat_flow_key *flow)
{
	return bpf_map_lookup_elem(&nat_flows, flow) != NULL;
}

/*
 * ARP from a pod: allowed only when the sender IP is the pod's own, or 0.0.0.0 (an RFC 5227
 * probe, which no neighbour table learns from).
 */
static __always_inline int check_arp(struct __sk_buff *skb, __u32 veth)
{
	struct veth_owner *owner = bpf_map_lookup_elem(&pod_veths, &veth);
	struct arp_ipv4 arp;

	if (!owner)
		return drop_from_veth(veth, ENI_IPAM_DROP_UNKNOWN_VETH);
	if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr), &arp, sizeof(arp)) ||
	    arp.hw_type != bpf_htons(ARP_HW_ETHER) || arp.proto_type != bpf_htons(ETH_P_IP) ||
	    arp.hw_len != ETH_ALEN || arp.proto_len != 4) {
		count_drop(owner->counter_slot, ENI_IPAM_DROP_MALFORMED);
		return TC_ACT_SHOT;
	}
	if (arp.sender_ip != owner->pod_ip && arp.sender_ip != 0) {
		count_drop(owner->counter_slot, ENI_IPAM_DROP_ARP_SPOOFED);
		return TC_ACT_SHOT;
	}
	return TC_ACT_OK;
}

/* Frames that are not IPv4: ARP is checked, everything else dropped with its reason. */
static __always_inline int check_not_ipv4(struct __sk_buff *skb, __u32 veth, __be16 proto)
{
	if (proto == bpf_htons(ETH_P_ARP))
		return check_arp(skb, veth);
	if (proto == bpf_htons(ETH_P_IPV6))
		return drop_from_veth(veth, ENI_IPAM_DROP_IPV6);
	return drop_from_veth(veth, ENI_IPAM_DROP_NOT_IP);
}

SEC("classifier")
int from_pod(struct __sk_buff *skb)
{
	__u32 veth = skb->ifindex;
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	/* A VLAN tag, in the frame or offloaded (vlan_present), is never the pod's to send. */
	if ((void *)(eth + 1) > data_end || skb->vlan_present)
		return drop_from_veth(veth, ENI_IPAM_DROP_NOT_IP);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return check_not_ipv4(skb, veth, eth->h_proto);

	struct iphdr *ip;

	if (ipv4_header(skb, &eth, &ip) != IPV4_OK)
		return drop_from_veth(veth, ENI_IPAM_DROP_MALFORMED);

	struct endpoint_key src = {.pod_ip = ip->saddr};
	struct endpoint_info *self = bpf_map_lookup_elem(&endpoints, &src);

	if (!self || self->pod_veth_ifindex != veth)
		return drop_from_veth(veth, ENI_IPAM_DROP_SPOOFED_SOURCE);
	if (!fast_path_candidate(ip))
		return TC_ACT_OK;

	struct nat_flow_key flow = {};

	if (flow_of(skb, &eth, &ip, &flow) || is_nat_reply(&flow))
		return TC_ACT_OK;

	struct endpoint_key dst = {.pod_ip = flow.daddr};
	struct endpoint_info *peer = bpf_map_lookup_elem(&endpoints, &dst);

	if (!peer) {
		struct host_route_key host = {.prefixlen = 32, .addr = flow.daddr};

		if (bpf_map_lookup_elem(&host_routes, &host))
			return TC_ACT_OK;
	}
	__u64 len = skb->len;
	__u64 packets = packets_of(skb);
	struct endpoint_counters *c = counters_of(self->counter_slot);

	if (c) {
		c->tx_packets += packets;
		c->tx_bytes += len;
	}
	decrement_ttl(ip);
	if (peer) {
		struct endpoint_counters *pc = counters_of(peer->counter_slot);

		if (pc) {
			pc->rx_packets += packets;
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
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;

	if ((void *)(eth + 1) > data_end || skb->vlan_present || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	if (ipv4_header(skb, &eth, &ip) != IPV4_OK || !fast_path_candidate(ip))
		return TC_ACT_OK;

	struct endpoint_key dst = {.pod_ip = ip->daddr};
	struct endpoint_info *pod = bpf_map_lookup_elem(&endpoints, &dst);
	struct nat_flow_key flow = {};

	if (!pod || flow_of(skb, &eth, &ip, &flow) || is_nat_reply(&flow))
		return TC_ACT_OK;

	struct endpoint_counters *c = counters_of(pod->counter_slot);

	if (c) {
		c->rx_packets += packets_of(skb);
		c->rx_bytes += skb->len;
	}
	decrement_ttl(ip);
	set_macs(eth, eth->h_dest, pod->pod_mac);
	return bpf_redirect_peer(pod->pod_veth_ifindex, 0);
}

SEC("classifier")
int nat_learn(struct __sk_buff *skb)
{
	if (!(skb->mark & ENI_IPAM_NAT_MARK) || skb->protocol != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;

	struct iphdr ip;
	__be16 ports[2];

	/* Read by copy: nothing to pull, the frame leaves as it is. */
	if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr), &ip, sizeof(ip)) || ip.version != 4 ||
	    ip.ihl < 5 || (ip.protocol != IPPROTO_TCP && ip.protocol != IPPROTO_UDP) ||
	    (ip.frag_off & bpf_htons(0x1fff)) != 0 ||
	    bpf_skb_load_bytes(skb, sizeof(struct ethhdr) + ip.ihl * 4, ports, sizeof(ports)))
		return TC_ACT_OK;

	/* The reply's tuple, as from_pod / from_eni will read it at TC ingress. */
	struct nat_flow_key reply = {
		.saddr = ip.daddr,
		.daddr = ip.saddr,
		.sport = ports[1],
		.dport = ports[0],
		.proto = ip.protocol,
	};
	__u64 now = bpf_ktime_get_ns();
	__u64 *last_seen = bpf_map_lookup_elem(&nat_flows, &reply);

	if (last_seen)
		*last_seen = now;
	else
		bpf_map_update_elem(&nat_flows, &reply, &now, BPF_ANY);
	return TC_ACT_OK;
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
