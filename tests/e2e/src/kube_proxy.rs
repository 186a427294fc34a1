//! kube-proxy in iptables mode, as far as the bed needs it: from the stand-in's Services and
//! EndpointSlices, the `nat` table rules kube-proxy writes on every node (the chain layout
//! and matches of kube-proxy's iptables proxier), loaded with `iptables-restore --noflush`
//! in each node's namespace and rewritten when Services or EndpointSlices change.
//!
//! - `PREROUTING` and `OUTPUT` jump to `KUBE-SERVICES`, `POSTROUTING` to `KUBE-POSTROUTING`;
//! - per Service port a `KUBE-SVC-*` chain picks a `KUBE-SEP-*` chain (`statistic random`),
//!   which marks hairpin traffic (`KUBE-MARK-MASQ`) and DNATs to the endpoint;
//! - NodePorts: last in `KUBE-SERVICES`, `--dst-type LOCAL` jumps to `KUBE-NODEPORTS`, then
//!   `KUBE-EXT-*`: externalTrafficPolicy Cluster masquerades and uses every endpoint, Local
//!   uses only this node's (`KUBE-SVL-*`) and keeps the client's address;
//! - `KUBE-POSTROUTING` masquerades what carries mark 0x4000.
//!
//! The cluster CIDR is not given (as kube-proxy without `--cluster-cidr`): no "masquerade
//! off-cluster ClusterIP traffic" rule.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eni_ipam_kube_standin::{ENDPOINTSLICES, KubeStandin, SERVICES};
use serde_json::Value;
use tokio::task::JoinHandle;

/// One endpoint of a Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The pod's address.
    pub ip: Ipv4Addr,
    /// The target port.
    pub port: u16,
    /// The node it runs on.
    pub node: String,
}

/// One port of a Service, with its ready endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// `namespace/name:port-name`, as kube-proxy names it.
    pub name: String,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The ClusterIP.
    pub cluster_ip: Ipv4Addr,
    /// The Service port.
    pub port: u16,
    /// The NodePort, if any.
    pub node_port: Option<u16>,
    /// externalTrafficPolicy: Local.
    pub local_only: bool,
    /// Ready endpoints.
    pub endpoints: Vec<Endpoint>,
}

/// The Service ports of `services`, with endpoints from `slices` (ready ones).
pub fn service_ports(services: &[Value], slices: &[Value]) -> Vec<ServicePort> {
    let mut out = Vec::new();
    for svc in services {
        let (ns, name) = (
            svc["metadata"]["namespace"].as_str().unwrap_or("default"),
            svc["metadata"]["name"].as_str().unwrap_or_default(),
        );
        let Some(cluster_ip) = svc["spec"]["clusterIP"].as_str().and_then(|i| i.parse().ok()) else {
            continue;
        };
        let local_only = svc["spec"]["externalTrafficPolicy"] == "Local";
        let own: Vec<&Value> = slices
            .iter()
            .filter(|s| {
                s["metadata"]["namespace"].as_str().unwrap_or("default") == ns
                    && s["metadata"]["labels"]["kubernetes.io/service-name"] == name
            })
            .collect();
        for port in svc["spec"]["ports"].as_array().into_iter().flatten() {
            let port_name = port["name"].as_str().unwrap_or_default();
            let protocol = port["protocol"].as_str().unwrap_or("TCP").to_ascii_lowercase();
            let mut endpoints = Vec::new();
            for slice in &own {
                let slice_port = slice["ports"].as_array().into_iter().flatten().find(|p| {
                    p["name"].as_str().unwrap_or_default() == port_name
                        && p["protocol"].as_str().unwrap_or("TCP").eq_ignore_ascii_case(&protocol)
                });
                let Some(target) = slice_port.and_then(|p| p["port"].as_u64()) else { continue };
                for ep in slice["endpoints"].as_array().into_iter().flatten() {
                    if ep["conditions"]["ready"] == false {
                        continue;
                    }
                    for ip in ep["addresses"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|a| a.as_str()?.parse().ok())
                    {
                        let node = ep["nodeName"].as_str().unwrap_or_default().to_owned();
                        endpoints.push(Endpoint { ip, port: target as u16, node });
                    }
                }
            }
            endpoints.sort_by_key(|e| (e.ip, e.port));
            out.push(ServicePort {
                name: format!("{ns}/{name}:{port_name}"),
                protocol,
                cluster_ip,
                port: port["port"].as_u64().unwrap_or(0) as u16,
                node_port: port["nodePort"].as_u64().map(|p| p as u16),
                local_only,
                endpoints,
            });
        }
    }
    out.sort_by(|a, b| (&a.name, &a.protocol).cmp(&(&b.name, &b.protocol)));
    out
}

