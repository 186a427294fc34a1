//! Taking eni-ipam off a node (`eni-ipam-agent uninstall`, and the agent itself when it is
//! terminated while its ENINode carries the uninstall mark): what the agent and the chart's
//! install step put there goes, and nothing else.
//!
//! What is provably ours: the conflist at `--cni-conf-dir/--cni-conf-file` when it names the
//! `eni-ipam-cni` plugin (any other file of that name is left alone), the `eni-ipam-cni`
//! binary, the datapath's layout under `--bpf-pin-dir`, the pod veths the state file records
//! with the interface index they still have (their /32 routes go with them), the managed
//! neighbour entries the agent made on the ENIs it attached to, the rules and routes carrying
//! the agent's protocol number ([`crate::policy_routing::PROTOCOL`]) and its nft table
//! `ip eni_ipam`, and the agent's own files (state, pool cache, socket). The ENIs, their IPs,
//! the node's own routes and the sysctls (ip_forward, rp_filter) stay.
//!
//! Every step treats "already gone" as done, so a second run succeeds and reports nothing.
//! A failed step does not stop the others; the run fails at the end, naming each one.

use std::path::Path;

use eni_ipam_datapath::remove_pins;

use crate::cli::NodePaths;
use crate::cni::link::teardown;
use crate::netlink::Netlink;
use crate::node_links::ifindex_of;
use crate::node_network::remove_all as remove_all_routing;
use crate::state::StateStore;

/// The plugin's binary name and `type` in a conflist.
pub const CNI_PLUGIN: &str = "eni-ipam-cni";

/// What an uninstall did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UninstallReport {
    /// What was removed, one line each.
    pub removed: Vec<String>,
    /// What was found but left in place, and why.
    pub kept: Vec<String>,
}

/// The steps that failed; the others were done.
#[derive(Debug, thiserror::Error)]
#[error("uninstall left work undone (run it again once fixed): {}", .failures.join("; "))]
pub struct UninstallError {
    /// One line per failed step, naming the object.
    pub failures: Vec<String>,
    /// What the other steps did.
    pub report: UninstallReport,
}

/// Removes from this node (this network namespace) what the agent installed under `paths`.
pub fn uninstall_node(paths: &NodePaths) -> Result<UninstallReport, UninstallError> {
    let mut report = UninstallReport::default();
    let mut failures = Vec::new();
    // The runtime stops calling us first, so no new pod is set up while the rest goes.
    remove_cni_config(paths, &mut report, &mut failures);
    for name in [CNI_PLUGIN.to_owned(), format!(".{CNI_PLUGIN}.new")] {
        remove_file(&paths.cni_bin_dir.join(name), &mut report, &mut failures);
    }
    match remove_pins(&paths.bpf_pin_dir) {
        Ok(pins) => {
            if !pins.pins.is_empty() {
                report.removed.push(format!(
                    "eBPF datapath under {} ({} pins; detached from ENIs {:?} and {} pod veths)",
                    paths.bpf_pin_dir.display(),
                    pins.pins.len(),
                    pins.eni_links,
                    pins.pod_veths.len()
                ));
            }
            for foreign in pins.foreign {
                report.kept.push(format!("{}: not the datapath's", foreign.display()));
            }
            for eni in pins.eni_links {
                remove_managed_neighbours(&eni, &mut report, &mut failures);
            }
        }
        Err(e) => failures.push(e.to_string()),
    }
    match remove_all_routing() {
        Ok(removed) => report.removed.extend(removed),
        Err(e) => failures.push(format!("policy routing: {e}")),
    }
    remove_pod_veths(&paths.state_file, &mut report, &mut failures);
    remove_agent_files(paths, &mut report, &mut failures);
    if failures.is_empty() { Ok(report) } else { Err(UninstallError { failures, report }) }
}

/// Whether a CNI configuration (conf or conflist) is ours: it names the `eni-ipam-cni` plugin.
pub fn is_our_cni_config(text: &str) -> bool {
    let Ok(config) = serde_json::from_str::<serde_json::Value>(text) else { return false };
    let names_us =
        |plugin: &serde_json::Value| plugin["type"] == CNI_PLUGIN || plugin["ipam"]["type"] == CNI_PLUGIN;
    names_us(&config) || config["plugins"].as_array().is_some_and(|plugins| plugins.iter().any(names_us))
}

