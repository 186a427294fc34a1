//! The Alibaba provider against the emulator, over real HTTP with real
//! signatures: bulk and per-instance resync, the ENI lifecycle, throttling.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use eni_ipam_api::{InstanceId, SubnetId, VpcId};
use eni_ipam_cloud::alibaba::{AlibabaProvider, CredentialSource, Credentials, SignatureVersion};
use eni_ipam_cloud::{
    Api, CloudProvider, CreateEni, EniQuery, EniState, ErrorClass, InstanceState, RetryPolicy, list_all_enis,
};

fn provider_with(
    emulator: &common::Emulator,
    credentials: CredentialSource,
    signature: SignatureVersion,
) -> AlibabaProvider {
    let retry = RetryPolicy::new(Duration::from_millis(50), Duration::from_secs(1), 30, 7);
    common::alibaba_provider(emulator, credentials, signature, retry)
}

fn provider(emulator: &common::Emulator) -> AlibabaProvider {
    provider_with(
        emulator,
        CredentialSource::Static(Credentials::access_key("testid", "testsecret")),
        SignatureVersion::V3,
    )
}

fn vpc() -> VpcId {
    VpcId::from("vpc-emulated")
}

async fn seeded(emulator: &common::Emulator) -> (Vec<InstanceId>, SubnetId) {
    let dump = emulator.dump().await;
    let instances = dump["seeded"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| InstanceId::from(i.as_str().unwrap()))
        .collect();
    (instances, SubnetId::from(dump["seeded"]["vswitches"]["pods"].as_str().unwrap()))
}

fn request(subnet: &SubnetId, token: &str, ips: u32) -> CreateEni {
    CreateEni {
        subnet: subnet.clone(),
        security_groups: vec!["sg-emulated".into()],
        secondary_ips: ips,
        tags: BTreeMap::from([("eni-ipam.io/cluster".into(), "test".into())]),
        client_token: token.into(),
    }
}

#[tokio::test]
async fn full_resync_reads_2000_enis_in_pages_of_500() {
    // 10 instances (10 primary ENIs) + 1990 detached ENIs = 2000.
    let emulator = common::Emulator::start(&common::seed("ecs.g7.large", 10, 1990), &["--no-quotas"]);
    let p = provider(&emulator);
    let (all, calls) = list_all_enis(&p, &EniQuery::Vpc(vpc())).await.unwrap();
    assert_eq!(all.len(), 2000);
    assert_eq!(calls, 4, "2000 ENIs at 500 per page");
    let ids: BTreeSet<_> = all.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids.len(), 2000, "no ENI twice");
    assert_eq!(all.iter().filter(|e| e.state == EniState::InUse).count(), 10);
    assert_eq!(emulator.dump().await["counts"]["DescribeNetworkInterfaces"]["calls"], 4);
}

#[tokio::test]
async fn per_instance_resync_sees_only_that_instance() {
    let emulator = common::Emulator::start(&common::seed("ecs.g7.large", 3, 5), &["--no-quotas"]);
    let p = provider(&emulator);
    let (instances, _) = seeded(&emulator).await;
    let page = p.list_enis(&EniQuery::Instances(vec![instances[1].clone()]), 500, None).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].instance.as_ref(), Some(&instances[1]));
    assert_eq!(page.items[0].device_index, Some(0));
    assert!(page.next_token.is_none());
    let two = p.list_enis(&EniQuery::Instances(instances[..2].to_vec()), 500, None).await.unwrap_err();
    assert_eq!(two.class, ErrorClass::InvalidRequest, "ECS filters on one instance per call");
}

#[tokio::test]
async fn instance_states_are_running_for_seeded_instances_and_gone_for_unknown_ids_in_calls_of_100() {
    let emulator = common::Emulator::start(&common::seed("ecs.g7.large", 3, 0), &["--no-quotas"]);
    let p = provider(&emulator);
    let (instances, _) = seeded(&emulator).await;
    let mut ask = instances.clone();
    ask.extend((0..120).map(|n| InstanceId::from(format!("i-released{n:05}").as_str())));
    let states = p.instance_states(&ask).await.unwrap();
    assert_eq!(states.len(), 123, "every id asked is answered");
    for id in &instances {
        assert_eq!(states[id], InstanceState::Running, "{id}");
    }
    assert_eq!(states.values().filter(|s| **s == InstanceState::Gone).count(), 120);
    assert_eq!(emulator.dump().await["counts"]["DescribeInstances"]["calls"], 2, "123 ids in calls of 100");
}

