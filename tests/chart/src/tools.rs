//! The external tools the chart tests drive: `helm` and `kubernetes-validate`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// Where the chart lives, from this crate's folder.
pub fn chart_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../charts/eni-ipam")
}

/// Runs `program args`, failing the test with the fix when the tool is not installed.
fn run(program: &str, args: &[String], stdin: Option<&str>) -> Output {
    let mut command = Command::new(program);
    command.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{program}` is not on PATH: run scripts/install-test-tools, then put \
             $ENI_TOOLS_HOME/bin and $ENI_TOOLS_HOME/venv/bin on PATH (scripts/test does both)"
        ),
        Err(e) => panic!("cannot run `{program}`: {e}"),
    };
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(text.as_bytes()).unwrap_or_else(|e| panic!("cannot write to `{program}`: {e}"));
    }
    child.wait_with_output().unwrap_or_else(|e| panic!("`{program}` did not finish: {e}"))
}

/// What one helm run printed, with its exit status.
#[derive(Debug)]
pub struct HelmOutcome {
    /// Whether helm exited with 0.
    pub success: bool,
    /// Standard output (the manifests, for `template`).
    pub stdout: String,
    /// Standard error (the reasons, on failure).
    pub stderr: String,
}

/// `helm` on the chart, with a release name and namespace of its own.
#[derive(Clone, Debug)]
pub struct Helm {
    /// Release name used for every call.
    pub release: String,
    /// Release namespace used for every call.
    pub namespace: String,
}

impl Default for Helm {
    fn default() -> Self {
        Self { release: "eni-ipam".into(), namespace: "eni-ipam".into() }
    }
}

impl Helm {
    fn call(&self, verb: &[&str], values: &[&str], sets: &[&str]) -> HelmOutcome {
        let mut args: Vec<String> = verb.iter().map(|s| (*s).to_owned()).collect();
        args.extend(["--namespace".into(), self.namespace.clone()]);
        for file in values {
            args.extend(["--values".into(), chart_dir().join(file).display().to_string()]);
        }
        for set in sets {
            args.extend(["--set".into(), (*set).to_owned()]);
        }
        let output = run("helm", &args, None);
        HelmOutcome {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// `helm lint --strict` with values files (relative to the chart) and `--set` pairs.
    pub fn lint(&self, values: &[&str], sets: &[&str]) -> HelmOutcome {
        let chart = chart_dir().display().to_string();
        self.call(&["lint", "--strict", &chart], values, sets)
    }

    /// `helm template` without the CRDs; `Err` carries helm's message.
    pub fn template(&self, values: &[&str], sets: &[&str]) -> Result<String, String> {
        let chart = chart_dir().display().to_string();
        let outcome = self.call(&["template", &self.release, &chart, "--skip-crds"], values, sets);
        if outcome.success { Ok(outcome.stdout) } else { Err(outcome.stderr) }
    }

    /// [`Helm::template`] as for a cluster of Kubernetes `version` (`--kube-version`).
    pub fn template_for(&self, version: &str, values: &[&str], sets: &[&str]) -> Result<String, String> {
        let chart = chart_dir().display().to_string();
        let verb = ["template", &self.release, &chart, "--skip-crds", "--kube-version", version];
        let outcome = self.call(&verb, values, sets);
        if outcome.success { Ok(outcome.stdout) } else { Err(outcome.stderr) }
    }

    /// Like [`Helm::template`], failing the test when helm refuses.
    pub fn render(&self, values: &[&str], sets: &[&str]) -> String {
        self.template(values, sets)
            .unwrap_or_else(|e| panic!("helm template with {values:?} {sets:?} failed:\n{e}"))
    }
}

/// `kubernetes-validate --strict` against Kubernetes `version` (e.g. "1.32.0");
/// `Err` carries its report.
pub fn validate_kubernetes(manifests: &str, version: &str) -> Result<(), String> {
    let args: Vec<String> =
        ["--strict", "--kubernetes-version", version, "-"].iter().map(|s| (*s).to_owned()).collect();
    let output = run("kubernetes-validate", &args, Some(manifests));
    let report =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if output.status.success() { Ok(()) } else { Err(report) }
}
