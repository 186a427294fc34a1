//! Who this cluster is in the cloud's tags. Every ENI the operator creates
//! carries `eni-ipam.io/cluster=<id>` and, in `run`, `eni-ipam.io/cluster-uid=<uid>`
//! (the kube-system namespace's UID). The id is that UID too unless the admin
//! chose one (`--cluster-id`), so two default installs in one VPC never share
//! it; the UID tells apart two clusters an admin gave the same id, and the
//! operator refuses to start on such a VPC rather than touch the other's ENIs.

use std::collections::BTreeMap;

use anyhow::Context;
use eni_ipam_api::VpcId;
use eni_ipam_cloud::{CloudProvider, Eni, EniQuery, list_all_enis, tag};
use k8s_openapi::api::core::v1::Namespace;

/// The identity written in, and recognized from, ENI tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterIdentity {
    /// The value of `eni-ipam.io/cluster`.
    pub id: String,
    /// The kube-system namespace's UID (`eni-ipam.io/cluster-uid`). `None` where
    /// no apiserver is asked (`simulate`): then only the id is compared.
    pub uid: Option<String>,
}

/// Whose an ENI is, by its tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Created by eni-ipam for this cluster.
    Ours,
    /// Not created by eni-ipam (no creator or no cluster tag): another CNI's, a human's.
    Untagged,
    /// Created by eni-ipam for another cluster: another id, or our id with another UID.
    OtherCluster,
}

impl ClusterIdentity {
    /// An identity from a chosen id, or the UID when none is chosen.
    pub fn new(chosen: Option<&str>, uid: Option<&str>) -> Option<Self> {
        let id = chosen.filter(|c| !c.is_empty()).or(uid)?;
        Some(Self { id: id.to_owned(), uid: uid.map(str::to_owned) })
    }

    /// An identity with only an id (`simulate`, tests without an apiserver).
    pub fn named(id: &str) -> Self {
        Self { id: id.to_owned(), uid: None }
    }

    /// Whose `eni` is. An ENI without a UID tag (created before the tag
    /// existed) is ours when the id matches.
    pub fn claim(&self, eni: &Eni) -> Claim {
        let creator = eni.tags.get(tag::CREATED_BY).map(String::as_str);
        let Some(cluster) = eni.tags.get(tag::CLUSTER).filter(|_| creator == Some(tag::CREATOR)) else {
            return Claim::Untagged;
        };
        if cluster != &self.id {
            return Claim::OtherCluster;
        }
        match (&self.uid, eni.tags.get(tag::CLUSTER_UID)) {
            (Some(ours), Some(theirs)) if ours != theirs => Claim::OtherCluster,
            _ => Claim::Ours,
        }
    }

    /// The identity tags a new ENI carries.
    pub fn tags(&self) -> BTreeMap<String, String> {
        let mut tags = BTreeMap::from([(tag::CLUSTER.to_owned(), self.id.clone())]);
        if let Some(uid) = &self.uid {
            tags.insert(tag::CLUSTER_UID.to_owned(), uid.clone());
        }
        tags
    }
}

/// Checks a `--cluster-id`: 1 to 63 letters, digits, `.`, `_` or `-`, starting
/// with a letter or digit (a tag value on both clouds; a UID fits).
pub fn parse_cluster_id(text: &str) -> Result<String, String> {
    let fine = (1..=63).contains(&text.len())
        && text.starts_with(|c: char| c.is_ascii_alphanumeric())
        && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if fine {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "'{text}' is not a cluster id: use 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit"
        ))
    }
}

/// Two clusters share one id in this VPC: an ENI with our id carries another UID.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "ENI {eni} carries {}={id} but {}={other_uid}, not this cluster's {our_uid}: another cluster uses the same \
     id in this VPC; give this cluster a unique --cluster-id (chart value clusterId), or leave it empty to use \
     the kube-system namespace UID",
    tag::CLUSTER,
    tag::CLUSTER_UID
)]
pub struct SharedIdentity {
    /// The first such ENI.
    pub eni: String,
    /// The shared id.
    pub id: String,
    /// The UID it carries.
    pub other_uid: String,
    /// Ours.
    pub our_uid: String,
}