/// kube-proxy's chain names: a prefix and 16 characters of a hash of what the chain is for.
fn chain(prefix: &str, what: &str) -> String {
    // FNV-1a, 64 bits: stable across runs and processes.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in what.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{prefix}-{hash:016X}")
}

/// Appends one endpoint-picking chain: each endpoint with probability 1/(remaining).
fn pick(rules: &mut String, from: &str, seps: &[String]) {
    for (i, sep) in seps.iter().enumerate() {
        let left = seps.len() - i;
        if left > 1 {
            let p = 1.0 / left as f64;
            let _ = writeln!(rules, "-A {from} -m statistic --mode random --probability {p:.11} -j {sep}");
        } else {
            let _ = writeln!(rules, "-A {from} -j {sep}");
        }
    }
}

/// The `nat` table kube-proxy writes on `node`, as `iptables-restore --noflush` input:
/// every kube-proxy chain declared (hence flushed) and filled; the jumps from the built-in
/// chains are in [`JUMPS`].
pub fn nat_rules(ports: &[ServicePort], node: &str) -> String {
    let mut chains = vec![
        "KUBE-SERVICES".to_owned(),
        "KUBE-NODEPORTS".into(),
        "KUBE-POSTROUTING".into(),
        "KUBE-MARK-MASQ".into(),
    ];
    let mut rules = String::new();
    rules += "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n";
    rules += "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n";
    rules += "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n";
    rules += "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n";
    let mut nodeports = String::new();
    for sp in ports {
        let id = format!("{}:{}", sp.name, sp.protocol);
        let (svc, proto) = (chain("KUBE-SVC", &id), &sp.protocol);
        let comment = format!("-m comment --comment \"{}\"", sp.name);
        if sp.endpoints.is_empty() {
            // kube-proxy rejects these in the filter table; without a DNAT nothing answers.
            continue;
        }
        chains.push(svc.clone());
        let _ = writeln!(
            rules,
            "-A KUBE-SERVICES -d {}/32 -p {proto} {comment} -m {proto} --dport {} -j {svc}",
            sp.cluster_ip, sp.port
        );
        let mut seps = Vec::new();
        let mut local = Vec::new();
        for ep in &sp.endpoints {
            let sep = chain("KUBE-SEP", &format!("{id}:{}:{}", ep.ip, ep.port));
            chains.push(sep.clone());
            let _ = writeln!(rules, "-A {sep} -s {}/32 {comment} -j KUBE-MARK-MASQ", ep.ip);
            let _ = writeln!(
                rules,
                "-A {sep} -p {proto} {comment} -m {proto} -j DNAT --to-destination {}:{}",
                ep.ip, ep.port
            );
            if ep.node == node {
                local.push(sep.clone());
            }
            seps.push(sep);
        }
        pick(&mut rules, &svc, &seps);
        let Some(node_port) = sp.node_port else { continue };
        let ext = chain("KUBE-EXT", &id);
        chains.push(ext.clone());
        let _ = writeln!(
            nodeports,
            "-A KUBE-NODEPORTS -p {proto} {comment} -m {proto} --dport {node_port} -j {ext}"
        );
        if sp.local_only {
            let svl = chain("KUBE-SVL", &id);
            chains.push(svl.clone());
            // The node's own traffic to a Local NodePort is treated as Cluster traffic.
            let _ = writeln!(
                rules,
                "-A {ext} -m comment --comment \"masquerade LOCAL traffic\" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ"
            );
            let _ = writeln!(
                rules,
                "-A {ext} -m comment --comment \"route LOCAL traffic to cluster endpoints\" -m addrtype --src-type LOCAL -j {svc}"
            );
            let _ = writeln!(rules, "-A {ext} -j {svl}");
            pick(&mut rules, &svl, &local);
        } else {
            let _ = writeln!(
                rules,
                "-A {ext} -m comment --comment \"masquerade traffic for {} external destinations\" -j KUBE-MARK-MASQ",
                sp.name
            );
            let _ = writeln!(rules, "-A {ext} -j {svc}");
        }
    }
    rules += &nodeports;
    rules += "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n";
    let mut out = String::from("*nat\n");
    for c in &chains {
        let _ = writeln!(out, ":{c} - [0:0]");
    }
    out += &rules;
    out += "COMMIT\n";
    out
}

/// The jumps from the built-in chains (`iptables -t nat` arguments), added once per node.
pub const JUMPS: [(&str, &str); 3] =
    [("PREROUTING", "KUBE-SERVICES"), ("OUTPUT", "KUBE-SERVICES"), ("POSTROUTING", "KUBE-POSTROUTING")];

