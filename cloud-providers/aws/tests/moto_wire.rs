//! The AWS provider on the wire: the real aws-sdk-ec2 against moto's EC2
//! server, through the test bed's proxy, which paginates, enforces the
//! limits moto does not, and injects faults.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eni_ipam_api::{EniId, InstanceId, SubnetId, VpcId};
use eni_ipam_cloud::{
    Api, CallGuard, CloudProfile, CloudProvider, CreateEni, EniQuery, EniState, ErrorClass, InstanceState,
    RetryPolicy, list_all_enis, tag,
};
use eni_ipam_cloud_aws::{AwsConfig, AwsConnectError, AwsProvider};
use eni_ipam_ec2_testbed::{Console, Ec2Proxy, Faults, Moto};

struct Bed {
    _moto: Moto,
    proxy: Ec2Proxy,
    console: Console,
    vpc: String,
    subnets: Vec<String>,
}

async fn bed(faults: Faults) -> Bed {
    let moto = Moto::start();
    let proxy = Ec2Proxy::start(&moto.url, faults, 7).await;
    let console = Console::new(&moto.url);
    let vpc = console.create_vpc("10.0.0.0/16").await;
    let mut subnets = Vec::new();
    for (i, zone) in ["us-east-1a", "us-east-1b", "us-east-1c"].iter().enumerate() {
        subnets.push(console.create_subnet(&vpc, &format!("10.0.{}.0/20", i * 16), zone).await);
    }
    Bed { _moto: moto, proxy, console, vpc, subnets }
}

fn guard() -> Arc<CallGuard> {
    let retry = RetryPolicy::new(Duration::from_millis(20), Duration::from_millis(500), 8, 3);
    Arc::new(CallGuard::for_profile(CloudProfile::aws(), 1.0, retry))
}

impl Bed {
    async fn provider(&self) -> AwsProvider {
        let mut config = AwsConfig::for_region("us-east-1");
        config.endpoint = Some(self.proxy.url.clone());
        config.static_credentials = Some(("testing".into(), "testing".into()));
        AwsProvider::connect(config, guard(), &VpcId::from(self.vpc.as_str()))
            .await
            .expect("connects to moto")
    }

    fn create(&self, subnet: usize, ips: u32, token: &str) -> CreateEni {
        CreateEni {
            subnet: SubnetId::from(self.subnets[subnet].as_str()),
            security_groups: vec![],
            secondary_ips: ips,
            tags: BTreeMap::from([
                (tag::CLUSTER.to_owned(), "wire-test".to_owned()),
                (tag::NODE.to_owned(), "node-1".to_owned()),
                (tag::CREATED_BY.to_owned(), tag::CREATOR.to_owned()),
            ]),
            client_token: token.into(),
        }
    }
}

#[tokio::test]
async fn full_and_per_instance_resync_paginate_over_2000_enis_in_3_subnets() {
    let b = bed(Faults::default()).await;
    let mut instances = Vec::new();
    for subnet in &b.subnets {
        instances.extend(b.console.run_instances("m5.large", subnet, 700).await);
    }
    assert_eq!(instances.len(), 2100);
    let p = b.provider().await;

    let before = b.proxy.counts().get("DescribeNetworkInterfaces").copied().unwrap_or_default();
    let vpc = VpcId::from(b.vpc.as_str());
    let mut pages = 0;
    let mut token = None;
    let mut seen = BTreeSet::new();
    loop {
        let page = p.list_enis(&EniQuery::Vpc(vpc.clone()), 500, token).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= 500);
        for eni in page.items {
            assert!(seen.insert(eni.id.clone()), "{} listed twice", eni.id);
            assert_eq!(eni.state, EniState::InUse);
            assert_eq!(eni.device_index, Some(0));
        }
        match page.next_token {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 2100, "every ENI of the VPC, once");
    assert_eq!(pages, 5, "ceil(2100 / 500) pages");
    let after = b.proxy.counts()["DescribeNetworkInterfaces"];
    assert_eq!(after.forwarded - before.forwarded, 5, "one call per page, no list per subnet");

    // The helper follows tokens at the largest page EC2 allows.
    let (all, calls) = list_all_enis(&p, &EniQuery::Vpc(vpc)).await.unwrap();
    assert_eq!((all.len(), calls), (2100, 3));

    // Per instance: 200 instance ids per call (EC2's filter limit).
    let ids: Vec<InstanceId> = instances[..200].iter().map(|i| InstanceId::from(i.as_str())).collect();
    let (some, _) = list_all_enis(&p, &EniQuery::Instances(ids.clone())).await.unwrap();
    assert_eq!(some.len(), 200);
    assert!(some.iter().all(|e| e.instance.as_ref().is_some_and(|i| ids.contains(i))));
}

