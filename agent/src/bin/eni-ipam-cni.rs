//! eni-ipam-cni: the CNI plugin the container runtime runs (main plugin or `ipam`).
//! Reads `CNI_*` from the environment and the network configuration from stdin;
//! prints the result or the spec's error JSON on stdout.

use std::io::{Read, Write};
use std::process::ExitCode;

use eni_ipam_agent::cni::plugin;

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        stdin.clear();
        eprintln!("eni-ipam-cni: cannot read stdin: {e}");
    }
    let outcome =
        std::panic::catch_unwind(|| plugin::run(|k| std::env::var(k).ok(), &stdin)).unwrap_or_else(|_| {
            plugin::Outcome {
                stdout: Some(serde_json::json!({
                    "cniVersion": eni_ipam_agent::cni::spec::LATEST_VERSION,
                    "code": 999,
                    "msg": "eni-ipam-cni crashed",
                    "details": "internal error; please report it with the plugin's stderr"
                })),
                failed: true,
            }
        });
    if let Some(json) = outcome.stdout {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{json}");
    }
    if outcome.failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
