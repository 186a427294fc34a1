//! eni-ipam-device-plugin: the kubelet device plugin of eni-ipam. Not
//! implemented yet; this binary only explains what it will do and exits with an error.

use std::process::ExitCode;

use clap::Parser;

/// The eni-ipam kubelet device plugin (not implemented yet).
#[derive(Parser, Debug)]
#[command(
    name = "eni-ipam-device-plugin",
    version,
    about = "eni-ipam kubelet device plugin (not implemented yet)",
    long_about = "eni-ipam kubelet device plugin. It will register with kubelet over the device plugin \
API v1beta1 and advertise eni-ipam.io/ip devices, one per pod IP the node can still reach, reading the \
numbers from the agent's GET /v1/healthz; slots beyond the reachable capacity are reported Unhealthy so \
kubelet lowers the node's allocatable and kube-scheduler never places a pod on a node without an IP.\n\n\
It is not implemented yet: running it only prints a notice and exits with status 1."
)]
struct Cli {}

fn main() -> ExitCode {
    let _cli = Cli::parse();
    eprintln!("eni-ipam-device-plugin: not implemented yet (see docs/architecture.md)");
    ExitCode::FAILURE
}
