//! The wire models read every success and error body of the project's
//! fixtures (`tests/fixtures/alibaba`, bodies read back by the official SDK's
//! models) and keep the fields the provider uses.

use serde_json::Value;

use super::wire;

fn fixture(name: &str) -> Value {
    let path = format!("{}/../tests/fixtures/alibaba/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path} ({e})"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn example(action: &str) -> Value {
    let doc = fixture("responses.json");
    let entry = doc["responses"].as_array().unwrap().iter().find(|r| r["action"] == action).cloned();
    entry.unwrap_or_else(|| panic!("responses.json has no {action}"))["body"].clone()
}

#[test]
fn enis_parse_with_attachment_tags_and_secondary_ips() {
    let body: wire::DescribeNetworkInterfaces =
        serde_json::from_value(example("DescribeNetworkInterfaces")).unwrap();
    assert!(!body.next_token.is_empty());
    let enis: Vec<_> = body
        .network_interface_sets
        .network_interface_set
        .iter()
        .map(|w| wire::eni_from_wire(w).unwrap())
        .collect();
    let secondary = &enis[1];
    assert_eq!(secondary.device_index, Some(1));
    assert_eq!(secondary.secondary_ips.len(), 3);
    assert_eq!(secondary.primary_ip.to_string(), "10.20.0.40");
    assert_eq!(secondary.tags["eni-ipam/node"], "node-7");
    assert_eq!(enis[0].device_index, Some(0));
}

#[test]
fn create_assign_types_and_vswitches_parse() {
    let created: wire::CreateNetworkInterface =
        serde_json::from_value(example("CreateNetworkInterface")).unwrap();
    let eni = wire::eni_from_wire(&created.eni).unwrap();
    assert_eq!((eni.state, eni.secondary_ips.len(), eni.instance), (crate::EniState::Detached, 3, None));
    let assigned: wire::AssignPrivateIpAddresses =
        serde_json::from_value(example("AssignPrivateIpAddresses")).unwrap();
    assert_eq!(assigned.assigned_private_ip_addresses_set.private_ip_set.private_ip_address.len(), 2);
    let types: wire::DescribeInstanceTypes =
        serde_json::from_value(example("DescribeInstanceTypes")).unwrap();
    let g7 = &types.instance_types.instance_type[0];
    assert_eq!(
        (g7.instance_type_id.as_str(), g7.eni_quantity, g7.eni_private_ip_address_quantity),
        ("ecs.g7.large", 3, 6)
    );
    let vsw: wire::DescribeVSwitches = serde_json::from_value(example("DescribeVSwitches")).unwrap();
    let subnets: Vec<_> = vsw.v_switches.v_switch.iter().map(wire::subnet_from_wire).collect();
    assert_eq!((subnets[0].free_ips, subnets[1].free_ips), (4050, 0));
    assert_eq!(subnets[0].tags["eni-ipam/pool"], "pods");
}

#[test]
fn the_emulator_side_renders_what_the_client_side_reads() {
    let body: wire::DescribeNetworkInterfaces =
        serde_json::from_value(example("DescribeNetworkInterfaces")).unwrap();
    for w in &body.network_interface_sets.network_interface_set {
        let eni = wire::eni_from_wire(w).unwrap();
        let back = wire::eni_to_wire(&eni, &w.security_group_ids.security_group_id);
        assert_eq!(wire::eni_from_wire(&back).unwrap(), eni);
    }
}

#[test]
fn the_error_body_parses() {
    let doc = fixture("errors.json");
    let body: wire::ErrorBody = serde_json::from_value(doc["error_body"]["example"].clone()).unwrap();
    assert_eq!(body.code, "InvalidEniId.NotFound");
    assert!(!body.request_id.is_empty() && !body.host_id.is_empty());
}

/// Each error answer the SDK was given: the status the emulator would send for
/// its code, and the class the operator reacts with.
#[test]
fn error_answers_have_the_status_and_class_the_provider_expects() {
    use crate::error::ErrorClass;
    let doc = fixture("errors.json");
    let answers = doc["answers"].as_array().expect("errors.json has answers");
    assert!(answers.len() >= 4, "errors.json lost answers");
    for answer in answers {
        let code = answer["body"]["Code"].as_str().unwrap();
        let status = answer["http_status"].as_u64().unwrap() as u16;
        assert_eq!(super::codes::http_status(code), status, "{code}");
        let body: wire::ErrorBody = serde_json::from_value(answer["body"].clone()).unwrap();
        assert_eq!(body.code, code);
        let expected = match answer["name"].as_str().unwrap() {
            "not-found" => ErrorClass::NotFound,
            "throttled" | "throttled-retry-after" => ErrorClass::Throttled,
            "unavailable" => ErrorClass::Transient,
            other => panic!("errors.json answer {other} has no expectation here"),
        };
        assert_eq!(super::codes::classify(code, status), expected, "{code}");
    }
}
