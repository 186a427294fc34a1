//! eni-ipam-webhook: the mutating admission webhook of eni-ipam. Not
//! implemented yet; this binary only explains what it will do and exits with an error.

use std::process::ExitCode;

use clap::Parser;

/// The eni-ipam mutating admission webhook (not implemented yet).
#[derive(Parser, Debug)]
#[command(
    name = "eni-ipam-webhook",
    version,
    about = "eni-ipam mutating admission webhook (not implemented yet)",
    long_about = "eni-ipam mutating admission webhook, served over TLS. It will answer AdmissionReview v1 \
requests with a JSONPatch that gives the first container of every non-hostNetwork pod requests and \
limits of one eni-ipam.io/ip, so kube-scheduler counts one IP per pod; it will skip hostNetwork pods, \
Windows pods and excluded namespaces, and never reject a pod because of its own failure.\n\n\
It is not implemented yet: running it only prints a notice and exits with status 1."
)]
struct Cli {}

fn main() -> ExitCode {
    let _cli = Cli::parse();
    eprintln!("eni-ipam-webhook: not implemented yet (see docs/architecture.md)");
    ExitCode::FAILURE
}
