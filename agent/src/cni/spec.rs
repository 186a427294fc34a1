//! What the CNI spec fixes: versions, error codes, the environment, the
//! network configuration fields this plugin reads, and the result shape.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

/// Versions this plugin speaks (results before 1.0.0 carry `"version": "4"` per IP).
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest version spoken.
pub const LATEST_VERSION: &str = "1.1.0";

/// The plugin's name, as `type` in a network configuration.
pub const PLUGIN_TYPE: &str = "eni-ipam-cni";

/// Error codes of the CNI spec (section "Error").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// 1: incompatible CNI version.
    IncompatibleVersion = 1,
    /// 2: unsupported field in network configuration.
    UnsupportedField = 2,
    /// 3: container unknown or does not exist.
    UnknownContainer = 3,
    /// 4: invalid necessary environment variables.
    InvalidEnv = 4,
    /// 5: I/O failure.
    Io = 5,
    /// 6: failed to decode content.
    Decode = 6,
    /// 7: invalid network config.
    InvalidConfig = 7,
    /// 11: try again later.
    TryAgainLater = 11,
    /// 50: the plugin is not available (STATUS).
    PluginNotAvailable = 50,
}

/// An error as the spec prints it on stdout.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{msg}: {details}")]
pub struct CniError {
    /// The spec's code.
    pub code: ErrorCode,
    /// A short message.
    pub msg: String,
    /// What exactly, and what to do.
    pub details: String,
}

impl CniError {
    /// Builds an error.
    pub fn new(code: ErrorCode, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self { code, msg: msg.into(), details: details.into() }
    }

    /// The JSON for stdout.
    pub fn to_json(&self, cni_version: &str) -> Value {
        json!({"cniVersion": cni_version, "code": self.code as u32, "msg": self.msg, "details": self.details})
    }
}

/// The command and its arguments, from the `CNI_*` environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniEnv {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS` (may be empty on DEL).
    pub netns: String,
    /// `CNI_IFNAME`.
    pub if_name: String,
    /// `CNI_ARGS` as key=value pairs (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`, ...).
    pub args: BTreeMap<String, String>,
}

/// The CNI operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Add the container to the network.
    Add,
    /// Remove it (idempotent).
    Del,
    /// Check it is as ADD left it.
    Check,
    /// Can the plugin serve ADD now (1.1)?
    Status,
    /// Which versions are spoken.
    Version,
    /// Free what no valid attachment holds (1.1).
    Gc,
}

impl CniEnv {
    /// Reads and checks the environment for the command it names.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, CniError> {
        let invalid =
            |details: String| CniError::new(ErrorCode::InvalidEnv, "invalid CNI environment", details);
        let command = match get("CNI_COMMAND").as_deref() {
            Some("ADD") => Command::Add,
            Some("DEL") => Command::Del,
            Some("CHECK") => Command::Check,
            Some("STATUS") => Command::Status,
            Some("VERSION") => Command::Version,
            Some("GC") => Command::Gc,
            Some(other) => {
                return Err(invalid(format!(
                    "CNI_COMMAND={other:?} is not one of ADD, DEL, CHECK, STATUS, VERSION, GC"
                )));
            }
            None => {
                return Err(invalid(
                    "CNI_COMMAND is not set; this binary is a CNI plugin run by the container runtime".into(),
                ));
            }
        };
        let var = |name: &str| get(name).unwrap_or_default();
        let env = Self {
            command,
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            if_name: var("CNI_IFNAME"),
            args: parse_args(&var("CNI_ARGS")).map_err(invalid)?,
        };
        if matches!(command, Command::Add | Command::Del | Command::Check) {
            if env.container_id.is_empty() {
                return Err(invalid("CNI_CONTAINERID is not set or empty".into()));
            }
            if env.if_name.is_empty() {
                return Err(invalid("CNI_IFNAME is not set or empty".into()));
            }
            if env.if_name.len() > 15
                || env.if_name.contains(['/', ' '])
                || env.if_name == "."
                || env.if_name == ".."
            {
                return Err(invalid(format!("CNI_IFNAME={:?} is not a valid interface name", env.if_name)));
            }
        }
        if matches!(command, Command::Add | Command::Check) && env.netns.is_empty() {
            return Err(invalid(
                "CNI_NETNS is not set or empty; ADD and CHECK need the pod's network namespace path".into(),
            ));
        }
        Ok(env)
    }

    /// The pod's namespace and name from `CNI_ARGS` (empty when the runtime is not Kubernetes).
    pub fn pod(&self) -> (String, String) {
        let arg = |k: &str| self.args.get(k).cloned().unwrap_or_default();
        (arg("K8S_POD_NAMESPACE"), arg("K8S_POD_NAME"))
    }
}

