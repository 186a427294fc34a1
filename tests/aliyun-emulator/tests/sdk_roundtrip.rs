//! Proof the emulator speaks the real protocol: Alibaba's official Python
//! SDKs drive it through the whole ENI lifecycle, V3 and V1 signatures, and
//! a request signed with the wrong secret is refused.

mod common;

use std::process::Command;

use serde_json::Value;

#[tokio::test]
async fn the_official_python_sdk_runs_the_eni_lifecycle_and_a_wrong_secret_is_refused() {
    let python = common::tools_python();
    let emulator =
        common::Emulator::start(&common::seed("ecs.g7.large", 1, 0), &["--attach-delay-ms", "300"]);
    let dump = emulator.dump().await;
    let instance = dump["seeded"]["instances"][0].as_str().expect("a seeded instance").to_owned();
    let seeded = instance.clone();
    let vswitch = dump["seeded"]["vswitches"]["pods"].as_str().expect("the seeded vSwitch").to_owned();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk_roundtrip.py");
    let addr = emulator.addr.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python).arg(script).args([&addr, &seeded, &vswitch]).output().expect("running python")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "sdk_roundtrip.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let steps: std::collections::BTreeMap<String, Value> = stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .map(|v| (v["step"].as_str().unwrap().to_owned(), v))
        .collect();
    assert_eq!(steps["describe_instance_types"]["types"], serde_json::json!([["ecs.g7.large", 3, 6]]));
    let paged = &steps["describe_instance_types_paged"];
    let known: Vec<String> = eni_ipam_cloud::CloudProfile::alibaba().instance_types.into_keys().collect();
    assert_eq!(paged["types"], serde_json::json!(known), "every type once, across the SDK's pages");
    assert_eq!(paged["pages"], known.len().div_ceil(2), "MaxResults=2: two types a page");
    assert_eq!(
        steps["describe_instances"]["instances"],
        serde_json::json!([[instance, "Running"]]),
        "the seeded instance is Running; an id ECS does not know is left out, not refused"
    );
    assert_eq!(steps["describe_instances"]["total"], 1);
    assert_eq!(steps["create"]["status"], "Available");
    assert_eq!(steps["create"]["ips"].as_array().unwrap().len(), 3, "primary + 2 secondary");
    assert_eq!(
        steps["create_same_token"]["eni"], steps["create"]["eni"],
        "ClientToken makes create idempotent"
    );
    assert_eq!(steps["attach"]["device_index"], 1);
    assert!(steps["attach"]["statuses"].as_array().unwrap().contains(&Value::from("InUse")));
    let assigned = steps["assign"]["ips"].as_array().unwrap().clone();
    assert_eq!(assigned.len(), 3);
    let after_v1 = steps["describe_v1"]["ips"].as_array().unwrap();
    assert!(assigned.iter().all(|ip| after_v1.contains(ip)), "V1-signed describe sees the assigned IPs");
    let after_unassign = steps["unassign"]["ips"].as_array().unwrap();
    assert!(assigned.iter().all(|ip| !after_unassign.contains(ip)));
    assert_eq!(after_unassign.len(), 2);
    assert_eq!(steps["detach"]["status"], "Available");
    assert_eq!(steps["delete"]["found"], false);
    assert_eq!(steps["wrong_secret"]["code"], "SignatureDoesNotMatch");
    assert_eq!(steps["wrong_secret"]["status"], 400);
    assert_eq!(steps["missing_parameter"]["code"], "MissingParameter");
}
