//! eni-ipam-agent: the per-node DaemonSet of eni-ipam. Not implemented yet;
//! this binary only explains what it will do and exits with an error.

use std::process::ExitCode;

use clap::Parser;

/// The eni-ipam node agent (not implemented yet).
#[derive(Parser, Debug)]
#[command(
    name = "eni-ipam-agent",
    version,
    about = "eni-ipam node agent (not implemented yet)",
    long_about = "eni-ipam node agent, run as a DaemonSet on every node. It will register the node's \
ENINode from Node.spec.providerID and the instance type, hand pool IPs to pods through the eni-ipam-cni \
plugin (persisting every allocation to disk before answering), report usage back to the ENINode, serve \
GET /v1/healthz and the IPAM calls on /var/run/eni-ipam/agent.sock, and load the eBPF datapath on pod \
veths and ENI links.\n\nIt is not implemented yet: running it only prints a notice and exits with \
status 1."
)]
struct Cli {}

fn main() -> ExitCode {
    let _cli = Cli::parse();
    eprintln!("eni-ipam-agent: not implemented yet (see docs/architecture.md)");
    ExitCode::FAILURE
}
