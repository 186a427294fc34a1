//! The plugin's commands: parse env and stdin, call the agent, shape the
//! answer. [`run`] never panics on input; it returns the JSON to print and
//! whether it is an error.

use eni_ipam_api::agent_api::{ENDPOINT_PATH, HEALTHZ_PATH, IPAM_PATH};
use std::collections::BTreeSet;

use eni_ipam_api::{AllocateRequest, AllocateResponse, EndpointRequest, HealthzResponse};
use serde_json::{Value, json};

use super::agent_client::{AgentCallError, AgentClient};
use super::link;
use super::spec::{
    CniEnv, CniError, Command, ErrorCode, LATEST_VERSION, NetConf, ResultInterface, SUPPORTED_VERSIONS,
    success_result,
};

/// What to print on stdout, and whether the process fails.
#[derive(Debug)]
pub struct Outcome {
    /// The JSON for stdout (`None` for a DEL or CHECK that succeeds: no output).
    pub stdout: Option<Value>,
    /// Exit status 1 when true.
    pub failed: bool,
}

/// Runs one CNI invocation.
pub fn run(get_env: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Outcome {
    let env = match CniEnv::from_vars(get_env) {
        Ok(env) => env,
        Err(err) => return failure(&err, LATEST_VERSION),
    };
    if env.command == Command::Version {
        return Outcome { stdout: Some(version_answer(stdin)), failed: false };
    }
    let conf = match NetConf::parse(stdin) {
        Ok(conf) => conf,
        Err(err) => return failure(&err, &version_for_error(stdin)),
    };
    let result = match env.command {
        Command::Add => add(&env, &conf).map(Some),
        Command::Del => del(&env, &conf).map(|()| None),
        Command::Check => check(&env, &conf).map(|()| None),
        Command::Status => status(&conf).map(|()| None),
        Command::Gc => gc(&conf, stdin).map(|()| None),
        Command::Version => unreachable!("answered above"),
    };
    match result {
        Ok(stdout) => Outcome { stdout, failed: false },
        Err(err) => failure(&err, &conf.cni_version),
    }
}

fn failure(err: &CniError, cni_version: &str) -> Outcome {
    Outcome { stdout: Some(err.to_json(cni_version)), failed: true }
}

fn version_for_error(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion").and_then(Value::as_str).map(str::to_owned))
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| LATEST_VERSION.to_owned())
}

fn version_answer(stdin: &[u8]) -> Value {
    json!({"cniVersion": version_for_error(stdin), "supportedVersions": SUPPORTED_VERSIONS})
}

fn agent_error(err: AgentCallError, what: &str) -> CniError {
    match err {
        AgentCallError::Refused { status: 503, message } => {
            CniError::new(ErrorCode::TryAgainLater, format!("{what}: no free IP on this node"), message)
        }
        AgentCallError::Refused { status, message } if (400..500).contains(&status) => {
            CniError::new(ErrorCode::InvalidConfig, format!("{what}: the agent refused the request"), message)
        }
        AgentCallError::Refused { message, .. } => {
            CniError::new(ErrorCode::TryAgainLater, format!("{what}: the agent failed"), message)
        }
        unreachable @ AgentCallError::Unreachable { .. } => CniError::new(
            ErrorCode::TryAgainLater,
            format!("{what}: eni-ipam agent unreachable"),
            unreachable.to_string(),
        ),
        garbled @ AgentCallError::Garbled { .. } => {
            CniError::new(ErrorCode::Io, format!("{what}: bad answer from the agent"), garbled.to_string())
        }
    }
}

fn client(conf: &NetConf) -> AgentClient {
    AgentClient::new(&conf.socket, conf.timeout)
}

fn prefix_len(cidr: &str) -> &str {
    cidr.split_once('/').map(|(_, p)| p).unwrap_or("32")
}

/// Every allocation on the node, as `GET /v1/ipam` lists them.
fn allocations(conf: &NetConf, what: &str) -> Result<Vec<Value>, CniError> {
    let answer = client(conf).call("GET", IPAM_PATH, None).map_err(|e| agent_error(e, what))?;
    let mut list: Value = serde_json::from_slice(&answer.body).map_err(|e| {
        CniError::new(ErrorCode::Decode, format!("{what}: bad answer from the agent"), e.to_string())
    })?;
    match list["allocations"].take() {
        Value::Array(all) => Ok(all),
        other => Err(CniError::new(
            ErrorCode::Decode,
            format!("{what}: bad answer from the agent"),
            format!("\"allocations\" is not a list: {other}"),
        )),
    }
}

