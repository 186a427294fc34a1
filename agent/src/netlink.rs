//! The agent's rtnetlink client: links, IPv4 addresses, routes and rules of the network
//! namespace it runs in, over one synchronous `NETLINK_ROUTE` socket (the agent calls it from
//! blocking sections; the messages are netlink-packet-route's). No tool is spawned and no
//! output parsed: a failure carries the kernel's errno and names the object it was about.

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    AfSpecInet, AfSpecUnspec, InetDevConf, InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourExtFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteMessage;
use netlink_packet_route::rule::RuleMessage;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// A netlink request the kernel refused (or that could not be made).
#[derive(Debug, thiserror::Error)]
#[error("{action}: {} (errno {errno})", std::io::Error::from_raw_os_error(*errno))]
pub struct NetlinkError {
    /// What was asked, naming the object (`add rule 1536: from 10.0.1.5/32 lookup 10003`).
    pub action: String,
    /// The kernel's errno (positive).
    pub errno: i32,
}

impl NetlinkError {
    /// The object is not there (a delete of something already gone).
    pub fn is_not_found(&self) -> bool {
        matches!(self.errno, libc::ENOENT | libc::ESRCH | libc::ENODEV)
    }

    /// The object exists already (an exclusive create of something present).
    pub fn is_exists(&self) -> bool {
        self.errno == libc::EEXIST
    }

    fn io(action: &str, error: std::io::Error) -> Self {
        Self { action: action.to_owned(), errno: error.raw_os_error().unwrap_or(libc::EIO) }
    }
}

/// A link of the namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Hardware address (empty for links without one, such as `lo` on some kernels).
    pub mac: Vec<u8>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
}

/// An IPv4 neighbour entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    /// The neighbour's address.
    pub ip: Ipv4Addr,
    /// Its hardware address, when the entry has one.
    pub mac: Option<Vec<u8>>,
    /// `NUD_*` state bits.
    pub state: u16,
    /// Whether the kernel keeps it resolved (`NTF_EXT_MANAGED`).
    pub managed: bool,
}

/// `NUD_INCOMPLETE`.
pub const NUD_INCOMPLETE: u16 = 0x01;
/// `NUD_FAILED`.
pub const NUD_FAILED: u16 = 0x20;
/// `NUD_PERMANENT`.
pub const NUD_PERMANENT: u16 = 0x80;

