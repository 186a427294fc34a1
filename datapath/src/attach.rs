//! Attaching a program at a TC hook, two ways:
//! - TCX (Linux >= 6.6): a BPF link, pinned under `links/`; removing the pin detaches it.
//!   A newer program replaces the old one on the same link (`BPF_LINK_UPDATE`), atomically.
//! - netlink (Linux >= 5.10 for the datapath): a `clsact` qdisc and a direct-action `tc`
//!   filter at the hook's fixed priority and handle. The kernel keeps it without any pin or
//!   process; a record under `filters/` says it is ours. A newer program replaces the filter
//!   at the same priority and handle, which the kernel swaps atomically.
//!
//! Attaching in one mode removes the attachment of the other mode at the same hook after
//! the new one is in place, so switching `--tc-attach` loses no packet either, with one
//! exception: adding (or deleting) a `clsact` qdisc deactivates the device's transmit queues
//! for a moment (the kernel's `qdisc_graft`), so a packet leaving by that interface just
//! then can be dropped. The qdisc is therefore added once, on the first netlink attachment
//! to an interface, and deleted only when the interface is detached for good (pod gone,
//! uninstall), never on a switch to TCX.

use std::{path::Path, str::FromStr};

use aya::programs::{
    SchedClassifier,
    links::{FdLink, Link as _, PinnedLink},
    tc::{NlOptions, SchedClassifierLink, TcAttachOptions, TcError, qdisc_add_clsact},
};
use tracing::{debug, info};

use crate::{
    DatapathError,
    datapath::interface_name,
    hook::{FILTER_HANDLE, Hook},
    pins::{PinLayout, remove_pin_tree},
    probe::{MissingFeature, tcx_supported},
    tc_netlink,
};

/// How programs are attached to TC hooks (`--tc-attach`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttachMode {
    /// TCX when the kernel has it (>= 6.6), else netlink.
    #[default]
    Auto,
    /// Pinned TCX links; fails on kernels before 6.6.
    Tcx,
    /// `clsact` qdisc and `tc` filters (kernels from 5.10).
    Netlink,
}

impl AttachMode {
    pub const NAMES: [&'static str; 3] = ["auto", "tcx", "netlink"];

    /// The mode used on this kernel: `Auto` becomes `Tcx` or `Netlink`.
    pub fn resolve(self) -> Result<AttachMode, MissingFeature> {
        match self {
            AttachMode::Auto if tcx_supported() => Ok(AttachMode::Tcx),
            AttachMode::Auto => Ok(AttachMode::Netlink),
            AttachMode::Tcx if !tcx_supported() => Err(MissingFeature::tcx()),
            mode => Ok(mode),
        }
    }
}

impl std::fmt::Display for AttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            AttachMode::Auto => "auto",
            AttachMode::Tcx => "tcx",
            AttachMode::Netlink => "netlink",
        };
        f.write_str(name)
    }
}

impl FromStr for AttachMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(AttachMode::Auto),
            "tcx" => Ok(AttachMode::Tcx),
            "netlink" => Ok(AttachMode::Netlink),
            other => {
                Err(format!("unknown TC attach mode `{other}`: use one of {}", AttachMode::NAMES.join(", ")))
            }
        }
    }
}

/// Attaches `program` at `hook` of `ifindex` in `mode` (`Tcx` or `Netlink`), replacing any
/// other program there atomically, then removes an attachment of the other mode. Idempotent.
pub(crate) fn attach(
    pins: &PinLayout,
    mode: AttachMode,
    hook: &Hook,
    ifindex: u32,
    program: &mut SchedClassifier,
) -> Result<(), DatapathError> {
    let record = hook.record_name(ifindex);
    if mode == AttachMode::Netlink {
        attach_filter(pins, hook, ifindex, program)?;
        unpin(&pins.links().join(&record))
    } else {
        attach_link(&pins.links().join(&record), hook, ifindex, program)?;
        delete_filter(pins, hook, ifindex)
    }
}

/// Detaches whatever the datapath attached at `hook` of `ifindex`, in either mode. Absent is
/// success.
pub(crate) fn detach(pins: &PinLayout, hook: &Hook, ifindex: u32) -> Result<(), DatapathError> {
    unpin(&pins.links().join(hook.record_name(ifindex)))?;
    delete_filter(pins, hook, ifindex)?;
    remove_clsact_if_unused(pins, ifindex)
}