fn parse_args(raw: &str) -> Result<BTreeMap<String, String>, String> {
    raw.split(';')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| format!("CNI_ARGS entry {pair:?} is not KEY=VALUE"))
        })
        .collect()
}

/// The fields of the network configuration this plugin reads.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConf {
    /// `cniVersion`.
    pub cni_version: String,
    /// The network's `name` (the conflist's); CNI GC frees only this network's IPs.
    pub name: String,
    /// `type` of the top-level plugin: ours in main mode, another in ipam mode.
    pub plugin_type: String,
    /// The agent socket (`socket` in our section).
    pub socket: String,
    /// Bound on each agent call (`timeoutSeconds`, default 10).
    pub timeout: std::time::Duration,
    /// MTU of the pod interface in main mode (`mtu`, 0 = kernel default).
    pub mtu: u32,
    /// `prevResult`, given on CHECK and DEL.
    pub prev_result: Option<Value>,
}

impl NetConf {
    /// Whether this plugin is the main plugin (else it is another plugin's `ipam`).
    pub fn is_main(&self) -> bool {
        self.plugin_type == PLUGIN_TYPE
    }

    /// Parses stdin. Our section is the top level in main mode and `ipam` in ipam mode.
    pub fn parse(stdin: &[u8]) -> Result<Self, CniError> {
        let decode =
            |d: String| CniError::new(ErrorCode::Decode, "cannot decode the network configuration", d);
        let bad = |d: String| CniError::new(ErrorCode::InvalidConfig, "invalid network configuration", d);
        if stdin.iter().all(u8::is_ascii_whitespace) {
            return Err(decode(
                "stdin is empty; the runtime must pass the network configuration as JSON".into(),
            ));
        }
        let root: Value =
            serde_json::from_slice(stdin).map_err(|e| decode(format!("stdin is not JSON: {e}")))?;
        let Some(obj) = root.as_object() else {
            return Err(decode("stdin is JSON but not an object".into()));
        };
        let text = |v: &Value, field: &str| -> Result<Option<String>, CniError> {
            match v.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(bad(format!("{field:?} must be a string, got {other}"))),
            }
        };
        let cni_version =
            text(&root, "cniVersion")?.ok_or_else(|| bad("\"cniVersion\" is missing".into()))?;
        if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
            return Err(CniError::new(
                ErrorCode::IncompatibleVersion,
                "incompatible CNI version",
                format!(
                    "cniVersion {cni_version:?} is not supported; this plugin speaks {}",
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        let plugin_type = text(&root, "type")?.ok_or_else(|| bad("\"type\" is missing".into()))?;
        let section = if plugin_type == PLUGIN_TYPE {
            &root
        } else {
            let ipam = obj.get("ipam").ok_or_else(|| {
                bad(format!(
                    "plugin type {plugin_type:?} is not {PLUGIN_TYPE} and there is no \"ipam\" section"
                ))
            })?;
            let ipam_type = text(ipam, "type")?.unwrap_or_default();
            if ipam_type != PLUGIN_TYPE {
                return Err(bad(format!("ipam.type is {ipam_type:?}, not {PLUGIN_TYPE}")));
            }
            ipam
        };
        let socket =
            text(section, "socket")?.unwrap_or_else(|| eni_ipam_api::DEFAULT_AGENT_SOCKET.to_owned());
        let number = |field: &str, default: u64| -> Result<u64, CniError> {
            match section.get(field) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v
                    .as_u64()
                    .ok_or_else(|| bad(format!("{field:?} must be a non-negative integer, got {v}"))),
            }
        };
        let timeout_seconds = number("timeoutSeconds", 10)?;
        if timeout_seconds == 0 || timeout_seconds > 300 {
            return Err(bad(format!("\"timeoutSeconds\" is {timeout_seconds}; use 1..=300")));
        }
        let mtu = number("mtu", 0)?;
        if mtu != 0 && !(68..=65535).contains(&mtu) {
            return Err(bad(format!("\"mtu\" is {mtu}; use 68..=65535 or leave it out")));
        }
        Ok(Self {
            cni_version,
            name: text(&root, "name")?.unwrap_or_default(),
            plugin_type,
            socket,
            timeout: std::time::Duration::from_secs(timeout_seconds),
            mtu: mtu as u32,
            prev_result: obj.get("prevResult").cloned(),
        })
    }
}

/// One interface in a result.
#[derive(Clone, Debug, Serialize)]
pub struct ResultInterface {
    /// Link name.
    pub name: String,
    /// MAC address.
    pub mac: String,
    /// The netns path for an interface inside the container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// Builds a success result in the layout of `cni_version`.
pub fn success_result(
    cni_version: &str,
    interfaces: &[ResultInterface],
    address: &str,
    gateway: &str,
    interface_index: Option<usize>,
    routes: &[(&str, &str)],
) -> Value {
    let mut ip = json!({"address": address});
    if !gateway.is_empty() {
        ip["gateway"] = json!(gateway);
    }
    if let Some(i) = interface_index {
        ip["interface"] = json!(i);
    }
    if cni_version.starts_with("0.") {
        ip["version"] = json!("4");
    }
    let routes: Vec<Value> = routes
        .iter()
        .map(|(dst, gw)| if gw.is_empty() { json!({"dst": dst}) } else { json!({"dst": dst, "gw": gw}) })
        .collect();
    let mut result = json!({"cniVersion": cni_version, "ips": [ip], "routes": routes, "dns": {}});
    if !interfaces.is_empty() {
        result["interfaces"] = json!(interfaces);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<CniEnv, CniError> {
        let map: BTreeMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        CniEnv::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn environment_errors_say_which_variable() {
        let add = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
        ];
        let ok = env(&add).unwrap();
        assert_eq!(ok.command, Command::Add);
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "CNI_COMMAND is not set"),
            (&[("CNI_COMMAND", "ATTACH")], "\"ATTACH\" is not one of"),
            (&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0"), ("CNI_NETNS", "/x")], "CNI_CONTAINERID"),
            (&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c"), ("CNI_NETNS", "/x")], "CNI_IFNAME"),
            (&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c"), ("CNI_IFNAME", "eth0")], "CNI_NETNS"),
            (
                &[
                    ("CNI_COMMAND", "ADD"),
                    ("CNI_CONTAINERID", "c"),
                    ("CNI_IFNAME", "a-very-long-ifname"),
                    ("CNI_NETNS", "/x"),
                ],
                "not a valid interface name",
            ),
            (
                &[
                    ("CNI_COMMAND", "DEL"),
                    ("CNI_CONTAINERID", "c"),
                    ("CNI_IFNAME", "eth0"),
                    ("CNI_ARGS", "IgnoreUnknown"),
                ],
                "not KEY=VALUE",
            ),
        ];
        for (vars, want) in cases {
            let err = env(vars).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidEnv, "{vars:?}");
            assert!(err.details.contains(want), "{vars:?}: {}", err.details);
        }
        let del = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p"),
        ])
        .unwrap();
        assert_eq!(del.pod(), ("ns".to_owned(), "p".to_owned()), "DEL needs no netns");
        assert_eq!(env(&[("CNI_COMMAND", "VERSION")]).unwrap().command, Command::Version);
    }

