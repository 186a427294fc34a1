//! Hand-made Ethernet frames, and a raw (AF_PACKET) sender that puts them on a link as a pod's
//! kernel would, optionally behind a virtio-net header (PACKET_VNET_HDR) so that the kernel
//! builds a GSO or non-linear skb from them. For the datapath's anti-spoofing tests and the
//! per-packet cost runs of `bpftool prog run`.

use std::{ffi::CString, net::Ipv4Addr};

use eni_ipam_datapath::MacAddr;

use crate::Netns;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// An Ethernet header.
pub fn ethernet(dst: MacAddr, src: MacAddr, ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// An IPv4 header (20 bytes, valid checksum) for `payload_len` bytes of `proto`.
pub fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, ttl: u8, payload_len: usize) -> [u8; 20] {
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    let total = u16::try_from(20 + payload_len).expect("an IPv4 packet holds at most 64 KiB");
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = ttl;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    set_ipv4_checksum(&mut ip);
    ip
}

/// Recomputes the checksum of the IPv4 header at the start of `ip` (its IHL says how long).
pub fn set_ipv4_checksum(ip: &mut [u8]) {
    let len = usize::from(ip[0] & 0x0f) * 4;
    ip[10..12].copy_from_slice(&[0, 0]);
    let sum = ip[..len].chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum::<u32>();
    let folded = (sum & 0xffff) + (sum >> 16);
    let folded = (folded & 0xffff) + (folded >> 16);
    ip[10..12].copy_from_slice(&(!(folded as u16)).to_be_bytes());
}

/// Ethernet + IPv4 + UDP (checksum 0: none, valid in IPv4) with `payload_len` bytes of payload.
pub fn udp(
    macs: (MacAddr, MacAddr),
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    ttl: u8,
    payload_len: usize,
) -> Vec<u8> {
    let udp_len = u16::try_from(8 + payload_len).expect("a UDP datagram holds at most 64 KiB");
    let mut udp = [0u8; 8];
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    l4_frame(macs, src, dst, (IPPROTO_UDP, ttl), &udp, payload_len)
}

/// Ethernet + IPv4 + a TCP ACK segment (checksum left to the kernel: see [`VnetHeader::tcp_gso`])
/// with `payload_len` bytes of payload.
pub fn tcp(
    macs: (MacAddr, MacAddr),
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    ttl: u8,
    payload_len: usize,
) -> Vec<u8> {
    let mut tcp = [0u8; 20];
    tcp[4..8].copy_from_slice(&1u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x10; // ACK
    tcp[14..16].copy_from_slice(&65535u16.to_be_bytes());
    l4_frame(macs, src, dst, (IPPROTO_TCP, ttl), &tcp, payload_len)
}

/// Ethernet + IPv4 + `l4` (whose first 4 bytes become the ports) + a counting payload.
fn l4_frame(
    (src_mac, dst_mac): (MacAddr, MacAddr),
    (src, sport): (Ipv4Addr, u16),
    (dst, dport): (Ipv4Addr, u16),
    (proto, ttl): (u8, u8),
    l4: &[u8],
    payload_len: usize,
) -> Vec<u8> {
    let mut f = ethernet(dst_mac, src_mac, ETH_P_IP);
    f.extend_from_slice(&ipv4_header(src, dst, proto, ttl, l4.len() + payload_len));
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&l4[4..]);
    f.extend((0..payload_len).map(|i| (i % 251) as u8));
    f
}

/// An ARP request for IPv4 over Ethernet: `sender_ip` at `src_mac` asks for `target_ip`.
pub fn arp_request(src_mac: MacAddr, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    let mut f = ethernet(MacAddr([0xff; 6]), src_mac, ETH_P_ARP);
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&src_mac.0);
    f.extend_from_slice(&sender_ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target_ip.octets());
    f
}

/// A frame of `ethertype` whose payload is `payload`.
pub fn raw(dst: MacAddr, src: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = ethernet(dst, src, ethertype);
    f.extend_from_slice(payload);
    f
}

/// `frame` (untagged) with an 802.1Q tag of `vlan` inserted after the MAC addresses.
pub fn vlan_tagged(frame: &[u8], vlan: u16) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    f.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
    f.extend_from_slice(&vlan.to_be_bytes());
    f.extend_from_slice(&frame[12..]);
    f
}

/// `struct virtio_net_hdr` (little endian, as packet sockets take it on little-endian hosts).
#[derive(Clone, Copy, Debug, Default)]
pub struct VnetHeader {
    pub flags: u8,
    pub gso_type: u8,
    /// Bytes the kernel puts in the skb's linear part (the rest goes to page fragments when
    /// the frame is at least a page long).
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHeader {
    /// No offload; only the Ethernet header in the linear part.
    pub fn nonlinear() -> Self {
        Self { hdr_len: 14, ..Self::default() }
    }

    /// A TCP/IPv4 GSO packet (segments of `gso_size`, checksum by the kernel) with only the
    /// Ethernet header in the linear part.
    pub fn tcp_gso(gso_size: u16) -> Self {
        const NEEDS_CSUM: u8 = 1;
        const GSO_TCPV4: u8 = 1;
        Self {
            flags: NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 14,
            gso_size,
            csum_start: 34,
            csum_offset: 16,
        }
    }

    fn bytes(self) -> [u8; 10] {
        let mut b = [0u8; 10];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }
}

/// Sends each frame as it is on link `interface` of `ns` through an AF_PACKET socket (behind
/// `vnet` when given). Panics naming the frame the kernel refused.
pub fn send(ns: &Netns, interface: &str, frames: &[Vec<u8>], vnet: Option<VnetHeader>) {
    let interface = CString::new(interface).expect("an interface name has no NUL");
    let frames = frames.to_vec();
    ns.run(move || {
        // SAFETY: plain socket calls on a descriptor this closure owns and closes; every
        // pointer passed points to a live local of the size given.
        unsafe {
            let ifindex = libc::if_nametoindex(interface.as_ptr());
            assert_ne!(ifindex, 0, "no interface {interface:?}: {}", std::io::Error::last_os_error());
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
            if vnet.is_some() {
                let one: libc::c_int = 1;
                let rc = libc::setsockopt(
                    fd,
                    libc::SOL_PACKET,
                    libc::PACKET_VNET_HDR,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
                assert_eq!(rc, 0, "PACKET_VNET_HDR: {}", std::io::Error::last_os_error());
            }
            for frame in &frames {
                let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
                let mut to: libc::sockaddr_ll = std::mem::zeroed();
                to.sll_family = libc::AF_PACKET as u16;
                to.sll_protocol = ethertype.to_be();
                to.sll_ifindex = ifindex as i32;
                let mut buf = vnet.map(|v| v.bytes().to_vec()).unwrap_or_default();
                buf.extend_from_slice(frame);
                let sent = libc::sendto(
                    fd,
                    buf.as_ptr().cast(),
                    buf.len(),
                    0,
                    (&to as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                );
                let error = std::io::Error::last_os_error();
                assert_eq!(sent, buf.len() as isize, "send a {}-byte frame: {error}", frame.len());
            }
            libc::close(fd);
        }
    });
}