/// In main mode a pod has one interface of ours: its default route goes through it. A second
/// one is refused before anything is allocated or created.
fn refuse_second_interface(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    let other = allocations(conf, "allocate")?.into_iter().find(|a| {
        a["containerId"] == env.container_id.as_str()
            && a["ifName"] != env.if_name.as_str()
            && !a["endpoint"].is_null()
    });
    match other {
        None => Ok(()),
        Some(first) => Err(CniError::new(
            ErrorCode::InvalidConfig,
            "eni-ipam-cni gives a pod one interface",
            format!(
                "container {} already has {} ({}) from eni-ipam-cni as its main plugin, so {} was not set up \
                 and nothing changed; attach further networks with another main plugin (bridge, ptp, \
                 macvlan ...), which may use eni-ipam-cni as its \"ipam\"",
                env.container_id,
                first["ifName"].as_str().unwrap_or("?"),
                first["ip"].as_str().unwrap_or("?"),
                env.if_name
            ),
        )),
    }
}

fn add(env: &CniEnv, conf: &NetConf) -> Result<Value, CniError> {
    if conf.is_main() {
        refuse_second_interface(env, conf)?;
    }
    let (pod_namespace, pod_name) = env.pod();
    let request = AllocateRequest {
        container_id: env.container_id.clone(),
        if_name: env.if_name.clone(),
        pod_namespace,
        pod_name,
        network: conf.name.clone(),
    };
    let body = serde_json::to_vec(&request).expect("a request always serializes");
    let answer = client(conf).call("POST", IPAM_PATH, Some(&body)).map_err(|e| agent_error(e, "allocate"))?;
    let allocation: AllocateResponse = serde_json::from_slice(&answer.body).map_err(|e| {
        CniError::new(
            ErrorCode::Decode,
            "allocate: bad answer from the agent",
            format!("not an AllocateResponse: {e}"),
        )
    })?;
    if !conf.is_main() {
        let address = format!("{}/{}", allocation.ip, prefix_len(&allocation.subnet_cidr));
        return Ok(success_result(&conf.cni_version, &[], &address, &allocation.gateway, None, &[]));
    }
    let host_if = link::host_veth_name(&env.container_id, &env.if_name);
    let made = match link::setup(&env.netns, &env.if_name, &host_if, &allocation.ip, conf.mtu) {
        Ok(made) => made,
        Err(err) => {
            // Give the IP back so a failed ADD holds nothing; the runtime's DEL would too.
            let _ = release(env, conf);
            let code =
                if err.step.starts_with("open netns") { ErrorCode::UnknownContainer } else { ErrorCode::Io };
            return Err(CniError::new(code, "cannot set up the pod interface", err.to_string()));
        }
    };
    if let Err(err) = register_endpoint(env, conf, &made) {
        let _ = link::teardown(&made.host_if);
        let _ = release(env, conf);
        return Err(err);
    }
    let interfaces = [
        ResultInterface { name: made.host_if, mac: made.host_mac, sandbox: None },
        ResultInterface { name: env.if_name.clone(), mac: made.pod_mac, sandbox: Some(env.netns.clone()) },
    ];
    Ok(success_result(
        &conf.cni_version,
        &interfaces,
        &format!("{}/32", allocation.ip),
        link::POD_GATEWAY,
        Some(1),
        &[("0.0.0.0/0", link::POD_GATEWAY)],
    ))
}

/// Tells the agent the pod's veth, so it installs the datapath endpoint before ADD answers.
/// An agent that predates the endpoint API answers 404: the pod is then left to kernel
/// routing (the host route [`link::setup`] made), as before.
fn register_endpoint(env: &CniEnv, conf: &NetConf, made: &link::PodLink) -> Result<(), CniError> {
    let request = EndpointRequest {
        container_id: env.container_id.clone(),
        if_name: env.if_name.clone(),
        host_veth: made.host_if.clone(),
        host_veth_ifindex: made.host_ifindex,
        pod_mac: made.pod_mac.clone(),
    };
    let body = serde_json::to_vec(&request).expect("a request always serializes");
    match client(conf).call("POST", ENDPOINT_PATH, Some(&body)) {
        Ok(_) | Err(AgentCallError::Refused { status: 404, .. }) => Ok(()),
        Err(err) => Err(agent_error(err, "datapath endpoint")),
    }
}

fn release(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    let path = format!("{IPAM_PATH}/{}?ifName={}", encode(&env.container_id), encode(&env.if_name));
    client(conf).call("DELETE", &path, None).map(|_| ()).map_err(|e| agent_error(e, "release"))
}

fn del(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    if conf.is_main() {
        link::teardown(&link::host_veth_name(&env.container_id, &env.if_name))
            .map_err(|e| CniError::new(ErrorCode::Io, "cannot remove the pod interface", e.to_string()))?;
    }
    release(env, conf)
}