fn remove_cni_config(paths: &NodePaths, report: &mut UninstallReport, failures: &mut Vec<String>) {
    let conf = paths.cni_conf_dir.join(&paths.cni_conf_file);
    match std::fs::read_to_string(&conf) {
        Ok(text) if is_our_cni_config(&text) => remove_file(&conf, report, failures),
        Ok(_) => report.kept.push(format!("{}: names no {CNI_PLUGIN} plugin, not ours", conf.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => failures.push(format!("read CNI configuration {}: {e}", conf.display())),
    }
    // What the install step writes before renaming it into place.
    remove_file(&paths.cni_conf_dir.join(format!(".{}.new", paths.cni_conf_file)), report, failures);
}

/// Deletes the host end of every pod veth the state records, when the link of that name still
/// has the recorded index (a link of that name with another index was made by someone else).
fn remove_pod_veths(state_file: &Path, report: &mut UninstallReport, failures: &mut Vec<String>) {
    if !state_file.exists() {
        return;
    }
    let state = match StateStore::new(state_file).load() {
        Ok(state) => state,
        Err(e) => {
            failures.push(format!("cannot read which veths are the agent's: {e}"));
            return;
        }
    };
    for allocation in state.allocations.values() {
        let Some(endpoint) = &allocation.endpoint else { continue };
        match ifindex_of(&endpoint.host_veth) {
            Some(index) if index == endpoint.host_veth_ifindex => match teardown(&endpoint.host_veth) {
                Ok(()) => report.removed.push(format!(
                    "pod veth {} of {} ({})",
                    endpoint.host_veth, allocation.key, allocation.ip
                )),
                Err(e) => failures.push(e.to_string()),
            },
            Some(index) => report.kept.push(format!(
                "veth {} has index {index}, not {} as recorded for {}: not provably ours",
                endpoint.host_veth, endpoint.host_veth_ifindex, allocation.key
            )),
            None => {}
        }
    }
}

/// The managed neighbour entries on ENI link `dev`: the agent makes them to learn the VPC
/// gateway's MAC; nothing else on these nodes asks for managed entries.
fn remove_managed_neighbours(dev: &str, report: &mut UninstallReport, failures: &mut Vec<String>) {
    let Some(index) = ifindex_of(dev) else { return };
    let removed = Netlink::open().and_then(|mut netlink| {
        let mut removed = Vec::new();
        for entry in netlink.neighbours(index, dev)?.into_iter().filter(|n| n.managed) {
            if netlink.delete_neighbour(index, entry.ip, &format!("{} dev {dev}", entry.ip))? {
                removed.push(format!("managed neighbour {} on {dev}", entry.ip));
            }
        }
        Ok(removed)
    });
    match removed {
        Ok(removed) => report.removed.extend(removed),
        Err(e) => failures.push(e.to_string()),
    }
}

fn remove_agent_files(paths: &NodePaths, report: &mut UninstallReport, failures: &mut Vec<String>) {
    let state = &paths.state_file;
    let cache = state.with_file_name("pool-cache.json");
    let corrupt_prefix =
        format!("{}.corrupt-", state.file_name().map(|n| n.to_string_lossy()).unwrap_or_default());
    let mut files = vec![state.clone(), state.with_extension("tmp"), cache.with_extension("tmp"), cache];
    if let Some(dir) = state.parent()
        && let Ok(entries) = std::fs::read_dir(dir)
    {
        files.extend(
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with(&corrupt_prefix))
                .map(|e| e.path()),
        );
    }
    files.push(paths.socket.clone());
    for file in &files {
        remove_file(file, report, failures);
    }
    for dir in [state.parent(), paths.socket.parent()].into_iter().flatten() {
        remove_dir_if_empty(dir, report);
    }
}

fn remove_file(path: &Path, report: &mut UninstallReport, failures: &mut Vec<String>) {
    match std::fs::remove_file(path) {
        Ok(()) => report.removed.push(path.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => failures.push(format!("remove {}: {e}", path.display())),
    }
}

/// An emptied directory of ours goes too; one that still holds something, or is a mount
/// point (the pod's hostPath volume), stays.
fn remove_dir_if_empty(dir: &Path, report: &mut UninstallReport) {
    if dir.as_os_str().is_empty() {
        return;
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => report.removed.push(format!("{}/", dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => report.kept.push(format!("{}/: {e}", dir.display())),
    }
}

/// Logs a report, one line per object.
pub fn log_report(report: &UninstallReport) {
    for line in &report.removed {
        tracing::info!("uninstall: removed {line}");
    }
    for line in &report.kept {
        tracing::warn!("uninstall: kept {line}");
    }
    if report.removed.is_empty() {
        tracing::info!("uninstall: nothing of eni-ipam's was left on this node");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configurations_naming_our_plugin_are_ours() {
        let table: &[(&str, bool)] = &[
            (
                r#"{"cniVersion":"1.0.0","name":"eni-ipam","plugins":[{"type":"eni-ipam-cni"},{"type":"portmap"}]}"#,
                true,
            ),
            (r#"{"cniVersion":"1.0.0","name":"n","type":"eni-ipam-cni"}"#, true),
            (r#"{"cniVersion":"1.0.0","name":"n","type":"ptp","ipam":{"type":"eni-ipam-cni"}}"#, true),
            (
                r#"{"cniVersion":"1.0.0","name":"aws-cni","plugins":[{"type":"aws-cni"},{"type":"egress-cni"}]}"#,
                false,
            ),
            (r#"{"cniVersion":"0.3.1","name":"terway","plugins":[{"type":"terway"}]}"#, false),
            ("not json", false),
            ("", false),
        ];
        for (text, ours) in table {
            assert_eq!(is_our_cni_config(text), *ours, "{text}");
        }
    }
}