/// The start-up check: `Err` names the first ENI (by id order) created by
/// eni-ipam with our id and another UID.
pub fn check_unshared(identity: &ClusterIdentity, vpc_enis: &[Eni]) -> Result<(), SharedIdentity> {
    let Some(our_uid) = &identity.uid else { return Ok(()) };
    let mut clashes: Vec<&Eni> = vpc_enis
        .iter()
        .filter(|e| e.tags.get(tag::CLUSTER) == Some(&identity.id))
        .filter(|e| e.tags.get(tag::CREATED_BY).map(String::as_str) == Some(tag::CREATOR))
        .filter(|e| e.tags.get(tag::CLUSTER_UID).is_some_and(|u| u != our_uid))
        .collect();
    clashes.sort_by(|a, b| a.id.cmp(&b.id));
    match clashes.first() {
        None => Ok(()),
        Some(eni) => Err(SharedIdentity {
            eni: eni.id.to_string(),
            id: identity.id.clone(),
            other_uid: eni.tags[tag::CLUSTER_UID].clone(),
            our_uid: our_uid.clone(),
        }),
    }
}

/// The kube-system namespace's UID, from the apiserver.
pub async fn kube_system_uid(client: &kube::Client) -> anyhow::Result<String> {
    let namespace: Namespace = kube::Api::all(client.clone()).get("kube-system").await.context(
        "cannot read the kube-system namespace, whose UID identifies this cluster in ENI tags; \
         let the operator get namespaces/kube-system (the chart's ClusterRole does)",
    )?;
    namespace.metadata.uid.context("the kube-system namespace has no metadata.uid")
}