#[tokio::test]
async fn eni_lifecycle_round_trip_with_tags_and_client_token() {
    let b = bed(Faults::default()).await;
    let instance = b.console.run_instances("m5.large", &b.subnets[0], 1).await.remove(0);
    let p = b.provider().await;

    let eni = p.create_eni(&b.create(0, 3, "tok-lifecycle")).await.unwrap();
    assert_eq!(eni.secondary_ips.len(), 3);
    assert_eq!(eni.tags.get(tag::CLUSTER).map(String::as_str), Some("wire-test"));
    let again = p.create_eni(&b.create(0, 3, "tok-lifecycle")).await.unwrap();
    assert_eq!(again.id, eni.id, "the same client token returns the same ENI");
    let ours = b.console.enis(&b.vpc).await.into_iter().filter(|e| e.tagged).count();
    assert_eq!(ours, 1, "no second ENI was created");
    assert_eq!(
        b.proxy.counts()["CreateNetworkInterface"].idempotent_replays,
        1,
        "the proxy, not moto, kept the promise"
    );

    let inst = InstanceId::from(instance.as_str());
    p.attach_eni(&eni.id, &inst, 1).await.unwrap();
    let listed = list_all_enis(&p, &EniQuery::Instances(vec![inst.clone()])).await.unwrap().0;
    let attached = listed.iter().find(|e| e.id == eni.id).expect("attached ENI listed for its instance");
    assert_eq!((attached.device_index, attached.state), (Some(1), EniState::InUse));
    assert_eq!(b.proxy.counts()["ModifyNetworkInterfaceAttribute"].forwarded, 1, "DeleteOnTermination set");

    let before: BTreeSet<_> =
        listed.iter().find(|e| e.id == eni.id).unwrap().secondary_ips.iter().copied().collect();
    let answered: BTreeSet<_> = p.assign_ips(&eni.id, 2).await.unwrap().into_iter().collect();
    let listed = list_all_enis(&p, &EniQuery::Instances(vec![inst.clone()])).await.unwrap().0;
    let added: Vec<_> = listed
        .iter()
        .find(|e| e.id == eni.id)
        .unwrap()
        .secondary_ips
        .iter()
        .filter(|ip| !before.contains(ip))
        .copied()
        .collect();
    assert_eq!(added.len(), 2);
    // As EC2 does: the answer names the addresses this call assigned, nothing else (the
    // operator trusts it to know which IPs on an ENI it did not create are its own).
    assert_eq!(answered, added.iter().copied().collect::<BTreeSet<_>>());
    p.unassign_ips(&eni.id, &added[..1]).await.unwrap();
    let now = list_all_enis(&p, &EniQuery::Instances(vec![inst.clone()])).await.unwrap().0;
    let now = now.iter().find(|e| e.id == eni.id).unwrap();
    assert_eq!(now.secondary_ips.len(), 4);
    assert!(!now.secondary_ips.contains(&added[0]) && now.secondary_ips.contains(&added[1]));

    p.detach_eni(&eni.id).await.unwrap();
    p.delete_eni(&eni.id).await.unwrap();
    p.delete_eni(&eni.id).await.expect("deleting what is gone is done");
    assert!(b.console.enis(&b.vpc).await.iter().all(|e| e.id != eni.id.as_str()));
}

#[tokio::test]
async fn limits_moto_lacks_are_enforced_by_the_proxy_and_classified() {
    let b = bed(Faults::default()).await;
    let instance =
        InstanceId::from(b.console.run_instances("m5.large", &b.subnets[0], 1).await.remove(0).as_str());
    let p = b.provider().await;
    // m5.large: 3 ENIs x 10 IPv4.
    let mut enis: Vec<EniId> = Vec::new();
    for (i, token) in ["a", "b", "c"].iter().enumerate() {
        let eni = p.create_eni(&b.create(0, 1, token)).await.unwrap();
        let attached = p.attach_eni(&eni.id, &instance, i as u32 + 1).await;
        if i < 2 {
            attached.unwrap();
        } else {
            let err = attached.unwrap_err();
            assert_eq!((err.class, err.code.as_str()), (ErrorClass::Quota, "AttachmentLimitExceeded"));
        }
        enis.push(eni.id);
    }
    let err = p.assign_ips(&enis[0], 9).await.unwrap_err();
    assert_eq!((err.class, err.code.as_str()), (ErrorClass::Quota, "PrivateIpAddressLimitExceeded"));
    p.assign_ips(&enis[0], 8).await.expect("1 primary + 1 + 8 = 10 fits");
    let (listed, _) = list_all_enis(&p, &EniQuery::Instances(vec![instance.clone()])).await.unwrap();
    let full = listed.iter().find(|e| e.id == enis[0]).unwrap();
    assert_eq!(full.secondary_ips.len(), 9);
    let refusals = b.proxy.limit_refusals();
    assert_eq!(refusals.get("AttachmentLimitExceeded"), Some(&1));
    assert_eq!(refusals.get("PrivateIpAddressLimitExceeded"), Some(&1));
}

