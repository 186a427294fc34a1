//! The node's cloud identity from its Node object: instance id (and zone on
//! AWS) from `spec.providerID`, instance type and zone from the well-known labels.

use std::collections::BTreeMap;

/// Instance type labels, newest first.
pub const INSTANCE_TYPE_LABELS: &[&str] =
    &["node.kubernetes.io/instance-type", "beta.kubernetes.io/instance-type"];
/// Zone labels, newest first.
pub const ZONE_LABELS: &[&str] = &["topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone"];

/// Which cloud runs the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cloud {
    /// `aws:///<zone>/i-...`
    Aws,
    /// `<region>.i-...`
    Alibaba,
}

/// What the agent writes into a new ENINode's spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeIdentity {
    /// The cloud.
    pub cloud: Cloud,
    /// `i-...`
    pub instance_id: String,
    /// From the instance-type label.
    pub instance_type: String,
    /// From the zone label, or the providerID on AWS.
    pub zone: String,
}

/// Why the identity cannot be read, in words naming the Node.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// No providerID yet (the cloud controller manager sets it).
    #[error(
        "Node {node} has no spec.providerID yet; the cloud controller manager or kubelet --provider-id sets it"
    )]
    MissingProviderId { node: String },
    /// A providerID of an unknown shape.
    #[error(
        "Node {node} has spec.providerID {provider_id:?}, which is neither AWS (aws:///<zone>/i-...) nor Alibaba Cloud (<region>.i-...); fix kubelet --provider-id"
    )]
    BadProviderId { node: String, provider_id: String },
    /// A required label is missing.
    #[error("Node {node} has no {what} label ({labels}); the cloud controller manager sets it")]
    MissingLabel { node: String, what: &'static str, labels: String },
}

/// Parses a providerID: the cloud, the instance id, and the zone when the id carries one.
pub fn parse_provider_id(provider_id: &str) -> Option<(Cloud, String, Option<String>)> {
    let valid_instance =
        |id: &str| id.len() > 2 && id.starts_with("i-") && id[2..].chars().all(|c| c.is_ascii_alphanumeric());
    if let Some(rest) = provider_id.strip_prefix("aws://") {
        let parts: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
        return match parts.as_slice() {
            [zone, id] if !zone.is_empty() && valid_instance(id) => {
                Some((Cloud::Aws, id.to_string(), Some(zone.to_string())))
            }
            [id] if valid_instance(id) => Some((Cloud::Aws, id.to_string(), None)),
            _ => None,
        };
    }
    let (region, id) = provider_id.split_once('.')?;
    let region_ok = !region.is_empty()
        && region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    (region_ok && valid_instance(id)).then(|| (Cloud::Alibaba, id.to_owned(), None))
}

/// Reads the identity of `node` from its providerID and labels.
pub fn identity(
    node: &str,
    provider_id: Option<&str>,
    labels: &BTreeMap<String, String>,
) -> Result<NodeIdentity, IdentityError> {
    let provider_id = provider_id
        .filter(|p| !p.is_empty())
        .ok_or_else(|| IdentityError::MissingProviderId { node: node.to_owned() })?;
    let (cloud, instance_id, id_zone) = parse_provider_id(provider_id).ok_or_else(|| {
        IdentityError::BadProviderId { node: node.to_owned(), provider_id: provider_id.to_owned() }
    })?;
    let label = |names: &[&str]| names.iter().find_map(|n| labels.get(*n).filter(|v| !v.is_empty()).cloned());
    let instance_type = label(INSTANCE_TYPE_LABELS).ok_or_else(|| IdentityError::MissingLabel {
        node: node.to_owned(),
        what: "instance type",
        labels: INSTANCE_TYPE_LABELS.join(" or "),
    })?;
    let zone = label(ZONE_LABELS).or(id_zone).ok_or_else(|| IdentityError::MissingLabel {
        node: node.to_owned(),
        what: "zone",
        labels: ZONE_LABELS.join(" or "),
    })?;
    Ok(NodeIdentity { cloud, instance_id, instance_type, zone })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_ids_of_both_clouds() {
        type Parsed = Option<(Cloud, &'static str, Option<&'static str>)>;
        let cases: &[(&str, Parsed)] = &[
            (
                "aws:///us-east-1a/i-0abc123def4567890",
                Some((Cloud::Aws, "i-0abc123def4567890", Some("us-east-1a"))),
            ),
            ("aws:///i-0abc", Some((Cloud::Aws, "i-0abc", None))),
            ("cn-hangzhou.i-bp1abcdefg", Some((Cloud::Alibaba, "i-bp1abcdefg", None))),
            ("aws:///us-east-1a/", None),
            ("aws:///us-east-1a/vol-1", None),
            ("gce://project/zone/name", None),
            ("cn-hangzhou.", None),
            ("CN.i-x", None),
            ("i-0abc", None),
            ("", None),
        ];
        for (id, want) in cases {
            let want = want.map(|(c, i, z)| (c, i.to_owned(), z.map(str::to_owned)));
            assert_eq!(parse_provider_id(id), want, "{id}");
        }
    }

    #[test]
    fn identity_from_labels_and_provider_id() {
        let labels: BTreeMap<String, String> =
            [("node.kubernetes.io/instance-type".to_owned(), "m5.large".to_owned())].into();
        let aws = identity("n1", Some("aws:///us-east-1a/i-0abc"), &labels).unwrap();
        assert_eq!((aws.zone.as_str(), aws.instance_type.as_str()), ("us-east-1a", "m5.large"));
        let err = identity("n1", Some("cn-hangzhou.i-bp1"), &labels).unwrap_err();
        assert!(err.to_string().contains("Node n1 has no zone label"), "{err}");
        let mut with_zone = labels.clone();
        with_zone.insert("topology.kubernetes.io/zone".into(), "cn-hangzhou-h".into());
        let ali = identity("n1", Some("cn-hangzhou.i-bp1"), &with_zone).unwrap();
        assert_eq!(
            ali,
            NodeIdentity {
                cloud: Cloud::Alibaba,
                instance_id: "i-bp1".into(),
                instance_type: "m5.large".into(),
                zone: "cn-hangzhou-h".into()
            }
        );
        assert!(matches!(identity("n1", None, &labels), Err(IdentityError::MissingProviderId { .. })));
        let bad = identity("n1", Some("gce://x"), &labels).unwrap_err().to_string();
        assert!(bad.contains("Node n1") && bad.contains("gce://x"), "{bad}");
        assert!(
            identity("n1", Some("aws:///z/i-1"), &BTreeMap::new())
                .unwrap_err()
                .to_string()
                .contains("instance type")
        );
    }
}