/// The nodes kube-proxy runs on: name and network namespace.
pub type ProxiedNodes = Arc<Mutex<Vec<(String, PathBuf)>>>;

/// Writes `rules` into the node namespace at `netns` (chains no longer in them, listed in
/// `stale`, are deleted) and makes sure the built-in chains jump to kube-proxy's.
pub fn apply(netns: &Path, rules: &str, stale: &[String]) -> Result<(), String> {
    let mut input = rules.strip_suffix("COMMIT\n").unwrap_or(rules).to_owned();
    for chain in stale {
        input += &format!(":{chain} - [0:0]\n-X {chain}\n");
    }
    input += "COMMIT\n";
    let nsenter = |args: &[&str]| {
        let mut command = Command::new("nsenter");
        command.arg(format!("--net={}", netns.display())).arg("--").args(args);
        command
    };
    let mut restore = nsenter(&["iptables-restore", "--noflush", "-w"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run iptables-restore (scripts/install-test-tools): {e}"))?;
    restore.stdin.take().expect("piped").write_all(input.as_bytes()).map_err(|e| e.to_string())?;
    let done = restore.wait_with_output().map_err(|e| e.to_string())?;
    if !done.status.success() {
        return Err(format!(
            "iptables-restore in {}: {}\n{input}",
            netns.display(),
            String::from_utf8_lossy(&done.stderr)
        ));
    }
    for (from, to) in JUMPS {
        let rule =
            ["-t", "nat", "-C", from, "-m", "comment", "--comment", "kubernetes service portals", "-j", to];
        let present = nsenter(&["iptables", "-w"]).args(rule).output().map_err(|e| e.to_string())?;
        if !present.status.success() {
            let mut insert = rule;
            insert[2] = "-I";
            let added = nsenter(&["iptables", "-w"]).args(insert).output().map_err(|e| e.to_string())?;
            if !added.status.success() {
                return Err(format!("iptables -t nat -I {from}: {}", String::from_utf8_lossy(&added.stderr)));
            }
        }
    }
    Ok(())
}

/// The chains declared in `rules`.
fn declared(rules: &str) -> BTreeSet<String> {
    rules.lines().filter_map(|l| Some(l.strip_prefix(':')?.split(' ').next()?.to_owned())).collect()
}

/// kube-proxy on every node of `nodes`: every 200 ms, when the Services, EndpointSlices or
/// nodes changed, each node's rules are rewritten.
pub fn spawn(standin: KubeStandin, nodes: ProxiedNodes) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut written: BTreeMap<String, String> = BTreeMap::new();
        loop {
            let ports = service_ports(&standin.list(SERVICES), &standin.list(ENDPOINTSLICES));
            let now: Vec<(String, PathBuf)> = nodes.lock().expect("kube-proxy nodes").clone();
            for (node, netns) in now {
                let rules = nat_rules(&ports, &node);
                if written.get(&node) == Some(&rules) {
                    continue;
                }
                let stale: Vec<String> = written
                    .get(&node)
                    .map(|old| declared(old).difference(&declared(&rules)).cloned().collect())
                    .unwrap_or_default();
                let result = tokio::task::spawn_blocking({
                    let rules = rules.clone();
                    move || apply(&netns, &rules, &stale)
                })
                .await
                .expect("kube-proxy apply");
                match result {
                    Ok(()) => {
                        written.insert(node, rules);
                    }
                    Err(e) => eprintln!("kube-proxy stand-in on {node}: {e}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(name: &str, ip: &str, ports: Value, local: bool) -> Value {
        json!({"metadata": {"namespace": "default", "name": name},
            "spec": {"clusterIP": ip, "ports": ports, "externalTrafficPolicy": if local {"Local"} else {"Cluster"}}})
    }

    fn slice(service: &str, port: u16, proto: &str, eps: &[(&str, &str, bool)]) -> Value {
        let endpoints: Vec<Value> = eps
            .iter()
            .map(|(ip, node, ready)| json!({"addresses": [ip], "nodeName": node, "conditions": {"ready": ready}}))
            .collect();
        json!({"metadata": {"namespace": "default", "name": format!("{service}-x"), "labels": {"kubernetes.io/service-name": service}},
            "ports": [{"name": "p", "port": port, "protocol": proto}], "endpoints": endpoints})
    }

    #[test]
    fn services_and_slices_become_kube_proxy_chains() {
        let services = [
            service(
                "web",
                "10.100.0.10",
                json!([{"name": "p", "port": 80, "protocol": "TCP", "nodePort": 30080}]),
                false,
            ),
            service(
                "loc",
                "10.100.0.11",
                json!([{"name": "p", "port": 80, "protocol": "TCP", "nodePort": 30081}]),
                true,
            ),
            service("dns", "10.100.0.53", json!([{"name": "p", "port": 53, "protocol": "UDP"}]), false),
            service("none", "10.100.0.12", json!([{"name": "p", "port": 80, "protocol": "TCP"}]), false),
            json!({"metadata": {"name": "headless"}, "spec": {"clusterIP": "None", "ports": []}}),
        ];
        let slices = [
            slice(
                "web",
                8080,
                "TCP",
                &[("10.0.0.5", "n1", true), ("10.0.0.6", "n2", true), ("10.0.0.7", "n2", false)],
            ),
            slice("loc", 8080, "TCP", &[("10.0.0.5", "n1", true), ("10.0.0.6", "n2", true)]),
            slice("dns", 5353, "UDP", &[("10.0.0.8", "n2", true)]),
        ];
        let ports = service_ports(&services, &slices);
        let names: Vec<(&str, usize)> = ports.iter().map(|p| (p.name.as_str(), p.endpoints.len())).collect();
        assert_eq!(
            names,
            [("default/dns:p", 1), ("default/loc:p", 2), ("default/none:p", 0), ("default/web:p", 2)],
            "not-ready endpoints and headless Services are left out"
        );

        let rules = nat_rules(&ports, "n1");
        let lines: Vec<&str> = rules.lines().collect();
        let has = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
        assert_eq!(lines.first(), Some(&"*nat"));
        assert_eq!(lines.last(), Some(&"COMMIT"));
        // ClusterIP matches, one per Service port with endpoints.
        assert_eq!(has("-A KUBE-SERVICES -d "), 3, "{rules}");
        assert_eq!(has("-d 10.100.0.12/32"), 0, "no endpoints: no DNAT");
        assert_eq!(has("-d 10.100.0.53/32 -p udp"), 1);
        // Two endpoints: the first with probability 1/2, the last unconditionally.
        let web = chain("KUBE-SVC", "default/web:p:tcp");
        assert_eq!(
            has(&format!("-A {web} -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-")),
            1,
            "{rules}"
        );
        assert_eq!(lines.iter().filter(|l| l.starts_with(&format!("-A {web} -j KUBE-SEP-"))).count(), 1);
        // Hairpin: an endpoint reaching itself is masqueraded.
        assert_eq!(has("-s 10.0.0.5/32 -m comment --comment \"default/web:p\" -j KUBE-MARK-MASQ"), 1);
        assert_eq!(has("-j DNAT --to-destination 10.0.0.8:5353"), 1);
        // NodePorts: Cluster masquerades and uses all; Local uses only n1's endpoint.
        let ext_web = chain("KUBE-EXT", "default/web:p:tcp");
        assert_eq!(has(&format!("--dport 30080 -j {ext_web}")), 1);
        assert!(rules.contains(&format!("-A {ext_web} -m comment --comment \"masquerade traffic for default/web:p external destinations\" -j KUBE-MARK-MASQ\n-A {ext_web} -j {web}")), "{rules}");
        let svl = chain("KUBE-SVL", "default/loc:p:tcp");
        let svl_rules: Vec<&&str> = lines.iter().filter(|l| l.starts_with(&format!("-A {svl} "))).collect();
        assert_eq!(svl_rules.len(), 1, "one local endpoint on n1: {rules}");
        let svl_of = |node: &str| -> Vec<String> {
            nat_rules(&ports, node)
                .lines()
                .filter(|l| l.starts_with(&format!("-A {svl} ")))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(svl_of("n2").len(), 1, "one local endpoint on n2 too");
        assert_ne!(svl_of("n2"), svl_of("n1"), "each node its own endpoint");
        assert!(svl_of("n3").is_empty(), "no local endpoint on n3: nothing to DNAT to");
        // NodePorts come last in KUBE-SERVICES, for local destinations only.
        let last_services = lines.iter().rposition(|l| l.starts_with("-A KUBE-SERVICES")).unwrap();
        assert!(lines[last_services].ends_with("-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"));
        // Every chain used is declared.
        for jumped in lines.iter().filter_map(|l| l.split(" -j ").nth(1)).filter(|t| t.starts_with("KUBE-")) {
            assert!(lines.contains(&format!(":{jumped} - [0:0]").as_str()), "{jumped} is declared");
        }
        assert!(rules.contains("-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN"));
    }
}
