//! What must hold between the cloud, the ENINodes and the pods, as pure
//! functions over one snapshot of each (the bed takes the snapshots).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use eni_ipam_cloud::Eni;
use serde_json::Value;

/// One snapshot of everything the audit reads.
pub struct Snapshot<'a> {
    /// Every ENI of the VPC.
    pub enis: &'a [Eni],
    /// ENINodes by name.
    pub eninodes: &'a BTreeMap<String, Value>,
    /// Node name -> instance id, for the Nodes that exist.
    pub nodes: &'a BTreeMap<String, String>,
    /// Running pods: key -> (node, IP).
    pub pods: &'a BTreeMap<String, (String, Ipv4Addr)>,
    /// Whether an ENI was made by this cluster's operator.
    pub ours: &'a dyn Fn(&Eni) -> bool,
    /// First device index whose addresses are pool addresses.
    pub first_pool_index: u32,
    /// Addresses another CNI assigned on the nodes' ENIs: never leaked, never ours to use.
    pub foreign: &'a BTreeSet<Ipv4Addr>,
}

/// What the audit found; every field is a count of violations but `pool_sizes`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Findings {
    /// Our ENIs not attached to an instance of a live Node.
    pub leaked_enis: Vec<String>,
    /// Addresses on a node's pool ENIs that are in no pool of that node.
    pub leaked_ips: Vec<Ipv4Addr>,
    /// Addresses in two pools, or held by two running pods.
    pub double_ips: Vec<Ipv4Addr>,
    /// Another CNI's addresses in a pool or held by a running pod.
    pub foreign_taken: Vec<Ipv4Addr>,
    /// Running pods whose IP is not on an ENI of their node in the cloud (released in use).
    pub released_in_use: Vec<String>,
    /// Pool addresses not on the node's instance in the cloud.
    pub pool_not_in_cloud: Vec<Ipv4Addr>,
    /// Nodes whose ENINode `status.inUse` differs from the pods running there.
    pub in_use_mismatch: Vec<String>,
    /// ENIs whose addresses in `status.enis` differ from the cloud's.
    pub status_mismatch: Vec<String>,
    /// The leading operator's IP gauges against the ENINodes (filled by the caller).
    pub counter_mismatch: Vec<String>,
    /// Pool size per node.
    pub pool_sizes: BTreeMap<String, usize>,
}

impl Findings {
    /// Whether nothing is wrong.
    pub fn clean(&self) -> bool {
        self.leaked_enis.is_empty()
            && self.leaked_ips.is_empty()
            && self.double_ips.is_empty()
            && self.foreign_taken.is_empty()
            && self.released_in_use.is_empty()
            && self.pool_not_in_cloud.is_empty()
            && self.in_use_mismatch.is_empty()
            && self.status_mismatch.is_empty()
            && self.counter_mismatch.is_empty()
    }
}

fn pool_of(eninode: &Value) -> BTreeSet<Ipv4Addr> {
    eninode["spec"]["pool"]
        .as_object()
        .map(|m| m.keys().filter_map(|k| k.parse().ok()).collect())
        .unwrap_or_default()
}

