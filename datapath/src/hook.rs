//! The attachment points of the datapath and where their programs and links are pinned.

use std::path::{Path, PathBuf};

use aya::programs::TcAttachType;

/// Where a program attaches (TC ingress or egress, as a TCX link).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hook {
    /// Ingress of the host side of a pod's veth: packets from the pod (`from_pod`).
    Pod,
    /// Ingress of an ENI: packets from the VPC (`from_eni`).
    Eni,
    /// Egress of the host side of a pod's veth: packets the node's stack sends to the pod
    /// (`nat_learn`).
    PodEgress,
    /// Egress of an ENI: packets leaving for the VPC (`nat_learn`).
    EniEgress,
}

impl Hook {
    pub(crate) const ALL: [Hook; 4] = [Hook::Pod, Hook::Eni, Hook::PodEgress, Hook::EniEgress];

    /// Program (function) name in `bpf/eni_ipam.bpf.c`.
    pub(crate) fn program(self) -> &'static str {
        match self {
            Hook::Pod => "from_pod",
            Hook::Eni => "from_eni",
            Hook::PodEgress | Hook::EniEgress => "nat_learn",
        }
    }

    pub(crate) fn attach_type(self) -> TcAttachType {
        match self {
            Hook::Pod | Hook::Eni => TcAttachType::Ingress,
            Hook::PodEgress | Hook::EniEgress => TcAttachType::Egress,
        }
    }

    fn link_prefix(self) -> &'static str {
        match self {
            Hook::Pod => "pod-",
            Hook::Eni => "eni-",
            Hook::PodEgress => "egress-pod-",
            Hook::EniEgress => "egress-eni-",
        }
    }

    pub(crate) fn program_pin(self, pin_dir: &Path) -> PathBuf {
        pin_dir.join("programs").join(self.program())
    }

    pub(crate) fn link_pin(self, pin_dir: &Path, ifindex: u32) -> PathBuf {
        pin_dir.join("links").join(format!("{}{ifindex}", self.link_prefix()))
    }

    /// Interface indexes that have a pinned link of this hook.
    pub(crate) fn pinned_links(self, pin_dir: &Path) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir(pin_dir.join("links")) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                entry.file_name().to_str()?.strip_prefix(self.link_prefix())?.parse::<u32>().ok()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_pins_are_named_by_hook_and_ifindex() {
        let dir = Path::new("/sys/fs/bpf/eni-ipam");
        assert_eq!(Hook::Pod.link_pin(dir, 7), Path::new("/sys/fs/bpf/eni-ipam/links/pod-7"));
        assert_eq!(Hook::Eni.link_pin(dir, 3), Path::new("/sys/fs/bpf/eni-ipam/links/eni-3"));
        assert_eq!(Hook::Eni.program_pin(dir), Path::new("/sys/fs/bpf/eni-ipam/programs/from_eni"));
        assert_eq!(Hook::PodEgress.link_pin(dir, 7), Path::new("/sys/fs/bpf/eni-ipam/links/egress-pod-7"));
        assert_eq!(Hook::EniEgress.program_pin(dir), Path::new("/sys/fs/bpf/eni-ipam/programs/nat_learn"));
    }
}
