/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Map keys and values shared by the eni-ipam eBPF programs and the agent.
 * The Rust twin is datapath/src/abi.rs; a test compares sizes and field offsets.
 * All IPv4 addresses are in network byte order, as they appear in the packet.
 */
#ifndef ENI_IPAM_H
#define ENI_IPAM_H

#include <linux/types.h>

/* Maximum number of pods on one node (entries of each map). */
#define ENI_IPAM_MAX_ENDPOINTS 4096

/* Why a packet was dropped: index into endpoint_counters.drops. */
enum eni_ipam_drop_reason {
	/* A pod sent from an address that is not its own. */
	ENI_IPAM_DROP_SPOOFED_SOURCE = 0,
	/* A packet arrived on an attached pod veth that has no endpoint. */
	ENI_IPAM_DROP_UNKNOWN_VETH = 1,
	/* An ARP packet from a pod whose sender IP is not the pod's own. */
	ENI_IPAM_DROP_ARP_SPOOFED = 2,
	/* An IPv6 packet from a pod (not supported yet). */
	ENI_IPAM_DROP_IPV6 = 3,
	/* A frame from a pod that is neither IPv4 nor ARP (VLAN-tagged frames included). */
	ENI_IPAM_DROP_NOT_IP = 4,
	/* An IPv4 frame from a pod too short for its header, or with a bad version or IHL. */
	ENI_IPAM_DROP_MALFORMED = 5,
	ENI_IPAM_DROP_REASONS = 6,
};

/* Key of `endpoints`: the pod's IPv4 address. */
struct endpoint_key {
	__u32 pod_ip;
};

/* Value of `endpoints`: where a pod lives and how its packets leave the node. */
struct endpoint_info {
	/* Host-side veth of the pod (in the node's namespace). */
	__u32 pod_veth_ifindex;
	/* ENI that owns the pod's IP: egress goes out of it. */
	__u32 eni_ifindex;
	/* MAC of the pod's eth0 (destination of packets to the pod). */
	__u8 pod_mac[6];
	/* MAC of the ENI (source of packets leaving through it). */
	__u8 eni_mac[6];
	/* MAC of the VPC gateway behind the ENI (destination of egress). */
	__u8 gateway_mac[6];
	__u8 _pad[2];
	/* Index of the pod's entry in `endpoint_counters` (1..=MAX; 0 is unattributed). */
	__u32 counter_slot;
};

/* Value of `pod_veths` (key: host-side veth ifindex): the pod IP it carries. */
struct veth_owner {
	__u32 pod_ip;
	/* Same as the pod's endpoint_info.counter_slot (spoof drops are counted there). */
	__u32 counter_slot;
};

/*
 * Bit of skb->mark that the node's netfilter sets (eni-ipam's nft table, postrouting, after
 * NAT) on packets of flows conntrack has NATed (kube-proxy's Service DNAT, masquerade,
 * portmap's hostPort DNAT). The datapath sends the packets of such flows through the node's
 * stack so conntrack can reverse the NAT.
 */
#define ENI_IPAM_NAT_MARK 0x01000000

/* Entries of the LRU hash `nat_flows`. */
#define ENI_IPAM_NAT_FLOWS 262144

/*
 * Key of `nat_flows`: an IPv4 TCP or UDP 5-tuple as it appears in a packet at TC ingress
 * (addresses and ports in network byte order). `nat_learn` writes the reverse of each
 * NAT-marked packet it sees leave, that is the tuple of the flow's replies; the value is the
 * last time (bpf_ktime_get_ns) a packet of the flow was seen, a __u64.
 */
struct nat_flow_key {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	/* IPPROTO_TCP or IPPROTO_UDP. */
	__u8 proto;
	__u8 _pad[3];
};

/* Slot of `endpoint_counters` for drops on attached veths without an endpoint. */
#define ENI_IPAM_UNATTRIBUTED_SLOT 0

/*
 * Key of the LPM trie `host_routes`: destinations a pod reaches through the node's own
 * stack (node addresses, service CIDR, link-local) instead of out of its ENI.
 */
struct host_route_key {
	__u32 prefixlen;
	__u32 addr;
};

/* Value of the per-CPU array `endpoint_counters`, indexed by counter slot. */
struct endpoint_counters {
	/* Packets and bytes sent by the pod and forwarded by the datapath. */
	__u64 tx_packets;
	__u64 tx_bytes;
	/* Packets and bytes delivered to the pod by the datapath. */
	__u64 rx_packets;
	__u64 rx_bytes;
	/* Drops, indexed by enum eni_ipam_drop_reason. */
	__u64 drops[ENI_IPAM_DROP_REASONS];
};

#endif
