//! The cluster identity of `run`, from a real (stand-in) apiserver and the fake
//! cloud: the kube-system UID differs per cluster, and a VPC where an ENI carries
//! our id with another cluster's UID stops the operator with one line naming it.

use std::collections::BTreeMap;
use std::sync::Arc;

use eni_ipam_api::VpcId;
use eni_ipam_cloud::fake::{FakeCloud, FakeProvider};
use eni_ipam_cloud::{CallGuard, CloudProfile, CreateEni, RetryPolicy, tag};
use eni_ipam_kube_standin::KubeStandin;
use eni_ipam_operator::cluster_identity::{establish, kube_system_uid};

mod common;

#[tokio::test]
async fn the_uid_is_the_default_id_and_an_id_another_cluster_uses_refuses_the_start() {
    let (url_a, _a) = KubeStandin::start().await;
    let (url_b, _b) = KubeStandin::start().await;
    let uid_a = kube_system_uid(&common::client(&url_a)).await.unwrap();
    let uid_b = kube_system_uid(&common::client(&url_b)).await.unwrap();
    assert_ne!(uid_a, uid_b, "two clusters, two kube-system UIDs");

    let vpc = VpcId::from("vpc-id");
    let cloud = Arc::new(FakeCloud::new(common::fast_profile(), vpc.clone(), 5));
    let subnet = cloud.console().add_subnet("z1".into(), [10, 0, 0, 0].into(), 24, BTreeMap::new());
    let guard = Arc::new(CallGuard::for_profile(CloudProfile::aws(), 0.95, RetryPolicy::cloud_default(1)));
    let provider = FakeProvider::new(cloud.clone(), guard);

    let a = establish(None, &uid_a, &provider, &vpc).await.unwrap();
    assert_eq!((a.id.as_str(), a.uid.as_deref()), (uid_a.as_str(), Some(uid_a.as_str())));
    // Cluster B, told to use the id "prod", created an ENI.
    let theirs = cloud
        .console()
        .create_eni(&CreateEni {
            subnet,
            security_groups: vec![],
            secondary_ips: 1,
            tags: BTreeMap::from([
                (tag::CLUSTER.to_owned(), "prod".to_owned()),
                (tag::CLUSTER_UID.to_owned(), uid_b.clone()),
                (tag::CREATED_BY.to_owned(), tag::CREATOR.to_owned()),
            ]),
            client_token: "b".into(),
        })
        .unwrap();
    assert!(establish(None, &uid_a, &provider, &vpc).await.is_ok(), "A's own id is not B's");
    assert!(establish(Some("prod"), &uid_b, &provider, &vpc).await.is_ok(), "B restarts fine");
    let err = establish(Some("prod"), &uid_a, &provider, &vpc).await.unwrap_err().to_string();
    assert!(err.contains(theirs.id.as_str()) && err.contains("--cluster-id"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
