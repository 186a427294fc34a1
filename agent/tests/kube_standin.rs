//! The agent binary against the stand-in kube-apiserver (`tests/kube-standin`):
//! ENINode registration from either cloud's providerID, the pool taken from
//! the operator's `spec.pool`, the release handshake answered, a burst of
//! 200 allocations written to `status.used` in a few coalesced applies, and the
//! uninstall handshake: a termination cleans the node only while its ENINode
//! requests it (the agent answers the request, and takes its answer back); the service
//! ranges listed from ServiceCIDRs.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{AGENT, KillOnDrop, wait_for};
use eni_ipam_agent::cni::agent_client::AgentClient;
use eni_ipam_kube_standin::{ENINODES, KubeStandin, NODES, SERVICECIDRS};
use serde_json::{Value, json};

fn status_patches(standin: &KubeStandin) -> usize {
    standin
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path == "/apis/eni-ipam.io/v1alpha1/eninodes/n1/status")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_registers_from_either_cloud_and_reports_coalesced_usage() {
    let cases = [
        (
            "aws:///us-east-1a/i-0abc123",
            json!({"node.kubernetes.io/instance-type": "m5.large"}),
            "us-east-1a",
        ),
        (
            "cn-hangzhou.i-bp1xyz",
            json!({"node.kubernetes.io/instance-type": "ecs.g7.large", "topology.kubernetes.io/zone": "cn-hangzhou-h"}),
            "cn-hangzhou-h",
        ),
    ];
    for (provider_id, labels, zone) in cases {
        let (url, standin) = KubeStandin::start().await;
        let node = standin
            .create(
                NODES,
                json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": labels},
                       "spec": {"providerID": provider_id}}),
            )
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let spawn_agent = || {
            KillOnDrop(
                Command::new(AGENT)
                    .args(["--node-name", "n1", "--kube-url", &url, "--metrics-addr", "127.0.0.1:0"])
                    .args(["--ipam-node-update-rate", "1s", "--eninode-resync", "200ms"])
                    .args(["--subnet", "subnet-1=10.1.0.0/16", "--datapath", "none", "--node-routing=false"])
                    .arg("--socket")
                    .arg(&socket)
                    .arg("--state-file")
                    .arg(dir.path().join("state.json"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        };
        let agent = spawn_agent();
        let eninode = wait_for("the ENINode", || standin.get(ENINODES, "", "n1")).await;
        assert_eq!(
            eninode["spec"]["instanceId"],
            provider_id.rsplit(['/', '.']).next().unwrap(),
            "{provider_id}"
        );
        assert_eq!(eninode["spec"]["zone"], zone);
        assert_eq!(eninode["metadata"]["ownerReferences"][0]["uid"], node["metadata"]["uid"]);
        assert_eq!(eninode["metadata"]["ownerReferences"][0]["kind"], "Node");

        // The operator's part: a pool and two release marks.
        let pool: serde_json::Map<String, Value> = (0..250u32)
            .map(|i| {
                (format!("10.1.{}.{}", i / 200, i % 200 + 10), json!({"eni": "eni-1", "subnet": "subnet-1"}))
            })
            .collect();
        standin.merge_patch(ENINODES, "", "n1", json!({"spec": {"pool": pool}}), false).unwrap();
        standin
            .merge_patch(
                ENINODES,
                "",
                "n1",
                json!({"status": {"release": {"10.1.0.10": "marked", "10.1.0.11": "marked"}}}),
                true,
            )
            .unwrap();
        let client = AgentClient::new(&socket, Duration::from_secs(5));
        let keep = client.clone();
        let probe = client.clone();
        wait_for("the pool on the agent", move || {
            let health: Value =
                serde_json::from_slice(&probe.call("GET", "/v1/healthz", None).ok()?.body).ok()?;
            (health["ipam"]["available"] == 250).then_some(())
        })
        .await;
        wait_for("the release answers", || {
            let e = standin.get(ENINODES, "", "n1")?;
            (e["status"]["release"] == json!({"10.1.0.10": "ready", "10.1.0.11": "ready"})).then_some(())
        })
        .await;

        let before = status_patches(&standin);
        let started = Instant::now();
        let burst = tokio::task::spawn_blocking(move || {
            std::thread::scope(|scope| {
                for t in 0..8 {
                    let client = client.clone();
                    scope.spawn(move || {
                        for i in (t..200).step_by(8) {
                            let body = json!({"containerId": format!("c{i}"), "ifName": "eth0",
                                              "podNamespace": "default", "podName": format!("p{i}")});
                            let answer =
                                client.call("POST", "/v1/ipam", Some(body.to_string().as_bytes())).unwrap();
                            let ip: Value = serde_json::from_slice(&answer.body).unwrap();
                            assert_ne!(ip["ip"], "10.1.0.10", "an IP marked for release was handed out");
                        }
                    });
                }
            });
        });
        burst.await.unwrap();
        let written = wait_for("200 IPs in status.used", || {
            let e = standin.get(ENINODES, "", "n1")?;
            (e["status"]["used"].as_object().map(|u| u.len()) == Some(200)).then_some(e)
        })
        .await;
        let elapsed = started.elapsed();
        let patches = status_patches(&standin) - before;
        // At most one write per started second of the burst, plus the one that flushes it.
        let bound = elapsed.as_secs() as usize + 2;
        println!("{provider_id}: {patches} status applies for 200 allocations in {elapsed:?}");
        assert!(
            (1..=bound).contains(&patches),
            "{patches} status writes for 200 allocations in {elapsed:?} (bound {bound})"
        );
        assert_eq!(written["status"]["inUse"], 200);
        assert_eq!(
            written["status"]["used"]["10.1.0.12"].as_str().map(|s| s.starts_with("default/p")),
            Some(true)
        );
        assert!(
            standin.managers(ENINODES, "", "n1").contains_key("eni-ipam-agent"),
            "applied as eni-ipam-agent"
        );

        // A restart while the apiserver is down still serves from the cached pool and the state.
        let c7 = written["status"]["used"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(_, owner)| *owner == "default/p7")
            .unwrap()
            .0
            .clone();
        drop(agent);
        standin.shutdown().await;
        let served_before_restart = standin.request_count();
        let _agent = spawn_agent();
        let probe = keep.clone();
        let health = wait_for("the restarted agent", move || {
            serde_json::from_slice::<Value>(&probe.call("GET", "/v1/healthz", None).ok()?.body).ok()
        })
        .await;
        assert_eq!(health["ipam"]["available"], 250, "{health}");
        assert_eq!(health["ipam"]["allocated"], 200);
        let again = tokio::task::spawn_blocking(move || {
            let body =
                json!({"containerId": "c7", "ifName": "eth0", "podNamespace": "default", "podName": "p7"});
            let answer = keep.call("POST", "/v1/ipam", Some(body.to_string().as_bytes())).unwrap();
            keep.call("DELETE", "/v1/ipam/c8?ifName=eth0", None).unwrap();
            serde_json::from_slice::<Value>(&answer.body).unwrap()
        })
        .await
        .unwrap();
        assert_eq!(
            again["ip"].as_str(),
            Some(c7.as_str()),
            "retried ADD answers the same IP without the apiserver"
        );
        assert_eq!(again["gateway"], "10.1.0.1");
        assert_eq!(standin.request_count(), served_before_restart, "the apiserver was really down");
    }
}

/// SIGTERM, as kubelet stops the container; the exit status.
fn terminate(mut agent: KillOnDrop) -> std::process::ExitStatus {
    // SAFETY: kill has no memory preconditions; the pid is our own child, not yet reaped.
    assert_eq!(unsafe { libc::kill(agent.0.id() as libc::pid_t, libc::SIGTERM) }, 0);
    agent.0.wait().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_cleans_its_node_on_termination_only_while_its_eninode_requests_it() {
    use eni_ipam_api::uninstall_mark::{UNINSTALL_ARMED, UNINSTALL_REQUESTED};
    let (url, standin) = KubeStandin::start().await;
    let node = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "n1", "labels": {"node.kubernetes.io/instance-type": "m5.large"}},
        "spec": {"providerID": "aws:///us-east-1a/i-0abc123"}});
    standin.create(NODES, node).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (conf_dir, bin_dir) = (dir.path().join("net.d"), dir.path().join("bin"));
    std::fs::create_dir_all(&conf_dir).unwrap();
    std::fs::create_dir_all(&bin_dir).unwrap();
    let conflist = conf_dir.join("05-eni-ipam.conflist");
    let install = || {
        let ours = json!({"cniVersion": "1.0.0", "name": "eni-ipam", "plugins": [{"type": "eni-ipam-cni"}]});
        std::fs::write(&conflist, ours.to_string()).unwrap();
        std::fs::write(bin_dir.join("eni-ipam-cni"), b"plugin").unwrap();
    };
    install();
    let state = dir.path().join("state").join("state.json");
    std::fs::create_dir_all(state.parent().unwrap()).unwrap();
    std::fs::write(&state, r#"{"version": 1, "allocations": []}"#).unwrap();
    let spawn_agent = || {
        KillOnDrop(
            Command::new(AGENT)
                .args(["--node-name", "n1", "--kube-url", &url, "--metrics-addr", "127.0.0.1:0"])
                .args(["--eninode-resync", "100ms", "--datapath", "none", "--node-routing=false"])
                .arg(format!("--socket={}", dir.path().join("agent.sock").display()))
                .arg(format!("--state-file={}", state.display()))
                .arg(format!("--cni-conf-dir={}", conf_dir.display()))
                .arg(format!("--cni-bin-dir={}", bin_dir.display()))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("agent.log")).unwrap())
                .spawn()
                .unwrap(),
        )
    };
    let annotation = |key: &str| -> Option<String> {
        standin.get(ENINODES, "", "n1")?["metadata"]["annotations"][key].as_str().map(str::to_owned)
    };
    let log = || std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();

    // No request: a termination (restart, upgrade) keeps everything.
    let agent = spawn_agent();
    wait_for("the ENINode", || standin.get(ENINODES, "", "n1")).await;
    assert!(terminate(agent).success(), "{}", log());
    assert!(conflist.exists() && bin_dir.join("eni-ipam-cni").exists() && state.exists(), "{}", log());

    // Requested, then withdrawn: the agent answers, then takes its answer back, and keeps everything.
    let agent = spawn_agent();
    let request = json!({"metadata": {"annotations": {UNINSTALL_REQUESTED: "test"}}});
    standin.merge_patch(ENINODES, "", "n1", request.clone(), false).unwrap();
    wait_for("the agent's answer", || annotation(UNINSTALL_ARMED)).await;
    let withdraw = json!({"metadata": {"annotations": {UNINSTALL_REQUESTED: null}}});
    standin.merge_patch(ENINODES, "", "n1", withdraw, false).unwrap();
    wait_for("the answer taken back", || annotation(UNINSTALL_ARMED).is_none().then_some(())).await;
    assert!(terminate(agent).success(), "{}", log());
    assert!(conflist.exists() && state.exists(), "a withdrawn request cleans nothing: {}", log());

    // Requested and answered: the termination removes what the agent and install-cni put there.
    let agent = spawn_agent();
    standin.merge_patch(ENINODES, "", "n1", request, false).unwrap();
    wait_for("the agent's answer", || annotation(UNINSTALL_ARMED)).await;
    let status = terminate(agent);
    assert!(status.success(), "{status}: {}", log());
    assert!(!conflist.exists() && !bin_dir.join("eni-ipam-cni").exists(), "{}", log());
    assert!(!state.exists() && !state.parent().unwrap().exists(), "state and its folder gone: {}", log());
    assert!(!dir.path().join("agent.sock").exists());
    assert!(log().contains("uninstall requested on the ENINode"), "{}", log());
}

/// The service ranges come from the ServiceCIDR API as the stand-in serves it (IPv4 ones;
/// an IPv6 range is not the datapath's), and an empty list is "none known".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_ranges_are_listed_from_servicecidrs() {
    use eni_ipam_agent::service_ranges::{self, ApiRanges};
    let (url, standin) = KubeStandin::start().await;
    let client = eni_ipam_agent::kube_side::client(Some(&url)).await.unwrap();
    assert_eq!(service_ranges::list(Some(&client)).await, ApiRanges::Listed(vec![]));
    assert!(service_ranges::service_ranges(&[], &ApiRanges::Listed(vec![])).is_err());
    standin
        .create(
            SERVICECIDRS,
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
                   "metadata": {"name": "kubernetes"}, "spec": {"cidrs": ["10.100.0.0/16", "fd00:10:96::/108"]}}),
        )
        .unwrap();
    let listed = service_ranges::list(Some(&client)).await;
    assert_eq!(listed, ApiRanges::Listed(service_ranges::ipv4_ranges(["10.100.0.0/16"])));
    assert_eq!(service_ranges::list(None).await, ApiRanges::NoCluster);
}