fn attach_link(
    pin: &Path,
    hook: &Hook,
    ifindex: u32,
    program: &mut SchedClassifier,
) -> Result<(), DatapathError> {
    let name = interface_name(ifindex)?;
    let failed = |action, source| program_error(hook, action, pin, source);
    let program_id = program.info().map_err(|e| failed("read program info", e))?.id();
    let (_, attached) =
        SchedClassifier::query_tcx(&name, hook.direction.tc()).map_err(|e| failed("query TCX links", e))?;
    let attached: Vec<u32> = attached.iter().map(|p| p.id()).collect();
    if let Ok(pinned) = PinnedLink::from_pin(pin) {
        let link = FdLink::from(pinned);
        let linked = link.info().map(|info| info.program_id()).ok();
        match linked {
            Some(id) if id == program_id && attached.contains(&id) => {
                debug!(program = hook.program, interface = %name, "already attached");
                return Ok(());
            }
            Some(id) if attached.contains(&id) => {
                // Our link on this interface runs another build: swap the program in place.
                let link =
                    SchedClassifierLink::try_from(link).map_err(|e| pin_error(pin, "open TCX link", e))?;
                let id = program
                    .attach_to_link(link)
                    .map_err(|e| failed("replace the program of the TCX link", e))?;
                drop(program.take_link(id).map_err(|e| failed("take link", e))?);
                info!(program = hook.program, interface = %name, ifindex, "replaced the program on its TCX link");
                return Ok(());
            }
            // A link whose interface went away (its index now names another one).
            _ => unpin(pin)?,
        }
    }
    let id = program
        .attach_with_options(&name, hook.direction.tc(), TcAttachOptions::TcxOrder(Default::default()))
        .map_err(|e| failed("attach (TCX)", e))?;
    let link = program.take_link(id).map_err(|e| failed("take link", e))?;
    let link = FdLink::try_from(link).map_err(|e| pin_error(pin, "convert link", e))?;
    link.pin(pin).map_err(|e| pin_error(pin, "pin link", e))?;
    info!(program = hook.program, interface = %name, ifindex, pin = %pin.display(), "attached (TCX)");
    Ok(())
}

fn attach_filter(
    pins: &PinLayout,
    hook: &Hook,
    ifindex: u32,
    program: &mut SchedClassifier,
) -> Result<(), DatapathError> {
    let name = interface_name(ifindex)?;
    let record = pins.filters().join(hook.record_name(ifindex));
    let failed = |action, source| program_error(hook, action, &record, source);
    match qdisc_add_clsact(&name) {
        Ok(()) => make_record(&pins.clsact().join(ifindex.to_string()))?,
        Err(e) if is_exists(&e) => {}
        Err(e) => return Err(failed("add the clsact qdisc", e.into())),
    }
    let ours = SchedClassifierLink::attached(&name, hook.direction.tc(), hook.priority, FILTER_HANDLE, None)
        .map_err(|e| failed("find the interface", TcError::IoError(e).into()))?;
    // Replace the filter at our priority and handle (atomic); create it if there is none.
    let id = match program.attach_to_link(ours) {
        Ok(id) => id,
        Err(replace) => {
            debug!(interface = %name, %replace, "no filter to replace, creating it");
            let options = NlOptions { priority: hook.priority, handle: FILTER_HANDLE, classid: None };
            program
                .attach_with_options(&name, hook.direction.tc(), TcAttachOptions::Netlink(options))
                .map_err(|e| failed("attach (tc filter)", e))?
        }
    };
    // aya deletes the filter when its link handle is dropped; the filter must outlive the agent.
    std::mem::forget(program.take_link(id).map_err(|e| failed("take link", e))?);
    make_record(&record)?;
    info!(program = hook.program, interface = %name, ifindex, priority = hook.priority, "attached (tc filter)");
    Ok(())
}

