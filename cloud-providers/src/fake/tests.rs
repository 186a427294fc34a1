//! The fake cloud behaves like the real ones where eni-ipam depends on it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use eni_ipam_api::{InstanceId, SubnetId, VpcId, Zone};

use super::{FakeCloud, FakeProvider, Faults};
use crate::{
    Api, CallGuard, CloudProfile, CloudProvider, CreateEni, EniQuery, EniState, ErrorClass, RetryPolicy,
    list_all_enis,
};

struct Bed {
    cloud: Arc<FakeCloud>,
    subnet: SubnetId,
}

fn bed(profile: CloudProfile) -> Bed {
    let cloud = Arc::new(FakeCloud::new(profile, VpcId::from("vpc-1"), 1));
    let subnet =
        cloud.console().add_subnet(Zone::from("z1"), Ipv4Addr::new(10, 0, 0, 0), 24, BTreeMap::new());
    Bed { cloud, subnet }
}

impl Bed {
    fn provider(&self, margin: f64) -> FakeProvider {
        let guard =
            CallGuard::for_profile(self.cloud.profile().clone(), margin, RetryPolicy::cloud_default(1));
        FakeProvider::new(self.cloud.clone(), Arc::new(guard))
    }

    fn launch(&self, ty: &str) -> InstanceId {
        self.cloud.console().launch_instance(ty, &self.subnet).unwrap()
    }

    fn create(&self, token: &str, ips: u32) -> CreateEni {
        CreateEni {
            subnet: self.subnet.clone(),
            security_groups: vec![],
            secondary_ips: ips,
            tags: BTreeMap::new(),
            client_token: token.into(),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn vpc_listing_paginates_to_the_end_without_duplicates() {
    let b = bed(CloudProfile::alibaba());
    for _ in 0..20 {
        b.launch("ecs.g7.large");
    }
    let p = b.provider(1.0);
    let page = p.list_enis(&EniQuery::Vpc(VpcId::from("vpc-1")), 7, None).await.unwrap();
    assert_eq!(page.items.len(), 7);
    assert!(page.next_token.is_some());
    let (all, calls) = list_all_enis(&p, &EniQuery::Vpc(VpcId::from("vpc-1"))).await.unwrap();
    assert_eq!(all.len(), 20);
    assert_eq!(calls, 1, "500 per page");
    let mut ids: Vec<_> = all.iter().map(|e| e.id.clone()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 20);
}

#[tokio::test(start_paused = true)]
async fn instance_filter_is_limited_like_the_cloud() {
    let b = bed(CloudProfile::alibaba());
    let (i1, i2) = (b.launch("ecs.g7.large"), b.launch("ecs.g7.large"));
    let p = b.provider(1.0);
    let err = p.list_enis(&EniQuery::Instances(vec![i1.clone(), i2]), 10, None).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::InvalidRequest);
    let page = p.list_enis(&EniQuery::Instances(vec![i1.clone()]), 10, None).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].instance.as_ref(), Some(&i1));
}

#[tokio::test(start_paused = true)]
async fn over_quota_calls_are_throttled_and_do_nothing() {
    let b = bed(CloudProfile::aws());
    let i = b.launch("m5.large");
    let eni = b.cloud.console().all_enis().next().unwrap().id.clone();
    // Straight to the cloud, no client limiter: 200 burst on the mutating bucket.
    let mut throttled = 0;
    for _ in 0..205 {
        if let Err(e) = b.cloud.serve(Api::CreateTags, "x", |s| s.tag_eni(&eni, &BTreeMap::new())) {
            assert_eq!(e.class, ErrorClass::Throttled);
            assert_eq!(e.code, "RequestLimitExceeded");
            throttled += 1;
        }
    }
    assert_eq!(throttled, 5);
    assert_eq!(b.cloud.counts()[&Api::CreateTags].throttled, 5);
    let _ = i;
}

#[tokio::test(start_paused = true)]
async fn create_with_the_same_token_returns_the_same_eni() {
    let b = bed(CloudProfile::aws());
    let p = b.provider(1.0);
    let a = p.create_eni(&b.create("tok-1", 3)).await.unwrap();
    let again = p.create_eni(&b.create("tok-1", 3)).await.unwrap();
    assert_eq!(a.id, again.id);
    assert_eq!(b.cloud.console().all_enis().count(), 1);
}

#[tokio::test(start_paused = true)]
async fn attach_is_asynchronous_and_enforces_instance_limits() {
    let b = bed(CloudProfile::aws());
    let i = b.launch("m5.large"); // 3 ENIs x 10 IPs
    let p = b.provider(1.0);
    let e1 = p.create_eni(&b.create("a", 2)).await.unwrap();
    p.attach_eni(&e1.id, &i, 1).await.unwrap();
    let state = |id| b.cloud.console().all_enis().find(|e| &e.id == id).unwrap().state;
    assert_eq!(state(&e1.id), EniState::Attaching);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(state(&e1.id), EniState::InUse);

    let e2 = p.create_eni(&b.create("b", 0)).await.unwrap();
    let taken = p.attach_eni(&e2.id, &i, 1).await.unwrap_err();
    assert_eq!(taken.class, ErrorClass::InvalidState);
    p.attach_eni(&e2.id, &i, 2).await.unwrap();
    let e3 = p.create_eni(&b.create("c", 0)).await.unwrap();
    let full = p.attach_eni(&e3.id, &i, 3).await.unwrap_err();
    assert_eq!((full.class, full.code.as_str()), (ErrorClass::Quota, "AttachmentLimitExceeded"));

    let over = p.assign_ips(&e1.id, 8).await.unwrap_err();
    assert_eq!(over.class, ErrorClass::Quota, "1 primary + 2 + 8 > 10");
    assert_eq!(p.assign_ips(&e1.id, 7).await.unwrap().len(), 7);
}