/// One open `NETLINK_ROUTE` socket. Requests are sequential; one per caller at a time.
pub struct Netlink {
    socket: Socket,
    sequence: u32,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink").field("sequence", &self.sequence).finish()
    }
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, NetlinkError> {
        let action = "open a NETLINK_ROUTE socket";
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| NetlinkError::io(action, e))?;
        socket.bind_auto().map_err(|e| NetlinkError::io(action, e))?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(|e| NetlinkError::io(action, e))?;
        // Strict checking makes the kernel honour the family of a dump request.
        let _ = socket.set_netlink_get_strict_chk(true);
        Ok(Self { socket, sequence: 0 })
    }

    /// Every link.
    pub fn links(&mut self) -> Result<Vec<Link>, NetlinkError> {
        let answers = self.dump("list links", RouteNetlinkMessage::GetLink(LinkMessage::default()))?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(link) => Some(link_of(&link)),
                _ => None,
            })
            .collect())
    }

    /// Sets a link's IPv4 `forwarding` to 1 and, if given, its `rp_filter` (the
    /// `net.ipv4.conf.<link>.*` sysctls, through netlink: /proc/sys is read-only in a
    /// container).
    pub fn enable_forwarding(
        &mut self,
        index: u32,
        rp_filter: Option<i32>,
        name: &str,
    ) -> Result<(), NetlinkError> {
        let mut conf = InetDevConf::default();
        conf.forwarding = 1;
        if let Some(mode) = rp_filter {
            conf.rp_filter = mode;
        }
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.attributes =
            vec![LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet(vec![AfSpecInet::DevConfRequest(
                conf,
            )])])];
        let what = match rp_filter {
            Some(mode) => format!("set forwarding=1 rp_filter={mode} on link {name} (#{index})"),
            None => format!("set forwarding=1 on link {name} (#{index})"),
        };
        self.ack(&what, RouteNetlinkMessage::SetLink(link), 0)
    }

    /// The link called `name`, if there is one.
    pub fn link(&mut self, name: &str) -> Result<Option<Link>, NetlinkError> {
        let mut request = LinkMessage::default();
        request.attributes = vec![LinkAttribute::IfName(name.to_owned())];
        let action = format!("read link {name}");
        match self.exchange(&action, RouteNetlinkMessage::GetLink(request), NLM_F_REQUEST | NLM_F_ACK) {
            Ok(answers) => Ok(answers.iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(link) => Some(link_of(link)),
                _ => None,
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes the link called `name` (both ends of a veth); `Ok(false)` when there was none.
    pub fn delete_link(&mut self, name: &str) -> Result<bool, NetlinkError> {
        let mut request = LinkMessage::default();
        request.attributes = vec![LinkAttribute::IfName(name.to_owned())];
        self.delete(&format!("delete link {name}"), RouteNetlinkMessage::DelLink(request))
    }

    /// Creates the veth pair `name` <-> `peer`, the peer moved into the network namespace open
    /// as `peer_netns`; an MTU of 0 keeps the kernel's default.
    pub fn add_veth(
        &mut self,
        name: &str,
        peer: &str,
        peer_netns: &std::fs::File,
        mtu: u32,
    ) -> Result<(), NetlinkError> {
        use std::os::fd::AsRawFd;
        let mut peer_link = LinkMessage::default();
        peer_link.attributes =
            vec![LinkAttribute::IfName(peer.to_owned()), LinkAttribute::NetNsFd(peer_netns.as_raw_fd())];
        let mut link = LinkMessage::default();
        link.attributes = vec![LinkAttribute::IfName(name.to_owned())];
        if mtu != 0 {
            peer_link.attributes.push(LinkAttribute::Mtu(mtu));
            link.attributes.push(LinkAttribute::Mtu(mtu));
        }
        link.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_link))),
        ]));
        let action = format!("create veth {name} <-> {peer}");
        self.ack(&action, RouteNetlinkMessage::NewLink(link), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Brings link `index` up.
    pub fn set_up(&mut self, index: u32, name: &str) -> Result<(), NetlinkError> {
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.header.flags = LinkFlags::Up;
        link.header.change_mask = LinkFlags::Up;
        self.ack(&format!("bring up link {name}"), RouteNetlinkMessage::SetLink(link), 0)
    }

    /// Adds `ip/prefix` to link `index`.
    pub fn add_address(
        &mut self,
        index: u32,
        ip: Ipv4Addr,
        prefix: u8,
        name: &str,
    ) -> Result<(), NetlinkError> {
        let mut address = AddressMessage::default();
        address.header.family = AddressFamily::Inet;
        address.header.prefix_len = prefix;
        address.header.index = index;
        address.attributes =
            vec![AddressAttribute::Local(IpAddr::V4(ip)), AddressAttribute::Address(IpAddr::V4(ip))];
        let action = format!("add address {ip}/{prefix} to {name}");
        self.ack(&action, RouteNetlinkMessage::NewAddress(address), NLM_F_CREATE | NLM_F_REPLACE)
    }

    /// Every IPv4 address with the index of its link.
    pub fn ipv4_addresses(&mut self) -> Result<Vec<(u32, Ipv4Addr)>, NetlinkError> {
        let mut request = AddressMessage::default();
        request.header.family = AddressFamily::Inet;
        let answers = self.dump("list IPv4 addresses", RouteNetlinkMessage::GetAddress(request))?;
        let mut found = Vec::new();
        for answer in answers {
            let RouteNetlinkMessage::NewAddress(address) = answer else { continue };
            let local = address.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            let any = address.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            if let Some(ip) = local.or(any) {
                found.push((address.header.index, ip));
            }
        }
        Ok(found)
    }

    /// The IPv4 neighbour entries of link `index`.
    pub fn neighbours(&mut self, index: u32, name: &str) -> Result<Vec<Neighbour>, NetlinkError> {
        let mut request = NeighbourMessage::default();
        request.header.family = AddressFamily::Inet;
        // A dump filters by attribute (a header index is refused under strict checking).
        request.attributes = vec![NeighbourAttribute::IfIndex(index)];
        let action = format!("list the neighbours on {name}");
        let answers = self.dump(&action, RouteNetlinkMessage::GetNeighbour(request))?;
        let mut found = Vec::new();
        for answer in answers {
            let RouteNetlinkMessage::NewNeighbour(entry) = answer else { continue };
            if entry.header.ifindex != index {
                continue;
            }
            let mut neighbour = Neighbour {
                ip: Ipv4Addr::UNSPECIFIED,
                mac: None,
                state: u16::from(entry.header.state),
                managed: false,
            };
            let mut has_ip = false;
            for attribute in entry.attributes {
                match attribute {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => {
                        neighbour.ip = ip;
                        has_ip = true;
                    }
                    NeighbourAttribute::LinkLayerAddress(mac) => neighbour.mac = Some(mac),
                    NeighbourAttribute::ExtFlags(flags) => {
                        neighbour.managed = flags.contains(NeighbourExtFlags::Managed)
                    }
                    _ => {}
                }
            }
            if has_ip {
                found.push(neighbour);
            }
        }
        Ok(found)
    }

    /// Adds or replaces the neighbour `ip` on link `index`: permanent at `mac`, or, without
    /// one, `managed` (the kernel resolves it at once and keeps it resolved; Linux 5.16+).
    pub fn replace_neighbour(
        &mut self,
        index: u32,
        ip: Ipv4Addr,
        mac: Option<[u8; 6]>,
        what: &str,
    ) -> Result<(), NetlinkError> {
        let mut entry = NeighbourMessage::default();
        entry.header.family = AddressFamily::Inet;
        entry.header.ifindex = index;
        entry.attributes = vec![NeighbourAttribute::Destination(NeighbourAddress::Inet(ip))];
        match mac {
            Some(mac) => {
                entry.header.state = NeighbourState::Permanent;
                entry.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
            }
            None => {
                entry.header.state = NeighbourState::None;
                entry.attributes.push(NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed));
            }
        }
        let action = format!("replace neighbour {what}");
        self.ack(&action, RouteNetlinkMessage::NewNeighbour(entry), NLM_F_CREATE | NLM_F_REPLACE)
    }

    /// Deletes the neighbour `ip` on link `index`; `Ok(false)` when it was gone.
    pub fn delete_neighbour(&mut self, index: u32, ip: Ipv4Addr, what: &str) -> Result<bool, NetlinkError> {
        let mut entry = NeighbourMessage::default();
        entry.header.family = AddressFamily::Inet;
        entry.header.ifindex = index;
        entry.attributes = vec![NeighbourAttribute::Destination(NeighbourAddress::Inet(ip))];
        self.delete(&format!("delete neighbour {what}"), RouteNetlinkMessage::DelNeighbour(entry))
    }

    /// Every IPv4 rule.
    pub fn rules(&mut self) -> Result<Vec<RuleMessage>, NetlinkError> {
        let mut request = RuleMessage::default();
        request.header.family = AddressFamily::Inet;
        let answers = self.dump("list IPv4 rules", RouteNetlinkMessage::GetRule(request))?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRule(rule) => Some(rule),
                _ => None,
            })
            .collect())
    }

    /// Adds a rule; `Ok(false)` when an equal rule exists already.
    pub fn add_rule(&mut self, rule: RuleMessage, what: &str) -> Result<bool, NetlinkError> {
        let action = format!("add rule {what}");
        match self.ack(&action, RouteNetlinkMessage::NewRule(rule), NLM_F_CREATE | NLM_F_EXCL) {
            Ok(()) => Ok(true),
            Err(e) if e.is_exists() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes the first rule matching the given fields; `Ok(false)` when none matched.
    pub fn delete_rule(&mut self, rule: RuleMessage, what: &str) -> Result<bool, NetlinkError> {
        let action = format!("delete rule {what}");
        self.delete(&action, RouteNetlinkMessage::DelRule(rule))
    }

    /// Every IPv4 route of every table.
    pub fn routes(&mut self) -> Result<Vec<RouteMessage>, NetlinkError> {
        let mut request = RouteMessage::default();
        request.header.address_family = AddressFamily::Inet;
        let answers = self.dump("list IPv4 routes", RouteNetlinkMessage::GetRoute(request))?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(route) => Some(route),
                _ => None,
            })
            .collect())
    }

    /// Adds or replaces a route (same table, destination, TOS and priority).
    pub fn replace_route(&mut self, route: RouteMessage, what: &str) -> Result<(), NetlinkError> {
        let action = format!("replace route {what}");
        self.ack(&action, RouteNetlinkMessage::NewRoute(route), NLM_F_CREATE | NLM_F_REPLACE)
    }

    /// Deletes a route; `Ok(false)` when it was gone.
    pub fn delete_route(&mut self, route: RouteMessage, what: &str) -> Result<bool, NetlinkError> {
        let action = format!("delete route {what}");
        self.delete(&action, RouteNetlinkMessage::DelRoute(route))
    }

    /// Sends a delete request; `Ok(false)` when the object was gone already.
    fn delete(&mut self, action: &str, message: RouteNetlinkMessage) -> Result<bool, NetlinkError> {
        match self.ack(action, message, 0) {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sends a request the kernel acknowledges.
    fn ack(&mut self, action: &str, message: RouteNetlinkMessage, flags: u16) -> Result<(), NetlinkError> {
        self.exchange(action, message, NLM_F_REQUEST | NLM_F_ACK | flags).map(|_| ())
    }

    /// Sends a dump request; every answer.
    fn dump(
        &mut self,
        action: &str,
        message: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.exchange(action, message, NLM_F_REQUEST | NLM_F_DUMP)
    }

    fn exchange(
        &mut self,
        action: &str,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut buffer = vec![0; packet.buffer_len()];
        packet.serialize(&mut buffer);
        self.socket.send(&buffer, 0).map_err(|e| NetlinkError::io(action, e))?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut answers = Vec::new();
        loop {
            let (bytes, _) = self.socket.recv_from_full().map_err(|e| NetlinkError::io(action, e))?;
            let mut offset = 0;
            while offset < bytes.len() {
                let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[offset..]);
                let length =
                    u32::from_ne_bytes(bytes[offset..offset + 4].try_into().unwrap_or([0; 4])) as usize;
                if length == 0 {
                    break;
                }
                offset += (length + 3) & !3;
                let Ok(reply) = parsed else {
                    // An object this crate cannot decode: not one of the agent's.
                    tracing::debug!(%action, "skipped a netlink message that does not decode");
                    continue;
                };
                if reply.header.sequence_number != sequence {
                    continue;
                }
                match reply.payload {
                    // A dump that failed says so in its DONE message.
                    NetlinkPayload::Done(done) if done.code < 0 => {
                        return Err(NetlinkError { action: action.to_owned(), errno: -done.code });
                    }
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::Error(error) => match error.code {
                        None if !dump => return Ok(answers),
                        None => {}
                        Some(code) => {
                            return Err(NetlinkError { action: action.to_owned(), errno: -code.get() });
                        }
                    },
                    NetlinkPayload::InnerMessage(inner) => answers.push(inner),
                    _ => {}
                }
            }
        }
    }
}

/// Runs `f` on a thread that has entered the network namespace at `path` (the calling
/// thread stays where it is); `f` opens its own [`Netlink`] there.
pub fn in_netns<T: Send>(
    path: &std::path::Path,
    f: impl FnOnce() -> Result<T, NetlinkError> + Send,
) -> Result<T, NetlinkError> {
    use std::os::fd::AsRawFd;
    let action = format!("enter network namespace {}", path.display());
    let netns = std::fs::File::open(path).map_err(|e| NetlinkError::io(&action, e))?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: setns only changes this thread's namespace; the fd is open.
                if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(NetlinkError::io(&action, std::io::Error::last_os_error()));
                }
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn link_of(message: &LinkMessage) -> Link {
    let up = message.header.flags.contains(netlink_packet_route::link::LinkFlags::Up);
    let mut link = Link { index: message.header.index, name: String::new(), mac: Vec::new(), up };
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name = name.clone(),
            LinkAttribute::Address(mac) => link.mac = mac.clone(),
            _ => {}
        }
    }
    link
}