/// Deletes our filter at `hook` of `ifindex` if it is recorded (the qdisc stays).
fn delete_filter(pins: &PinLayout, hook: &Hook, ifindex: u32) -> Result<(), DatapathError> {
    let record = pins.filters().join(hook.record_name(ifindex));
    if !record.exists() {
        return Ok(());
    }
    if let Ok(name) = interface_name(ifindex) {
        let link =
            SchedClassifierLink::attached(&name, hook.direction.tc(), hook.priority, FILTER_HANDLE, None);
        match link.map(|l| l.detach()) {
            Ok(Ok(())) => info!(program = hook.program, interface = %name, "tc filter deleted"),
            Ok(Err(e)) if netlink_code(&e) == Some(libc::ENOENT) => {}
            Ok(Err(e)) => return Err(program_error(hook, "delete the tc filter", &record, e)),
            Err(_) => {} // the interface is gone, and its filters with it
        }
    }
    remove_pin_tree(&record)
}

/// Deletes the `clsact` qdisc of `ifindex` when the datapath added it and it holds no filter.
pub(crate) fn remove_clsact_if_unused(pins: &PinLayout, ifindex: u32) -> Result<(), DatapathError> {
    let marker = pins.clsact().join(ifindex.to_string());
    if !marker.exists() {
        return Ok(());
    }
    if crate::hook::records(&pins.filters()).iter().any(|(_, i, _)| *i == ifindex) {
        return Ok(());
    }
    let query = |source: std::io::Error| DatapathError::Query {
        interface: format!("ifindex {ifindex}"),
        source: Box::new(TcError::IoError(source).into()),
    };
    if interface_name(ifindex).is_ok() {
        if tc_netlink::clsact_filter_count(ifindex).map_err(query)? > 0 {
            debug!(ifindex, "clsact qdisc still holds filters of others: kept");
            return remove_pin_tree(&marker);
        }
        if tc_netlink::delete_clsact(ifindex).map_err(query)? {
            info!(ifindex, "clsact qdisc deleted");
        }
    }
    remove_pin_tree(&marker)
}

fn is_exists(error: &TcError) -> bool {
    match error {
        TcError::AlreadyAttached => true,
        TcError::NetlinkError(e) => e.raw_os_error() == Some(libc::EEXIST),
        _ => false,
    }
}

fn netlink_code(error: &aya::programs::ProgramError) -> Option<i32> {
    match error {
        aya::programs::ProgramError::NetlinkError(e) => e.raw_os_error(),
        aya::programs::ProgramError::TcError(TcError::NetlinkError(e)) => e.raw_os_error(),
        _ => None,
    }
}

fn make_record(path: &Path) -> Result<(), DatapathError> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(pin_error(path, "record the attachment", source)),
    }
}

/// Removes a link pin, which detaches a TCX link. Absent is success.
pub(crate) fn unpin(pin: &Path) -> Result<(), DatapathError> {
    match std::fs::remove_file(pin) {
        Ok(()) => {
            info!(pin = %pin.display(), "link unpinned (detached)");
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(pin_error(pin, "unpin link", source)),
    }
}

pub(crate) fn program_error(
    hook: &Hook,
    action: &'static str,
    pin: &Path,
    source: aya::programs::ProgramError,
) -> DatapathError {
    DatapathError::Program { program: hook.program, action, pin: pin.to_owned(), source: Box::new(source) }
}

pub(crate) fn pin_error(
    pin: &Path,
    action: &'static str,
    source: impl std::error::Error + Send + Sync + 'static,
) -> DatapathError {
    DatapathError::Pin { pin: pin.to_owned(), action, source: Box::new(source) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print_by_name() {
        for name in AttachMode::NAMES {
            assert_eq!(name.parse::<AttachMode>().unwrap().to_string(), name);
        }
        let err = "tc".parse::<AttachMode>().unwrap_err();
        assert!(err.contains("unknown TC attach mode `tc`: use one of auto, tcx, netlink"), "{err}");
        assert_eq!(AttachMode::default(), AttachMode::Auto);
    }

    #[test]
    fn auto_resolves_to_a_concrete_mode() {
        let resolved = AttachMode::Auto.resolve().unwrap();
        assert_eq!(resolved, if tcx_supported() { AttachMode::Tcx } else { AttachMode::Netlink });
        assert_eq!(AttachMode::Netlink.resolve().unwrap(), AttachMode::Netlink);
    }
}