    #[test]
    fn configuration_errors_have_the_spec_codes() {
        let cases: &[(&str, ErrorCode, &str)] = &[
            ("", ErrorCode::Decode, "stdin is empty"),
            ("{not json", ErrorCode::Decode, "not JSON"),
            ("[1]", ErrorCode::Decode, "not an object"),
            (r#"{"type":"eni-ipam-cni"}"#, ErrorCode::InvalidConfig, "cniVersion"),
            (r#"{"cniVersion":"0.2.0","type":"eni-ipam-cni"}"#, ErrorCode::IncompatibleVersion, "0.2.0"),
            (r#"{"cniVersion":"9.9.9","type":"eni-ipam-cni"}"#, ErrorCode::IncompatibleVersion, "speaks"),
            (r#"{"cniVersion":"1.0.0"}"#, ErrorCode::InvalidConfig, "\"type\" is missing"),
            (r#"{"cniVersion":1,"type":"x"}"#, ErrorCode::InvalidConfig, "must be a string"),
            (r#"{"cniVersion":"1.0.0","type":"bridge"}"#, ErrorCode::InvalidConfig, "no \"ipam\" section"),
            (
                r#"{"cniVersion":"1.0.0","type":"bridge","ipam":{"type":"host-local"}}"#,
                ErrorCode::InvalidConfig,
                "ipam.type",
            ),
            (
                r#"{"cniVersion":"1.0.0","type":"eni-ipam-cni","timeoutSeconds":0}"#,
                ErrorCode::InvalidConfig,
                "1..=300",
            ),
            (r#"{"cniVersion":"1.0.0","type":"eni-ipam-cni","mtu":"big"}"#, ErrorCode::InvalidConfig, "mtu"),
        ];
        for (stdin, code, want) in cases {
            let err = NetConf::parse(stdin.as_bytes()).unwrap_err();
            assert_eq!(err.code, *code, "{stdin}: {err}");
            assert!(err.details.contains(want), "{stdin}: {}", err.details);
        }
        let ipam_mode = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"bridge","ipam":{"type":"eni-ipam-cni","socket":"/tmp/a.sock","timeoutSeconds":2}}"#,
        )
        .unwrap();
        assert!(!ipam_mode.is_main());
        assert_eq!(ipam_mode.name, "n", "the network's name is the top-level one");
        assert_eq!(ipam_mode.socket, "/tmp/a.sock");
        assert_eq!(ipam_mode.timeout, std::time::Duration::from_secs(2));
        let main_mode =
            NetConf::parse(br#"{"cniVersion":"1.1.0","type":"eni-ipam-cni","mtu":9001}"#).unwrap();
        assert!(main_mode.is_main());
        assert_eq!(main_mode.socket, eni_ipam_api::DEFAULT_AGENT_SOCKET);
    }

    #[test]
    fn results_follow_the_version_layout() {
        let old = success_result("0.3.1", &[], "10.0.0.5/24", "10.0.0.1", None, &[]);
        assert_eq!(old["ips"][0]["version"], "4");
        let new =
            success_result("1.0.0", &[], "10.0.0.5/24", "10.0.0.1", Some(1), &[("0.0.0.0/0", "10.0.0.1")]);
        assert!(new["ips"][0].get("version").is_none());
        assert_eq!(new["ips"][0]["interface"], 1);
        assert_eq!(new["routes"][0]["gw"], "10.0.0.1");
        let err = CniError::new(ErrorCode::TryAgainLater, "m", "d").to_json("1.0.0");
        assert_eq!(err, json!({"cniVersion": "1.0.0", "code": 11, "msg": "m", "details": "d"}));
    }
}
