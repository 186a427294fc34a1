//! eBPF datapath of eni-ipam: pod traffic leaves the node through the ENI that owns the
//! pod's IP, and traffic for local pods goes straight into them, without iptables.
//!
//! The programs (C in `bpf/`, compiled by clang in `build.rs`) run at TC ingress of each
//! pod's host-side veth (`from_pod`) and of each ENI (`from_eni`), and at TC egress of both
//! (`nat_learn`, which records NATed flows so that their replies go through the node's
//! stack); only IPv4 TCP/UDP not NATed takes the fast path (`bpf/README.md`). The agent owns the maps:
//! it calls [`Datapath::load_or_adopt`] on start, [`Datapath::reconcile`] with its IPAM state,
//! [`Datapath::upsert_endpoint`] / [`Datapath::remove_endpoint`] on CNI ADD/DEL, and reads
//! [`Datapath::counters`] for metrics. Programs, maps and links are pinned, so the agent
//! exiting does not interrupt traffic; only [`remove_pins`] (on uninstall) takes it off the node.

pub mod abi;
mod attach;
mod datapath;
mod endpoint;
mod error;
mod hook;
mod object;
mod pins;
mod probe;
mod removal;
mod tc_netlink;

pub use attach::AttachMode;
pub use datapath::{DEFAULT_PIN_DIR, Datapath, Origin, ReconcileReport};
pub use endpoint::{DropReason, EndpointCounters, EndpointInfo, InvalidMacAddr, Ipv4Prefix, MacAddr};
pub use error::DatapathError;
pub use object::DatapathObject;
#[doc(hidden)]
pub use object::{CURRENT, UPGRADE_TEST_NEXT};
pub use probe::{MIN_KERNEL, MissingFeature, TCX_KERNEL, probe, tcx_supported};
pub use removal::{PinsRemoved, remove_pins, tc_filter_count, tcx_attached_programs, tcx_programs};