/// Audits one snapshot.
pub fn audit(s: &Snapshot<'_>) -> Findings {
    let mut f = Findings::default();
    let live_instances: BTreeMap<&str, &str> =
        s.nodes.iter().map(|(n, i)| (i.as_str(), n.as_str())).collect();
    // Cloud side: which addresses each node's instance has.
    let mut on_instance: BTreeMap<&str, BTreeSet<Ipv4Addr>> = BTreeMap::new();
    for eni in s.enis {
        let instance = eni.instance.as_ref().map(|i| i.as_str());
        let live = instance.and_then(|i| live_instances.get(i));
        if (s.ours)(eni) && live.is_none() {
            f.leaked_enis.push(eni.id.to_string());
        }
        if let Some(i) = instance.filter(|i| live_instances.contains_key(i)) {
            let set = on_instance.entry(i).or_default();
            set.extend(eni.secondary_ips.iter().copied());
        }
    }
    // Pools.
    let mut owner: BTreeMap<Ipv4Addr, &str> = BTreeMap::new();
    for (name, eninode) in s.eninodes {
        let pool = pool_of(eninode);
        f.pool_sizes.insert(name.clone(), pool.len());
        f.foreign_taken.extend(pool.intersection(s.foreign));
        for ip in &pool {
            if owner.insert(*ip, name).is_some() {
                f.double_ips.push(*ip);
            }
        }
        let Some(instance) = s.nodes.get(name) else { continue };
        let cloud = on_instance.get(instance.as_str()).cloned().unwrap_or_default();
        f.pool_not_in_cloud.extend(pool.difference(&cloud));
        // Pool ENIs: addresses there that no pool holds leaked.
        for eni in s.enis.iter().filter(|e| {
            e.instance.as_ref().map(|i| i.as_str()) == Some(instance.as_str())
                && e.device_index.unwrap_or(0) >= s.first_pool_index
        }) {
            f.leaked_ips
                .extend(eni.secondary_ips.iter().filter(|ip| !pool.contains(ip) && !s.foreign.contains(ip)));
        }
    }
    // Pods.
    let mut holder: BTreeMap<Ipv4Addr, &str> = BTreeMap::new();
    let mut running: BTreeMap<&str, u64> = BTreeMap::new();
    for (key, (node, ip)) in s.pods {
        *running.entry(node.as_str()).or_default() += 1;
        if s.foreign.contains(ip) {
            f.foreign_taken.push(*ip);
        }
        if holder.insert(*ip, key).is_some() {
            f.double_ips.push(*ip);
        }
        let on_node = s.nodes.get(node).and_then(|i| on_instance.get(i.as_str()));
        if !on_node.is_some_and(|ips| ips.contains(ip)) {
            f.released_in_use.push(format!("{key} ({ip} on {node})"));
        }
    }
    for (name, eninode) in s.eninodes {
        for (id, status) in eninode["status"]["enis"].as_object().into_iter().flatten() {
            let reported: BTreeSet<Ipv4Addr> = status["ips"]
                .as_array()
                .map(|ips| ips.iter().filter_map(|ip| ip.as_str()?.parse().ok()).collect())
                .unwrap_or_default();
            let cloud: Option<BTreeSet<Ipv4Addr>> = s
                .enis
                .iter()
                .find(|e| e.id.as_str() == id)
                .map(|e| e.secondary_ips.iter().copied().collect());
            if cloud.as_ref() != Some(&reported) {
                f.status_mismatch
                    .push(format!("{name}: {id} has {reported:?} in status, {cloud:?} in the cloud"));
            }
        }
        let in_use = eninode["status"]["inUse"].as_u64().unwrap_or(0);
        if in_use != running.get(name.as_str()).copied().unwrap_or(0) {
            f.in_use_mismatch
                .push(format!("{name}: status.inUse {in_use}, running {:?}", running.get(name.as_str())));
        }
    }
    f
}

