//! Errors of the datapath; each names the object involved and what to do about it.

use std::path::PathBuf;

use crate::probe::MissingFeature;

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("the kernel or environment lacks what the eBPF datapath needs: {0}")]
    Unsupported(#[from] MissingFeature),

    #[error("cannot create the pin directory {path}: {source}")]
    PinDirectory { path: PathBuf, source: std::io::Error },

    #[error("cannot load the eBPF object {object} (maps pinned under {pin_dir}): {source}")]
    LoadObject { object: &'static str, pin_dir: PathBuf, source: Box<aya::EbpfError> },

    #[error("eBPF object {object} has no {kind} named `{name}`: the embedded object and the loader disagree")]
    Missing { object: &'static str, kind: &'static str, name: &'static str },

    #[error("eBPF program `{program}`: {action} failed (pin {pin}): {source}")]
    Program {
        program: &'static str,
        action: &'static str,
        pin: PathBuf,
        source: Box<aya::programs::ProgramError>,
    },

    #[error("eBPF pin {pin}: {action} failed: {source}; check that bpffs is mounted and writable")]
    Pin { pin: PathBuf, action: &'static str, source: Box<dyn std::error::Error + Send + Sync> },

    #[error("cannot list the TC programs of interface {interface}: {source}")]
    Query { interface: String, source: Box<aya::programs::ProgramError> },

    #[error("interface with ifindex {ifindex} does not exist in this network namespace: {source}")]
    NoSuchInterface { ifindex: u32, source: std::io::Error },

    #[error("cannot add endpoint {pod_ip}: the datapath holds at most {max} endpoints per node")]
    Full { pod_ip: std::net::Ipv4Addr, max: usize },

    #[error("eBPF map `{map}` (key {key}): {action} failed: {source}")]
    Map { map: &'static str, key: String, action: &'static str, source: Box<aya::maps::MapError> },
}

impl DatapathError {
    pub(crate) fn map(
        map: &'static str,
        key: impl ToString,
        action: &'static str,
        source: aya::maps::MapError,
    ) -> Self {
        DatapathError::Map { map, key: key.to_string(), action, source: Box::new(source) }
    }
}