fn check(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    let ip = allocations(conf, "check")?
        .into_iter()
        .find(|a| a["containerId"] == env.container_id.as_str() && a["ifName"] == env.if_name.as_str())
        .and_then(|a| a["ip"].as_str().map(str::to_owned))
        .ok_or_else(|| {
            CniError::new(
                ErrorCode::UnknownContainer,
                "check: no IP allocated",
                format!("the agent holds no IP for container {} interface {}", env.container_id, env.if_name),
            )
        })?;
    if let Some(prev) = &conf.prev_result {
        let listed = prev["ips"].as_array().into_iter().flatten().filter_map(|i| i["address"].as_str());
        if !listed.clone().any(|a| a.split('/').next() == Some(ip.as_str())) {
            return Err(CniError::new(
                ErrorCode::InvalidConfig,
                "check: prevResult disagrees with the agent",
                format!(
                    "the agent holds {ip} for container {}, prevResult lists {:?}",
                    env.container_id,
                    listed.collect::<Vec<_>>()
                ),
            ));
        }
    }
    if !conf.is_main() {
        // The main plugin checks the interface it made.
        return Ok(());
    }
    let host_if = link::host_veth_name(&env.container_id, &env.if_name);
    link::check(&env.netns, &env.if_name, &host_if, &ip).map_err(|e| {
        CniError::new(ErrorCode::Io, "check: the pod's network is not as ADD left it", e.to_string())
    })?;
    let path = format!("{ENDPOINT_PATH}/{}?ifName={}", encode(&env.container_id), encode(&env.if_name));
    match client(conf).call("GET", &path, None) {
        // 404: an agent that predates the check; its side is not verified.
        Ok(_) | Err(AgentCallError::Refused { status: 404, .. }) => Ok(()),
        Err(AgentCallError::Refused { status: 409, message }) => Err(CniError::new(
            ErrorCode::Io,
            "check: the pod's datapath endpoint is not as ADD left it",
            message,
        )),
        Err(err) => Err(agent_error(err, "check")),
    }
}

/// The attachments a GC call says are still valid: `null` or `[]` means none (libcni sends
/// `null` when the runtime has none left on this network); a missing key or a malformed
/// entry is an error and nothing is released.
fn valid_attachments(stdin: &[u8]) -> Result<BTreeSet<(String, String)>, CniError> {
    let bad = |details: String| CniError::new(ErrorCode::InvalidConfig, "gc: nothing was released", details);
    let root: Value = serde_json::from_slice(stdin).unwrap_or(Value::Null);
    match root.get("cni.dev/valid-attachments") {
        None => Err(bad("GC needs \"cni.dev/valid-attachments\": a list of {containerID, ifname}, \
                         or null for none"
            .into())),
        Some(Value::Null) => Ok(BTreeSet::new()),
        Some(Value::Array(entries)) => entries
            .iter()
            .map(|a| match (a["containerID"].as_str(), a["ifname"].as_str()) {
                (Some(id), Some(ifname)) => Ok((id.to_owned(), ifname.to_owned())),
                _ => Err(bad(format!("valid attachment {a} is not {{\"containerID\", \"ifname\"}}"))),
            })
            .collect(),
        Some(other) => Err(bad(format!("\"cni.dev/valid-attachments\" is not a list: {other}"))),
    }
}

/// GC (CNI 1.1): releases every allocation of this network (the configuration's `name`)
/// that `cni.dev/valid-attachments` does not list. Other networks' allocations, and those
/// made before the plugin recorded the network, are left alone.
fn gc(conf: &NetConf, stdin: &[u8]) -> Result<(), CniError> {
    let valid = valid_attachments(stdin)?;
    if conf.name.is_empty() {
        return Err(CniError::new(
            ErrorCode::InvalidConfig,
            "gc: nothing was released",
            "the network configuration has no \"name\", so its IPs cannot be told from other networks'",
        ));
    }
    let mut failures = Vec::new();
    for allocation in allocations(conf, "gc")? {
        let (Some(container_id), Some(if_name)) =
            (allocation["containerId"].as_str(), allocation["ifName"].as_str())
        else {
            continue;
        };
        if allocation["network"] != conf.name.as_str()
            || valid.contains(&(container_id.to_owned(), if_name.to_owned()))
        {
            continue;
        }
        let env = CniEnv {
            command: Command::Gc,
            container_id: container_id.to_owned(),
            netns: String::new(),
            if_name: if_name.to_owned(),
            args: Default::default(),
        };
        if let Err(err) = del(&env, conf) {
            failures.push(format!("container {container_id} interface {if_name}: {err}"));
        }
    }
    match failures.first() {
        None => Ok(()),
        Some(first) => Err(CniError::new(
            ErrorCode::TryAgainLater,
            format!("gc: {} stale attachments could not be released", failures.len()),
            first.clone(),
        )),
    }
}

