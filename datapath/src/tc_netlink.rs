//! The two rtnetlink requests about TC that aya 0.14 does not offer: whether an interface
//! still has filters on its `clsact` qdisc, and deleting that qdisc. Plain `NETLINK_ROUTE`
//! messages; errors carry the kernel's own code.

use std::{
    io,
    mem::size_of,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// `clsact`'s handle (`ffff:`), and its parent (`TC_H_CLSACT`).
const CLSACT_HANDLE: u32 = 0xffff_0000;
const TC_H_CLSACT: u32 = 0xffff_fff1;
/// Parents of the filters at ingress and egress of `clsact`.
const CLSACT_INGRESS: u32 = 0xffff_fff2;
const CLSACT_EGRESS: u32 = 0xffff_fff3;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct NlMsgHdr {
    len: u32,
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct TcMsg {
    family: u8,
    pad1: u8,
    pad2: u16,
    ifindex: i32,
    handle: u32,
    parent: u32,
    info: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Request {
    header: NlMsgHdr,
    tc: TcMsg,
}

/// Number of TC filters (anyone's) at ingress and egress of the `clsact` qdisc of
/// `ifindex`; 0 when there is no such qdisc.
pub(crate) fn clsact_filter_count(ifindex: u32) -> io::Result<usize> {
    let mut count = 0;
    for parent in [CLSACT_INGRESS, CLSACT_EGRESS] {
        let tc = TcMsg { ifindex: ifindex as i32, parent, ..TcMsg::default() };
        let replies = request(libc::RTM_GETTFILTER, libc::NLM_F_DUMP as u16, tc)?;
        // A dump lists each priority's classifier (handle 0), then its filters.
        count += replies.iter().filter(|(kind, tc)| *kind == libc::RTM_NEWTFILTER && tc.handle != 0).count();
    }
    Ok(count)
}

/// Deletes the `clsact` qdisc of `ifindex` (and with it any filter left on it). Returns
/// false when there was none.
pub(crate) fn delete_clsact(ifindex: u32) -> io::Result<bool> {
    let tc =
        TcMsg { ifindex: ifindex as i32, handle: CLSACT_HANDLE, parent: TC_H_CLSACT, ..TcMsg::default() };
    match request(libc::RTM_DELQDISC, libc::NLM_F_ACK as u16, tc) {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EINVAL | libc::ENODEV)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Sends one request and returns the messages received (type and TC header) until the dump
/// ends or the kernel acknowledges.
fn request(kind: u16, flags: u16, tc: TcMsg) -> io::Result<Vec<(u16, TcMsg)>> {
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd =
        unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let req = Request {
        header: NlMsgHdr {
            len: size_of::<Request>() as u32,
            kind,
            flags: libc::NLM_F_REQUEST as u16 | flags,
            seq: 1,
            pid: 0,
        },
        tc,
    };
    // SAFETY: sends the bytes of a repr(C) struct we own; the kernel is the destination.
    let sent = unsafe {
        let mut to: libc::sockaddr_nl = std::mem::zeroed();
        to.nl_family = libc::AF_NETLINK as u16;
        libc::sendto(
            socket.as_raw_fd(),
            (&raw const req).cast(),
            size_of::<Request>(),
            0,
            (&raw const to).cast(),
            size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut replies = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: receives into a buffer we own, of the length passed.
        let received = unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if received < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut rest = &buf[..received as usize];
        while rest.len() >= size_of::<NlMsgHdr>() {
            // SAFETY: at least a header's worth of bytes; read unaligned.
            let header: NlMsgHdr = unsafe { std::ptr::read_unaligned(rest.as_ptr().cast()) };
            let len = header.len as usize;
            if len < size_of::<NlMsgHdr>() || len > rest.len() {
                return Err(io::Error::other("truncated netlink message"));
            }
            match i32::from(header.kind) {
                libc::NLMSG_DONE => return Ok(replies),
                libc::NLMSG_ERROR => {
                    let payload = &rest[size_of::<NlMsgHdr>()..len];
                    let code =
                        payload.get(..4).map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]])).unwrap_or(0);
                    return if code == 0 { Ok(replies) } else { Err(io::Error::from_raw_os_error(-code)) };
                }
                _ if len >= size_of::<Request>() => {
                    // SAFETY: the message holds a header and a TC header; read unaligned.
                    let tc: TcMsg =
                        unsafe { std::ptr::read_unaligned(rest[size_of::<NlMsgHdr>()..].as_ptr().cast()) };
                    replies.push((header.kind, tc));
                }
                _ => {}
            }
            rest = &rest[len.next_multiple_of(4).min(rest.len())..];
        }
    }
}