#[tokio::test(start_paused = true)]
async fn alibaba_assign_is_capped_at_ten_per_call() {
    let b = bed(CloudProfile::alibaba());
    let i = b.launch("ecs.g7.4xlarge");
    let primary = b.cloud.console().all_enis().find(|e| e.instance.as_ref() == Some(&i)).unwrap().id.clone();
    let p = b.provider(1.0);
    let err = p.assign_ips(&primary, 11).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::InvalidRequest);
    assert_eq!(p.assign_ips(&primary, 10).await.unwrap().len(), 10);
}

#[tokio::test(start_paused = true)]
async fn subnets_are_finite_and_freed_addresses_come_back() {
    let b = bed(CloudProfile::aws());
    let free = |b: &Bed| b.cloud.console().list_subnets(&VpcId::from("vpc-1"))[0].free_ips;
    assert_eq!(free(&b), 256 - 5);
    let p = b.provider(1.0);
    let eni = p.create_eni(&b.create("a", 200)).await.unwrap();
    let err = p.create_eni(&b.create("b", 100)).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::SubnetFull);
    p.delete_eni(&eni.id).await.unwrap();
    assert_eq!(free(&b), 251);
    p.delete_eni(&eni.id).await.expect("deleting what is gone is done");
}

#[tokio::test(start_paused = true)]
async fn each_cloud_keeps_its_reserved_addresses_and_gateway() {
    // A /28 filled one ENI (one address) at a time: what is handed out is exactly what the
    // cloud does not reserve, so the VPC router's address never lands on an ENI.
    let table: [(CloudProfile, std::ops::RangeInclusive<u8>, Ipv4Addr); 2] = [
        (CloudProfile::aws(), 4..=14, Ipv4Addr::new(10, 0, 0, 1)),
        (CloudProfile::alibaba(), 1..=12, Ipv4Addr::new(10, 0, 0, 13)),
    ];
    for (profile, usable, gateway) in table {
        let kind = profile.kind;
        let cloud = Arc::new(FakeCloud::new(profile, VpcId::from("vpc-1"), 1));
        let subnet =
            cloud.console().add_subnet(Zone::from("z1"), Ipv4Addr::new(10, 0, 0, 0), 28, BTreeMap::new());
        let listed = cloud.console().list_subnets(&VpcId::from("vpc-1"))[0].clone();
        assert_eq!(listed.free_ips, u32::from(usable.end() - usable.start() + 1), "{kind}");
        assert_eq!(crate::subnet_gateway(kind, &listed.cidr), Some(gateway), "{kind}");
        let b = Bed { cloud, subnet };
        let p = b.provider(1.0);
        let mut handed_out = Vec::new();
        for n in 0..20 {
            match p.create_eni(&b.create(&format!("t{n}"), 0)).await {
                Ok(eni) => handed_out.push(eni.primary_ip.octets()[3]),
                Err(e) => {
                    assert_eq!(e.class, ErrorClass::SubnetFull, "{kind}: {e}");
                    break;
                }
            }
        }
        handed_out.sort();
        assert_eq!(handed_out, usable.collect::<Vec<_>>(), "{kind}");
        assert!(!handed_out.contains(&gateway.octets()[3]), "{kind}");
    }
}

#[tokio::test(start_paused = true)]
async fn injected_faults_are_retried_for_reads() {
    let b = bed(CloudProfile::aws());
    b.launch("m5.large");
    b.cloud.set_faults(Faults { transient_rate: 0.5, ..Faults::default() });
    let p = b.provider(1.0);
    for _ in 0..20 {
        p.list_subnets(&VpcId::from("vpc-1")).await.expect("8 attempts beat a 50% fault rate");
    }
    let seen = b.cloud.counts()[&Api::DescribeSubnets];
    assert!(seen.faulted > 0 && seen.calls > 20, "{seen:?}");
}

#[tokio::test(start_paused = true)]
async fn instance_states_say_running_terminated_and_gone_in_batches() {
    let b = bed(CloudProfile::alibaba());
    let p = b.provider(0.95);
    let mut ids: Vec<InstanceId> = (0..150).map(|_| b.launch("ecs.g7.large")).collect();
    b.cloud.console().terminate_instance(&ids[1]);
    ids.push(InstanceId::from("i-never-launched"));
    let states = p.instance_states(&ids).await.unwrap();
    assert_eq!(states.len(), ids.len(), "every id asked is answered");
    assert_eq!(states[&ids[0]], crate::InstanceState::Running);
    assert_eq!(states[&ids[1]], crate::InstanceState::Terminated);
    assert_eq!(states[&InstanceId::from("i-never-launched")], crate::InstanceState::Gone);
    assert_eq!(b.cloud.counts()[&Api::DescribeInstances].calls, 2, "151 ids in calls of 100");
}