/// STATUS (CNI 1.1): ready as long as the agent answers. A pool that is full or empty for
/// a while is not "not ready": the device plugin already keeps pods that need an IP away,
/// and a not-ready network would mark the whole node NotReady, so its pool could never grow.
fn status(conf: &NetConf) -> Result<(), CniError> {
    let unavailable = |details: String| {
        CniError::new(ErrorCode::PluginNotAvailable, "eni-ipam cannot add pods now", details)
    };
    let answer = client(conf).call("GET", HEALTHZ_PATH, None).map_err(|e| unavailable(e.to_string()))?;
    serde_json::from_slice::<HealthzResponse>(&answer.body)
        .map_err(|e| unavailable(format!("bad healthz answer: {e}")))?;
    Ok(())
}

/// Percent-encodes everything but unreserved characters.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn run_with(vars: &[(&str, &str)], stdin: &str) -> Outcome {
        let map: BTreeMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        run(|k| map.get(k).cloned(), stdin.as_bytes())
    }

    #[test]
    fn version_answers_without_an_agent() {
        let out = run_with(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.0.0"}"#);
        assert!(!out.failed);
        let stdout = out.stdout.unwrap();
        assert_eq!(stdout["cniVersion"], "1.0.0");
        assert_eq!(stdout["supportedVersions"].as_array().unwrap().len(), SUPPORTED_VERSIONS.len());
        let bare = run_with(&[("CNI_COMMAND", "VERSION")], "").stdout.unwrap();
        assert_eq!(bare["cniVersion"], LATEST_VERSION);
    }

    #[test]
    fn unreachable_agent_is_a_try_again_error_naming_the_socket() {
        let vars = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/proc/self/ns/net"),
            ("CNI_IFNAME", "eth0"),
        ];
        let stdin = r#"{"cniVersion":"1.0.0","name":"n","type":"bridge","ipam":{"type":"eni-ipam-cni","socket":"/nonexistent/a.sock","timeoutSeconds":1}}"#;
        let out = run_with(&vars, stdin);
        assert!(out.failed);
        let err = out.stdout.unwrap();
        assert_eq!(err["code"], 11);
        assert_eq!(err["cniVersion"], "1.0.0");
        assert!(err["msg"].as_str().unwrap().contains("unreachable"), "{err}");
        assert!(err["details"].as_str().unwrap().contains("/nonexistent/a.sock"), "{err}");
    }

    #[test]
    fn bad_input_is_an_error_never_a_panic() {
        let vars =
            [("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1"), ("CNI_NETNS", "/x"), ("CNI_IFNAME", "eth0")];
        for stdin in
            ["", "null", "\u{0}\u{1}", "{\"cniVersion\":\"1.0.0\",\"type\":[]}", "{\"cniVersion\":\"7\"}"]
        {
            let out = run_with(&vars, stdin);
            assert!(out.failed, "{stdin:?}");
            let err = out.stdout.unwrap();
            assert!(
                err["code"].as_u64().unwrap() > 0 && !err["details"].as_str().unwrap().is_empty(),
                "{err}"
            );
        }
        let out = run_with(&[("CNI_COMMAND", "ATTACH")], "{}");
        assert_eq!(out.stdout.unwrap()["code"], 4);
        let out = run_with(&[("CNI_COMMAND", "GC")], r#"{"cniVersion":"1.1.0","type":"eni-ipam-cni"}"#);
        assert_eq!(out.stdout.unwrap()["code"], 7, "GC without the valid-attachments key releases nothing");
    }

    #[test]
    fn gc_reads_null_and_empty_as_no_valid_attachment_and_refuses_malformed_lists() {
        let gc = |tail: &str| valid_attachments(format!(r#"{{"cniVersion":"1.1.0"{tail}}}"#).as_bytes());
        assert_eq!(gc(r#","cni.dev/valid-attachments":null"#).unwrap(), BTreeSet::new());
        assert_eq!(gc(r#","cni.dev/valid-attachments":[]"#).unwrap(), BTreeSet::new());
        let one = gc(r#","cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]"#).unwrap();
        assert_eq!(one, BTreeSet::from([("c1".to_owned(), "eth0".to_owned())]));
        for (tail, want) in [
            ("", "needs"),
            (r#","cni.dev/valid-attachments":{}"#, "not a list"),
            (r#","cni.dev/valid-attachments":[{"containerID":"c1"}]"#, "is not"),
        ] {
            let err = gc(tail).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidConfig, "{tail}");
            assert!(err.details.contains(want) && err.msg.contains("nothing was released"), "{tail}: {err}");
        }
    }

    #[test]
    fn container_ids_are_path_safe() {
        assert_eq!(encode("abc-123_x.y"), "abc-123_x.y");
        assert_eq!(encode("a/b?c d"), "a%2Fb%3Fc%20d");
    }
}