#[tokio::test]
async fn the_whole_eni_lifecycle() {
    let emulator =
        common::Emulator::start(&common::seed("ecs.g7.4xlarge", 1, 0), &["--attach-delay-ms", "200"]);
    let p = provider(&emulator);
    let (instances, subnet) = seeded(&emulator).await;
    let subnets = p.list_subnets(&vpc()).await.unwrap();
    assert_eq!(subnets.len(), 1);
    let free_before = subnets[0].free_ips;
    let limits = p.instance_limits(&["ecs.g7.4xlarge".into(), "no.such".into()]).await.unwrap();
    assert_eq!((limits.len(), limits[0].max_enis, limits[0].ipv4_per_eni), (1, 8, 30));

    let eni = p.create_eni(&request(&subnet, "lifecycle-1", 10)).await.unwrap();
    assert_eq!((eni.state, eni.secondary_ips.len()), (EniState::Detached, 10));
    assert_eq!(eni.tags["eni-ipam.io/cluster"], "test");
    let again = p.create_eni(&request(&subnet, "lifecycle-1", 10)).await.unwrap();
    assert_eq!(again.id, eni.id, "same ClientToken, same ENI");

    p.attach_eni(&eni.id, &instances[0], 1).await.unwrap();
    let attached = p.wait_in_use(&eni.id).await.unwrap();
    assert_eq!((attached.instance.as_ref(), attached.device_index), (Some(&instances[0]), Some(1)));

    let added = p.assign_ips(&eni.id, 12).await.unwrap();
    assert_eq!(added.len(), 12, "split into 10 + 2 calls");
    assert_eq!(p.guard().counts()[&Api::AssignPrivateIpAddresses].sent, 2);
    p.unassign_ips(&eni.id, &added).await.unwrap();
    // Already unassigned (InvalidIp.IpUnassigned) is the goal reached.
    p.unassign_ips(&eni.id, &added[..1]).await.unwrap();
    let now = p.describe_eni(&eni.id).await.unwrap().unwrap();
    assert_eq!(now.secondary_ips, eni.secondary_ips);

    p.detach_eni(&eni.id).await.unwrap();
    p.delete_eni(&eni.id).await.unwrap();
    p.delete_eni(&eni.id).await.unwrap();
    assert!(p.describe_eni(&eni.id).await.unwrap().is_none());
    assert_eq!(p.list_subnets(&vpc()).await.unwrap()[0].free_ips, free_before, "every address back");
}

#[tokio::test]
async fn attach_beyond_the_instance_limit_is_a_quota_error() {
    let emulator = common::Emulator::start(&common::seed("ecs.g7.large", 1, 0), &["--attach-delay-ms", "0"]);
    let p = provider(&emulator);
    let (instances, subnet) = seeded(&emulator).await;
    for n in 0..2 {
        let eni = p.create_eni(&request(&subnet, &format!("t{n}"), 0)).await.unwrap();
        p.attach_eni(&eni.id, &instances[0], n + 1).await.unwrap();
    }
    let third = p.create_eni(&request(&subnet, "t3", 0)).await.unwrap();
    let err = p.attach_eni(&third.id, &instances[0], 3).await.unwrap_err();
    assert_eq!((err.class, err.code.as_str()), (ErrorClass::Quota, "EniPerInstanceLimitExceeded"), "{err}");
}

#[tokio::test]
async fn throttling_converges_with_no_leak() {
    let emulator = common::Emulator::start(
        &common::seed("ecs.g7.4xlarge", 1, 0),
        &["--attach-delay-ms", "0", "--quota", "AssignPrivateIpAddresses=2@10"],
    );
    let p = Arc::new(provider(&emulator));
    let (instances, subnet) = seeded(&emulator).await;
    let eni = p.create_eni(&request(&subnet, "throttle", 0)).await.unwrap();
    p.attach_eni(&eni.id, &instances[0], 1).await.unwrap();
    p.wait_in_use(&eni.id).await.unwrap();
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let p = p.clone();
            let eni = eni.id.clone();
            tokio::spawn(async move { p.assign_ips(&eni, 1).await })
        })
        .collect();
    let mut got = BTreeSet::new();
    for call in calls {
        got.extend(call.await.unwrap().expect("every assign succeeds in the end"));
    }
    assert_eq!(got.len(), 20);
    let counts = p.guard().counts()[&Api::AssignPrivateIpAddresses];
    assert!(counts.throttled > 0, "the quota was hit: {counts:?}");
    assert_eq!(counts.failed, 0);
    let seen = p.describe_eni(&eni.id).await.unwrap().unwrap();
    assert_eq!(
        seen.secondary_ips.iter().copied().collect::<BTreeSet<_>>(),
        got,
        "the cloud holds exactly the IPs handed out"
    );
    let dump = emulator.dump().await;
    assert!(dump["counts"]["AssignPrivateIpAddresses"]["throttled"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn v1_signatures_and_ram_role_credentials_work_and_a_wrong_secret_is_auth() {
    let emulator =
        common::Emulator::start(&common::seed("ecs.g7.large", 1, 0), &["--ram-role", "eni-ipam-node"]);
    let v1 = provider_with(
        &emulator,
        CredentialSource::Static(Credentials::access_key("testid", "testsecret")),
        SignatureVersion::V1,
    );
    assert_eq!(v1.list_subnets(&vpc()).await.unwrap().len(), 1);
    let role = provider_with(
        &emulator,
        CredentialSource::RamRole { metadata_url: emulator.url(), role: None },
        SignatureVersion::V3,
    );
    assert_eq!(role.list_enis(&EniQuery::Vpc(vpc()), 100, None).await.unwrap().items.len(), 1);
    let wrong = provider_with(
        &emulator,
        CredentialSource::Static(Credentials::access_key("testid", "wrongsecret")),
        SignatureVersion::V3,
    );
    let err = wrong.list_subnets(&vpc()).await.unwrap_err();
    assert_eq!((err.class, err.code.as_str()), (ErrorClass::Auth, "SignatureDoesNotMatch"), "{err}");
    let unknown = provider_with(
        &emulator,
        CredentialSource::Static(Credentials::access_key("nobody", "x")),
        SignatureVersion::V1,
    );
    let err = unknown.list_subnets(&vpc()).await.unwrap_err();
    assert_eq!(err.code, "InvalidAccessKeyId.NotFound", "{err}");
}
