//! Running iproute2: `ip` in the node's network namespace, and through `nsenter` in a pod's.
//! The agent reads the node's neighbours with it; the CNI plugin builds the pod's veth.

use std::io::Write;
use std::process::{Command, Stdio};

/// Why an `ip` step failed.
#[derive(Debug, thiserror::Error)]
#[error("{step} failed: {detail}")]
pub struct IprouteError {
    /// What was being done.
    pub step: String,
    /// The tool's own words.
    pub detail: String,
}

fn tool(candidates: &[&'static str]) -> &'static str {
    candidates
        .iter()
        .copied()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or(candidates[candidates.len() - 1])
}

fn ip_bin() -> &'static str {
    tool(&["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "ip"])
}

fn nsenter_bin() -> &'static str {
    tool(&["/usr/bin/nsenter", "/bin/nsenter", "nsenter"])
}

/// Runs `cmd` (with `stdin` fed to it, if any) as the step `step`; its stdout.
pub fn run(step: &str, mut cmd: Command, stdin: Option<&str>) -> Result<String, IprouteError> {
    let err = |detail: String| IprouteError { step: step.to_owned(), detail };
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        err(format!(
            "cannot run {:?}: {e}; install iproute2 (ip) and util-linux (nsenter) on the node",
            cmd.get_program()
        ))
    })?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin was piped");
        pipe.write_all(input.as_bytes()).map_err(|e| err(format!("writing commands: {e}")))?;
    }
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        return Err(err(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip ARGS` in this network namespace.
pub fn ip(args: &[&str]) -> Command {
    let mut cmd = Command::new(ip_bin());
    cmd.args(args);
    cmd
}

/// `ip ARGS` in the network namespace at path `netns`.
pub fn in_netns(netns: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(nsenter_bin());
    cmd.arg(format!("--net={netns}")).arg(ip_bin()).args(args);
    cmd
}
