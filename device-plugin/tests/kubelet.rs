//! Acceptance: the plugin against a test kubelet and a fake agent, over real
//! unix sockets in a temp folder, with the production poll interval (500 ms).

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;

use eni_ipam_device_plugin::counting::count_slots;
use eni_ipam_device_plugin::metrics::Metrics;
use eni_ipam_device_plugin::proto::deviceplugin::{
    AllocateRequest, ContainerAllocateRequest, ContainerPreferredAllocationRequest, Empty,
    PreferredAllocationRequest,
};
use eni_ipam_device_plugin::proto::{DEVICE_PLUGIN_API_VERSION, KUBELET_SOCKET};
use eni_ipam_device_plugin::{PluginError, start};
use support::agent::{Answer, FakeAgent};
use support::kubelet::{
    PodResourcesState, TestKubelet, dial_plugin, healthy_ids, list_and_watch, wait_for_healthy,
};
use support::{WITHIN, config};
use tonic::Code;

fn start_plugin(config: eni_ipam_device_plugin::Config) -> eni_ipam_device_plugin::RunningPlugin {
    start(config, Arc::new(Metrics::new())).expect("the plugin starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_with_the_resource_and_version_and_advertises_the_agents_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let _agent = FakeAgent::start(&dir.path().join("agent.sock"), Answer::numbers(0, 10));
    // The plugin starts before kubelet, as after a node reboot.
    let plugin = start_plugin(config(dir.path(), 16));
    let mut kubelet = TestKubelet::start(dir.path());

    let registration = kubelet.next_registration(WITHIN).await;
    assert_eq!(registration.version, DEVICE_PLUGIN_API_VERSION);
    assert_eq!(registration.version, "v1beta1");
    assert_eq!(registration.resource_name, "eni-ipam.io/ip");
    assert_eq!(registration.endpoint, "eni-ipam.io_ip.sock");
    assert!(!registration.endpoint.contains('/'), "the endpoint is a file name in the folder");
    let options = registration.options.expect("options sent at registration");
    assert!(!options.pre_start_required);
    assert!(options.get_preferred_allocation_available);

    let mut client = dial_plugin(dir.path(), &registration).await;
    let asked = client.get_device_plugin_options(Empty {}).await.unwrap().into_inner();
    assert_eq!(asked, options);

    let mut stream = list_and_watch(&mut client).await;
    let expected = count_slots(16, 10, 0, None).healthy;
    assert_eq!(expected, 10);
    let (devices, _) = wait_for_healthy(&mut stream, expected as usize, WITHIN).await;
    let ids: Vec<&str> = devices.iter().map(|d| d.id.as_str()).collect();
    let stable: Vec<String> = (0..16).map(|slot| format!("ip-{slot}")).collect();
    assert_eq!(ids, stable, "every slot is listed, healthy or not, under a stable id");
    assert_eq!(healthy_ids(&devices), stable[..10]);
    assert_eq!(plugin.metrics().healthy_slots.get(), 10);
    // The plugin marks itself registered when kubelet's answer arrives, which
    // may be just after the test kubelet handed the request to the test.
    let deadline = std::time::Instant::now() + WITHIN;
    while !plugin.metrics().is_registered() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(plugin.metrics().is_registered(), "registered once kubelet answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capacity_change_reaches_list_and_watch_within_one_poll() {
    let dir = tempfile::tempdir().unwrap();
    let agent = FakeAgent::start(&dir.path().join("agent.sock"), Answer::numbers(0, 10));
    let mut kubelet = TestKubelet::start(dir.path());
    let _plugin = start_plugin(config(dir.path(), 32));
    let registration = kubelet.next_registration(WITHIN).await;
    let mut stream = list_and_watch(&mut dial_plugin(dir.path(), &registration).await).await;
    wait_for_healthy(&mut stream, 10, WITHIN).await;

    // Subnet ran short: capacity drops.
    agent.set(Answer::numbers(0, 4));
    let (_, down) = wait_for_healthy(&mut stream, 4, WITHIN).await;
    // An ENI was attached: capacity grows.
    agent.set(Answer::numbers(0, 25));
    let (_, up) = wait_for_healthy(&mut stream, 25, WITHIN).await;
    println!("capacity change -> ListAndWatch: down {down:?}, up {up:?} (poll interval 500 ms)");
    assert!(down < WITHIN && up < WITHIN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedulers_view_equals_the_ips_the_node_can_really_still_give() {
    let dir = tempfile::tempdir().unwrap();
    let pod_resources = PodResourcesState::default();
    let _pod_resources_server = pod_resources.serve(&dir.path().join("pod-resources.sock"));
    let capacity = 30;
    let agent = FakeAgent::start(&dir.path().join("agent.sock"), Answer::numbers(0, capacity));
    let mut kubelet = TestKubelet::start(dir.path());
    let mut config = config(dir.path(), 64);
    config.pod_resources_socket = Some(dir.path().join("pod-resources.sock"));
    let _plugin = start_plugin(config);
    let registration = kubelet.next_registration(WITHIN).await;
    let mut client = dial_plugin(dir.path(), &registration).await;
    let mut stream = list_and_watch(&mut client).await;
    let (devices, _) = wait_for_healthy(&mut stream, capacity as usize, WITHIN).await;

    // kubelet admits N pods that request eni-ipam.io/ip: it picks ids (asking
    // the plugin's preference, as kubelet does), allocates them, and the
    // pod-resources API reports them held.
    let with_request = 5u32;
    let available: Vec<String> = healthy_ids(&devices).into_iter().rev().collect();
    let mut held = BTreeSet::new();
    for pod in 0..with_request {
        let free: Vec<String> = available.iter().filter(|id| !held.contains(*id)).cloned().collect();
        let preferred = client
            .get_preferred_allocation(PreferredAllocationRequest {
                container_requests: vec![ContainerPreferredAllocationRequest {
                    available_device_i_ds: free,
                    must_include_device_i_ds: vec![],
                    allocation_size: 1,
                }],
            })
            .await
            .unwrap()
            .into_inner();
        let id = preferred.container_responses[0].device_i_ds[0].clone();
        client
            .allocate(AllocateRequest {
                container_requests: vec![ContainerAllocateRequest { devices_ids: vec![id.clone()] }],
            })
            .await
            .unwrap();
        pod_resources.add_pod(&format!("with-request-{pod}"), "eni-ipam.io/ip", vec![id.clone()]);
        held.insert(id);
    }
    // M pods admitted without the request (webhook skipped them) also got IPs;
    // another resource's devices in pod-resources must not be counted as ours.
    let without_request = 3u32;
    pod_resources.add_pod("gpu-pod", "nvidia.com/gpu", vec!["ip-9".into()]);
    let allocated = with_request + without_request;
    agent.set(Answer::numbers(allocated, capacity));

    let healthy = capacity - without_request;
    let (devices, _) = wait_for_healthy(&mut stream, healthy as usize, WITHIN).await;
    let scheduler_view = healthy - with_request; // allocatable minus requests
    let really_free = capacity - allocated;
    assert_eq!(scheduler_view, really_free);
    let healthy_now: BTreeSet<String> = healthy_ids(&devices).into_iter().collect();
    assert!(held.is_subset(&healthy_now), "slots held by pods stay healthy: {held:?} in {healthy_now:?}");
    // kubelet's own count of free healthy devices agrees with the scheduler.
    assert_eq!(healthy_now.difference(&held).count() as u32, really_free);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_again_when_kubelet_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let _agent = FakeAgent::start(&dir.path().join("agent.sock"), Answer::numbers(0, 6));
    let mut kubelet = TestKubelet::start(dir.path());
    let plugin = start_plugin(config(dir.path(), 8));
    let first = kubelet.next_registration(WITHIN).await;
    assert!(
        !kubelet.registers_within(std::time::Duration::from_millis(1200)).await,
        "no re-registration while nothing changes"
    );

    // Only kubelet's socket is recreated.
    kubelet.stop();
    let mut kubelet = TestKubelet::start(dir.path());
    let again = kubelet.next_registration(WITHIN).await;
    assert_eq!(again, first);

    // A real kubelet restart also deletes every plugin socket in the folder.
    kubelet.stop_and_wipe_folder();
    assert!(!plugin.socket_path().exists());
    let mut kubelet = TestKubelet::start(dir.path());
    let third = kubelet.next_registration(WITHIN).await;
    assert_eq!(third.resource_name, "eni-ipam.io/ip");
    assert!(plugin.socket_path().exists(), "the plugin serves its socket again");
    let mut stream = list_and_watch(&mut dial_plugin(dir.path(), &third).await).await;
    wait_for_healthy(&mut stream, 6, WITHIN).await;
    assert!(dir.path().join(KUBELET_SOCKET).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_down_makes_every_slot_unhealthy_until_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = FakeAgent::start(&dir.path().join("agent.sock"), Answer::numbers(2, 12));
    let mut kubelet = TestKubelet::start(dir.path());
    let plugin = start_plugin(config(dir.path(), 20));
    let registration = kubelet.next_registration(WITHIN).await;
    let mut stream = list_and_watch(&mut dial_plugin(dir.path(), &registration).await).await;
    wait_for_healthy(&mut stream, 12, WITHIN).await;

    agent.stop();
    let (devices, took) = wait_for_healthy(&mut stream, 0, WITHIN).await;
    println!("agent stopped -> all Unhealthy after {took:?}");
    assert_eq!(devices.len(), 20, "slots stay listed, only unhealthy");
    let polls = plugin.metrics().encode();
    assert!(polls.contains("agent_polls_total{result=\"unreachable\"}"), "{polls}");

    agent.restart();
    let (_, took) = wait_for_healthy(&mut stream, 12, WITHIN).await;
    println!("agent back -> healthy again after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restart_within_the_grace_keeps_the_slots_and_a_longer_outage_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = FakeAgent::start(&dir.path().join("agent.sock"), Answer::numbers(2, 12));
    let mut kubelet = TestKubelet::start(dir.path());
    let mut settings = config(dir.path(), 20);
    settings.agent_grace = std::time::Duration::from_secs(3);
    let plugin = start_plugin(settings);
    let registration = kubelet.next_registration(WITHIN).await;
    let mut stream = list_and_watch(&mut dial_plugin(dir.path(), &registration).await).await;
    wait_for_healthy(&mut stream, 12, WITHIN).await;

    // A restart: down for two polls, then back. No list with fewer healthy slots is sent.
    agent.stop();
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let polls = plugin.metrics().encode();
    assert!(
        polls.contains("agent_polls_total{result=\"unreachable\"}"),
        "the agent was polled down: {polls}"
    );
    agent.restart();
    let quiet = tokio::time::timeout(std::time::Duration::from_millis(1500), stream.message()).await;
    assert!(quiet.is_err(), "the slots stood through the restart, nothing was re-sent: {quiet:?}");

    // An outage past the grace: every slot goes Unhealthy.
    agent.stop();
    let (_, took) = wait_for_healthy(&mut stream, 0, WITHIN).await;
    println!("agent gone -> all Unhealthy after {took:?} (grace 3 s)");
    assert!(took >= std::time::Duration::from_millis(2500), "not before the grace is over: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_agent_answer_makes_every_slot_unhealthy_without_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let agent = FakeAgent::start(&dir.path().join("agent.sock"), Answer::numbers(0, 5));
    let mut kubelet = TestKubelet::start(dir.path());
    let plugin = start_plugin(config(dir.path(), 8));
    let registration = kubelet.next_registration(WITHIN).await;
    let mut client = dial_plugin(dir.path(), &registration).await;
    let mut stream = list_and_watch(&mut client).await;
    wait_for_healthy(&mut stream, 5, WITHIN).await;

    for garbage in
        [r#"{"ipam": {"allocated": "two", "available": 1, "capacity": 5, "status": ""}}"#, "not json", "{}"]
    {
        agent.set(Answer::Raw(garbage.into()));
        wait_for_healthy(&mut stream, 0, WITHIN).await;
        // Still serving.
        client.get_device_plugin_options(Empty {}).await.expect("the plugin still answers");
        agent.set(Answer::numbers(0, 5));
        wait_for_healthy(&mut stream, 5, WITHIN).await;
    }
    assert!(plugin.metrics().encode().contains("agent_polls_total{result=\"malformed\"} "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocate_rejects_ids_never_advertised_and_answers_known_ones_empty() {
    let dir = tempfile::tempdir().unwrap();
    let _agent = FakeAgent::start(&dir.path().join("agent.sock"), Answer::numbers(0, 4));
    let mut kubelet = TestKubelet::start(dir.path());
    let _plugin = start_plugin(config(dir.path(), 8));
    let registration = kubelet.next_registration(WITHIN).await;
    let mut client = dial_plugin(dir.path(), &registration).await;

    let status = client
        .allocate(AllocateRequest {
            container_requests: vec![
                ContainerAllocateRequest { devices_ids: vec!["ip-1".into(), "gpu-0".into()] },
                ContainerAllocateRequest { devices_ids: vec!["ip-8".into()] },
            ],
        })
        .await
        .expect_err("unknown ids are refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("gpu-0") && status.message().contains("ip-8"), "{}", status.message());
    assert!(!status.message().contains("ip-1,"), "only the unknown ids are named: {}", status.message());

    let answer = client
        .allocate(AllocateRequest {
            container_requests: vec![
                ContainerAllocateRequest { devices_ids: vec!["ip-0".into()] },
                ContainerAllocateRequest { devices_ids: vec!["ip-7".into()] },
            ],
        })
        .await
        .expect("known ids are allocated")
        .into_inner();
    assert_eq!(answer.container_responses.len(), 2, "one answer per container");
    assert!(
        answer
            .container_responses
            .iter()
            .all(|c| c.envs.is_empty() && c.mounts.is_empty() && c.devices.is_empty())
    );

    // Preference: healthy ids first (0..4 here), must-include kept.
    let mut stream = list_and_watch(&mut client).await;
    wait_for_healthy(&mut stream, 4, WITHIN).await;
    let preferred = client
        .get_preferred_allocation(PreferredAllocationRequest {
            container_requests: vec![ContainerPreferredAllocationRequest {
                available_device_i_ds: vec!["ip-7".into(), "ip-6".into(), "ip-3".into(), "ip-2".into()],
                must_include_device_i_ds: vec!["ip-6".into()],
                allocation_size: 2,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(preferred.container_responses[0].device_i_ds, ["ip-6", "ip-2"]);
}

#[tokio::test]
async fn a_missing_folder_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-folder");
    let error = start(config(&missing, 8), Arc::new(Metrics::new())).expect_err("no folder, no plugin");
    assert!(matches!(error, PluginError::FolderMissing { .. }));
    let text = error.to_string();
    assert!(text.contains(&missing.display().to_string()) && text.contains("--device-plugin-dir"), "{text}");
}

#[test]
fn the_binary_exits_with_one_line_naming_the_missing_folder() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-folder");
    let output = Command::new(env!("CARGO_BIN_EXE_eni-ipam-device-plugin"))
        .args(["--device-plugin-dir", missing.to_str().unwrap(), "--metrics-addr", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("{} does not exist", missing.display())), "{stderr}");
}
