//! A rendered container seen as its binary sees it: the args, plus every
//! environment variable that is a flag's env twin written as that flag, so
//! one `try_parse_from` checks both without touching the test's own
//! environment.

use clap::Command;
use serde_json::Value;

use crate::manifests::RenderedContainer;

/// Environment variables a container may carry that are no flag's twin: read
/// by libraries (logging, cloud SDK credentials), not by clap.
pub const NON_FLAG_ENV: &[&str] = &[
    "RUST_LOG",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "ALIBABA_CLOUD_ACCESS_KEY_ID",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
];

/// The value of one rendered env entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RenderedEnv {
    /// `value: ...`
    Literal(String),
    /// `valueFrom: ...`; the text names the source (e.g. `fieldRef:spec.nodeName`).
    From(String),
}

/// The value of one rendered `env` entry.
pub fn rendered_env(entry: &Value) -> RenderedEnv {
    if let Some(text) = entry.get("value").and_then(Value::as_str) {
        return RenderedEnv::Literal(text.to_owned());
    }
    let from = &entry["valueFrom"];
    let source = if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
        format!("fieldRef:{path}")
    } else if let Some(key) = from["secretKeyRef"]["key"].as_str() {
        format!("secretKeyRef:{key}")
    } else {
        format!("valueFrom:{from}")
    };
    RenderedEnv::From(source)
}

/// The argv a container's binary gets, built against the binary's own parser.
#[derive(Clone, Debug)]
pub struct ContainerCommandLine {
    /// `program args... --flag=env-value...`
    pub argv: Vec<String>,
    /// Every long flag set, by args or by env (without the leading `--`).
    pub flags: Vec<String>,
    /// Problems found before parsing (env vars that are nobody's flag).
    pub problems: Vec<String>,
}

/// Builds the command line of `container` for `parser` (the subcommand's
/// `Command` when args start with one, e.g. `run`).
pub fn command_line(container: &RenderedContainer, parser: &Command) -> ContainerCommandLine {
    let program = container.program().unwrap_or_default().to_owned();
    let mut argv = vec![program];
    argv.extend(container.args.iter().cloned());
    let mut problems = Vec::new();
    for entry in &container.env {
        let name = entry["name"].as_str().unwrap_or_default();
        let twin = parser.get_arguments().find(|a| a.get_env().is_some_and(|e| e == name));
        match (twin.and_then(|a| a.get_long()), rendered_env(entry)) {
            (Some(long), RenderedEnv::Literal(value)) => argv.push(format!("--{long}={value}")),
            // A value only the cluster knows: any text stands in for it.
            (Some(long), RenderedEnv::From(source)) => argv.push(format!("--{long}={source}")),
            (None, _) if NON_FLAG_ENV.contains(&name) => {}
            (None, _) => problems.push(format!(
                "env {name} of {} is no flag's environment variable (typo?)",
                container.label()
            )),
        }
    }
    let flags = argv
        .iter()
        .filter_map(|a| a.strip_prefix("--"))
        .map(|a| a.split('=').next().unwrap_or(a).to_owned())
        .collect();
    ContainerCommandLine { argv, flags, problems }
}

/// The long flags `parser` knows (help and version left out).
pub fn known_flags(parser: &Command) -> Vec<String> {
    parser
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| !matches!(*l, "help" | "version"))
        .map(str::to_owned)
        .collect()
}

/// The value the long flag `long` takes on `argv` as `parser` reads it (flag or env
/// twin already written as a flag by [`command_line`]); `None` when it is not set.
/// For a subcommand's parser (`run`), `argv[1]` names it and is skipped with the program.
pub fn flag_value(parser: &Command, argv: &[String], long: &str) -> Option<String> {
    let argv = match argv.get(1) {
        Some(first) if first == parser.get_name() => &argv[1..],
        _ => argv,
    };
    let arg = parser.get_arguments().find(|a| a.get_long() == Some(long))?;
    let matches = parser.clone().try_get_matches_from(argv).ok()?;
    let raw = matches.get_raw(arg.get_id().as_str())?.next_back()?;
    Some(raw.to_string_lossy().into_owned())
}