/// The value of an unlabelled-but-for-`state` sample of `eni_ipam_ips` in a scrape.
pub fn ips_gauge(metrics: &str, state: &str) -> Option<u64> {
    let prefix = format!("eni_ipam_ips{{state=\"{state}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
}

/// The operator's `eni_ipam_ips` gauges against the pools and running pods.
pub fn counters(metrics: &str, findings: &Findings, running_pods: usize) -> Vec<String> {
    let pools: usize = findings.pool_sizes.values().sum();
    let mut wrong = Vec::new();
    for (state, want) in [("available", pools), ("used", running_pods)] {
        let got = ips_gauge(metrics, state);
        if got != Some(want as u64) {
            wrong.push(format!("eni_ipam_ips{{state=\"{state}\"}} is {got:?}, the cluster has {want}"));
        }
    }
    wrong
}

#[cfg(test)]
mod tests {
    use super::*;
    use eni_ipam_api::{EniId, InstanceId, SubnetId, VpcId, Zone};
    use eni_ipam_cloud::EniState;
    use serde_json::json;

    fn eni(id: &str, instance: Option<&str>, index: u32, ips: &[&str], ours: bool) -> Eni {
        let mut tags = BTreeMap::new();
        if ours {
            tags.insert("mine".to_owned(), "yes".to_owned());
        }
        Eni {
            id: EniId::from(id),
            subnet: SubnetId::from("s"),
            vpc: VpcId::from("v"),
            zone: Zone::from("z"),
            mac: "02:00:00:00:00:01".into(),
            instance: instance.map(InstanceId::from),
            device_index: instance.map(|_| index),
            state: EniState::InUse,
            primary_ip: "10.0.0.1".parse().unwrap(),
            secondary_ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
            tags,
        }
    }

    #[test]
    fn each_violation_is_found_and_a_clean_snapshot_is_clean() {
        let ours = |e: &Eni| e.tags.contains_key("mine");
        let foreign = BTreeSet::new();
        let nodes =
            BTreeMap::from([("n1".to_owned(), "i-1".to_owned()), ("n2".to_owned(), "i-2".to_owned())]);
        let eninode = |ips: &[&str], in_use: u64| {
            let pool: serde_json::Map<String, Value> =
                ips.iter().map(|i| (i.to_string(), json!({}))).collect();
            let eni =
                if ips.first().is_some_and(|ip| ip.starts_with("10.0.0.1")) { "eni-1" } else { "eni-2" };
            json!({"spec": {"pool": pool}, "status": {"inUse": in_use, "enis": {eni: {"ips": ips}}}})
        };
        let enis = vec![
            eni("eni-1", Some("i-1"), 1, &["10.0.0.10", "10.0.0.11"], true),
            eni("eni-2", Some("i-2"), 1, &["10.0.0.20"], true),
            eni("eni-p", Some("i-1"), 0, &["10.0.0.99"], false),
        ];
        let eninodes = BTreeMap::from([
            ("n1".to_owned(), eninode(&["10.0.0.10", "10.0.0.11"], 1)),
            ("n2".to_owned(), eninode(&["10.0.0.20"], 0)),
        ]);
        let pods =
            BTreeMap::from([("default/a".to_owned(), ("n1".to_owned(), "10.0.0.10".parse().unwrap()))]);
        let snap = |enis: &[Eni],
                    eninodes: &BTreeMap<String, Value>,
                    pods: &BTreeMap<String, (String, Ipv4Addr)>| {
            audit(&Snapshot {
                enis,
                eninodes,
                nodes: &nodes,
                pods,
                ours: &ours,
                first_pool_index: 1,
                foreign: &foreign,
            })
        };
        let clean = snap(&enis, &eninodes, &pods);
        assert!(clean.clean(), "{clean:?}");
        assert_eq!(clean.pool_sizes, BTreeMap::from([("n1".into(), 2), ("n2".into(), 1)]));

        let mut leaky = enis.clone();
        leaky.push(eni("eni-x", None, 0, &[], true));
        leaky.push(eni("eni-y", None, 0, &[], false));
        leaky[1].secondary_ips.push("10.0.0.21".parse().unwrap());
        let f = snap(&leaky, &eninodes, &pods);
        assert_eq!(f.leaked_enis, ["eni-x"], "only our detached ENI leaks");
        assert_eq!(f.leaked_ips, ["10.0.0.21".parse::<Ipv4Addr>().unwrap()]);

        let mut twice = eninodes.clone();
        twice.insert("n2".into(), eninode(&["10.0.0.20", "10.0.0.10"], 0));
        let f = snap(&enis, &twice, &pods);
        assert_eq!(f.double_ips, ["10.0.0.10".parse::<Ipv4Addr>().unwrap()]);
        assert_eq!(f.pool_not_in_cloud, ["10.0.0.10".parse::<Ipv4Addr>().unwrap()]);

        let mut released = enis.clone();
        released[0].secondary_ips.retain(|ip| ip.to_string() != "10.0.0.10");
        let f = snap(&released, &eninodes, &pods);
        assert_eq!(f.released_in_use.len(), 1, "{f:?}");

        let mut drifted = enis.clone();
        drifted[1].secondary_ips.clear();
        let f = snap(&drifted, &eninodes, &pods);
        assert_eq!(f.status_mismatch.len(), 1, "eni-2 lost its address in the cloud: {f:?}");

        let scrape = "# TYPE eni_ipam_ips gauge\neni_ipam_ips{state=\"available\"} 3\neni_ipam_ips{state=\"used\"} 1\n";
        assert!(counters(scrape, &clean, 1).is_empty());
        assert_eq!(counters(scrape, &clean, 2).len(), 1, "one pod more than the operator counts");
        assert_eq!(counters("", &clean, 1).len(), 2, "no gauges at all");

        let mut two_pods = pods.clone();
        two_pods.insert("default/b".into(), ("n1".into(), "10.0.0.10".parse().unwrap()));
        let f = snap(&enis, &eninodes, &two_pods);
        assert_eq!(f.double_ips.len(), 1);
        assert_eq!(f.in_use_mismatch, ["n1: status.inUse 1, running Some(2)"]);
    }

    #[test]
    fn another_cnis_addresses_are_not_leaked_but_must_not_be_pooled_or_held() {
        let ours = |e: &Eni| e.tags.contains_key("mine");
        let nodes = BTreeMap::from([("n1".to_owned(), "i-1".to_owned())]);
        // On EC2 the primary ENI is a pool ENI: another CNI's address sits next to ours there.
        let enis = vec![eni("eni-p", Some("i-1"), 0, &["10.0.0.10", "10.0.0.50"], false)];
        let eninode = |pool: &[&str]| {
            let pool: serde_json::Map<String, Value> =
                pool.iter().map(|i| (i.to_string(), json!({}))).collect();
            json!({"spec": {"pool": pool}, "status": {"inUse": 1, "enis": {"eni-p": {"ips": ["10.0.0.10", "10.0.0.50"]}}}})
        };
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let foreign = BTreeSet::from([ip("10.0.0.50")]);
        let none = BTreeSet::new();
        let snap =
            |eninodes: &BTreeMap<String, Value>, pods: &BTreeMap<String, (String, Ipv4Addr)>, foreign| {
                audit(&Snapshot {
                    enis: &enis,
                    eninodes,
                    nodes: &nodes,
                    pods,
                    ours: &ours,
                    first_pool_index: 0,
                    foreign,
                })
            };
        let ours_only = BTreeMap::from([("n1".to_owned(), eninode(&["10.0.0.10"]))]);
        let pod = |at: &str| BTreeMap::from([("default/a".to_owned(), ("n1".to_owned(), ip(at)))]);
        let unknown = snap(&ours_only, &pod("10.0.0.10"), &none);
        assert_eq!(unknown.leaked_ips, [ip("10.0.0.50")], "not known as foreign: leaked");
        let known = snap(&ours_only, &pod("10.0.0.10"), &foreign);
        assert!(known.clean(), "{known:?}");
        let pooled = BTreeMap::from([("n1".to_owned(), eninode(&["10.0.0.10", "10.0.0.50"]))]);
        let f = snap(&pooled, &pod("10.0.0.10"), &foreign);
        assert_eq!(f.foreign_taken, [ip("10.0.0.50")], "in a pool");
        let f = snap(&ours_only, &pod("10.0.0.50"), &foreign);
        assert_eq!(f.foreign_taken, [ip("10.0.0.50")], "held by a pod");
    }
}