/// `run`'s identity: the chosen id or the UID, checked against the VPC's ENIs
/// (one listing, through the provider's CallGuard) so that an id another
/// cluster already uses stops the operator before it changes anything.
pub async fn establish(
    chosen: Option<&str>,
    uid: &str,
    provider: &dyn CloudProvider,
    vpc: &VpcId,
) -> anyhow::Result<ClusterIdentity> {
    let identity = ClusterIdentity::new(chosen, Some(uid)).context("a kube-system UID is never empty")?;
    let (enis, _) = list_all_enis(provider, &EniQuery::Vpc(vpc.clone())).await.with_context(|| {
        format!("cannot list the ENIs of {vpc} to check that no other cluster uses this id")
    })?;
    check_unshared(&identity, &enis)?;
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use eni_ipam_cloud::EniState;

    use super::*;

    fn eni(id: &str, tags: &[(&str, &str)]) -> Eni {
        Eni {
            id: id.into(),
            subnet: "subnet-1".into(),
            vpc: "vpc-1".into(),
            zone: "z1".into(),
            mac: String::new(),
            instance: None,
            device_index: None,
            state: EniState::Detached,
            primary_ip: Ipv4Addr::new(10, 0, 0, 1),
            secondary_ips: vec![],
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    const MADE: (&str, &str) = (tag::CREATED_BY, tag::CREATOR);

    #[test]
    fn the_id_is_the_uid_unless_chosen() {
        assert_eq!(ClusterIdentity::new(None, Some("u1")).unwrap().id, "u1");
        assert_eq!(ClusterIdentity::new(Some(""), Some("u1")).unwrap().id, "u1");
        let chosen = ClusterIdentity::new(Some("prod"), Some("u1")).unwrap();
        assert_eq!((chosen.id.as_str(), chosen.uid.as_deref()), ("prod", Some("u1")));
        assert_eq!(ClusterIdentity::new(None, None), None);
        assert_eq!(
            chosen.tags(),
            BTreeMap::from([
                (tag::CLUSTER.to_owned(), "prod".to_owned()),
                (tag::CLUSTER_UID.to_owned(), "u1".to_owned())
            ])
        );
        assert!(!ClusterIdentity::named("sim").tags().contains_key(tag::CLUSTER_UID));
    }

    #[test]
    fn cluster_ids_are_tag_safe() {
        for good in ["prod", "prod-eu.1", "0b1c2d3e-aaaa-4000-8000-000000000001", "a"] {
            assert_eq!(parse_cluster_id(good).as_deref(), Ok(good));
        }
        for bad in ["", "-prod", "prod cluster", "prod/eu", &"x".repeat(64)] {
            assert!(parse_cluster_id(bad).unwrap_err().contains("not a cluster id"), "{bad:?}");
        }
    }

    #[test]
    fn claims_by_tags() {
        let us = ClusterIdentity { id: "prod".into(), uid: Some("u1".into()) };
        #[rustfmt::skip]
        let cases = [
            ("ours, with our UID", eni("eni-1", &[MADE, (tag::CLUSTER, "prod"), (tag::CLUSTER_UID, "u1")]), Claim::Ours),
            ("ours, from before the UID tag", eni("eni-2", &[MADE, (tag::CLUSTER, "prod")]), Claim::Ours),
            ("our id, another UID", eni("eni-3", &[MADE, (tag::CLUSTER, "prod"), (tag::CLUSTER_UID, "u2")]), Claim::OtherCluster),
            ("another id", eni("eni-4", &[MADE, (tag::CLUSTER, "staging"), (tag::CLUSTER_UID, "u1")]), Claim::OtherCluster),
            ("no tags", eni("eni-5", &[]), Claim::Untagged),
            ("our cluster tag, not made by eni-ipam", eni("eni-6", &[(tag::CLUSTER, "prod")]), Claim::Untagged),
            ("made by eni-ipam, no cluster tag", eni("eni-7", &[MADE]), Claim::Untagged),
        ];
        for (case, eni, want) in cases {
            assert_eq!(us.claim(&eni), want, "{case}");
        }
        let sim = ClusterIdentity::named("prod");
        assert_eq!(
            sim.claim(&eni("eni-3", &[MADE, (tag::CLUSTER, "prod"), (tag::CLUSTER_UID, "u2")])),
            Claim::Ours,
            "without a UID only the id is compared"
        );
    }

    #[test]
    fn start_refuses_a_vpc_where_another_cluster_has_our_id() {
        let us = ClusterIdentity { id: "prod".into(), uid: Some("u1".into()) };
        let fine = [
            eni("eni-a", &[MADE, (tag::CLUSTER, "prod"), (tag::CLUSTER_UID, "u1")]),
            eni("eni-b", &[MADE, (tag::CLUSTER, "prod")]),
            eni("eni-c", &[MADE, (tag::CLUSTER, "other"), (tag::CLUSTER_UID, "u9")]),
            eni("eni-d", &[(tag::CLUSTER, "prod"), (tag::CLUSTER_UID, "u9")]),
        ];
        assert_eq!(check_unshared(&us, &fine), Ok(()));
        let mut shared = fine.to_vec();
        shared.push(eni("eni-z", &[MADE, (tag::CLUSTER, "prod"), (tag::CLUSTER_UID, "u2")]));
        shared.push(eni("eni-e", &[MADE, (tag::CLUSTER, "prod"), (tag::CLUSTER_UID, "u3")]));
        let err = check_unshared(&us, &shared).unwrap_err();
        assert_eq!((err.eni.as_str(), err.other_uid.as_str()), ("eni-e", "u3"));
        let line = err.to_string();
        assert!(
            line.contains("eni-e") && line.contains("--cluster-id") && line.contains("clusterId"),
            "{line}"
        );
        assert!(!line.contains('\n'));
        assert_eq!(
            check_unshared(&ClusterIdentity::named("prod"), &shared),
            Ok(()),
            "no UID, nothing to compare"
        );
    }
}