#[tokio::test]
async fn throttling_500s_and_resets_are_absorbed_by_the_one_retry_policy() {
    let faults = Faults { internal_error: 0.2, reset: 0.1, ..Faults::default() };
    let b = bed(Faults::default()).await;
    b.console.run_instances("m5.large", &b.subnets[0], 30).await;
    let p = b.provider().await;
    b.proxy.set_faults(faults);
    for _ in 0..10 {
        let (all, _) = list_all_enis(&p, &EniQuery::Vpc(VpcId::from(b.vpc.as_str()))).await.unwrap();
        assert_eq!(all.len(), 30);
    }
    let c = b.proxy.counts()["DescribeNetworkInterfaces"];
    assert!(c.internal_errors > 0 && c.resets > 0, "{c:?}");
    b.proxy.set_faults(Faults { throttle_mutating: 1.0, ..Faults::default() });
    let err = p.create_eni(&b.create(1, 1, "never")).await.unwrap_err();
    assert_eq!((err.class, err.code.as_str()), (ErrorClass::Throttled, "RequestLimitExceeded"));
    assert_eq!(b.proxy.counts()["CreateNetworkInterface"].throttled, 8, "bounded: the policy's 8 attempts");
}

#[tokio::test]
async fn bad_credentials_and_unreachable_endpoints_fail_at_once_with_the_endpoint_named() {
    let b = bed(Faults { expect_access_key: Some("AKIDGOOD".into()), ..Faults::default() }).await;
    let mut config = AwsConfig::for_region("us-east-1");
    config.endpoint = Some(b.proxy.url.clone());
    config.static_credentials = Some(("AKIDBAD".into(), "x".into()));
    let vpc = VpcId::from(b.vpc.as_str());
    let err = AwsProvider::connect(config.clone(), guard(), &vpc).await.unwrap_err();
    assert!(matches!(err, AwsConnectError::Credentials { .. }), "{err}");
    assert!(err.to_string().contains(&b.proxy.url) && err.to_string().contains("AuthFailure"), "{err}");
    assert_eq!(b.proxy.counts()["DescribeSubnets"].received, 1, "no retry on an auth error");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    config.endpoint = Some(format!("http://{closed}"));
    let started = Instant::now();
    let err = AwsProvider::connect(config.clone(), guard(), &vpc).await.unwrap_err();
    assert!(matches!(err, AwsConnectError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains(&closed.to_string()), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "one attempt, not a retry storm");

    config.region = "mars-1".into();
    let err = AwsProvider::connect(config, guard(), &vpc).await.unwrap_err();
    assert!(err.to_string().contains("mars-1") && err.to_string().contains("--aws-region"), "{err}");
    let _ = Api::ALL;
}

#[tokio::test]
async fn instance_states_say_running_stopped_terminated_and_gone_for_an_unknown_id() {
    let b = bed(Faults::default()).await;
    let launched = b.console.run_instances("m5.large", &b.subnets[0], 3).await;
    b.console.stop(&launched[1]).await;
    b.console.terminate(&launched[2]).await;
    let p = b.provider().await;
    let mut ask: Vec<InstanceId> = launched.iter().map(|i| InstanceId::from(i.as_str())).collect();
    ask.push(InstanceId::from("i-0123456789abcdef0"));
    let states = p.instance_states(&ask).await.unwrap();
    // moto answers as EC2 does: the filter leaves an unknown id out (asking by
    // InstanceIds would refuse the whole call with InvalidInstanceID.NotFound).
    assert_eq!(states.len(), 4, "every id asked is answered");
    assert_eq!(states[&ask[0]], InstanceState::Running);
    assert_eq!(states[&ask[1]], InstanceState::Stopped);
    assert_eq!(states[&ask[2]], InstanceState::Terminated);
    assert_eq!(states[&ask[3]], InstanceState::Gone);
    assert_eq!(b.proxy.counts()["DescribeInstances"].forwarded, 1, "four ids in one call");
}
