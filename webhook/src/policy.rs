//! What the webhook was configured to do: which extended resource to add and
//! which namespaces to leave alone. Both are checked when the flags are read,
//! so a typo stops the webhook at start instead of producing patches
//! kube-apiserver rejects.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::node_selection::SkippedNodeLabels;
use crate::pod_patch::escape_pointer_token;

/// An extended resource name such as `eni-ipam.io/ip`: `<domain>/<name>`, the
/// form kubelet and the scheduler accept for device-plugin resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceName(String);

/// A `--resource-name` that Kubernetes would not accept as an extended resource.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("resource name {name:?} {problem}; use <domain>/<name> such as eni-ipam.io/ip")]
pub struct InvalidResourceName {
    name: String,
    problem: &'static str,
}

impl FromStr for ResourceName {
    type Err = InvalidResourceName;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let invalid = |problem| InvalidResourceName { name: name.to_owned(), problem };
        let (domain, short) = name.split_once('/').ok_or_else(|| invalid("has no domain prefix"))?;
        if !is_dns_subdomain(domain) {
            return Err(invalid("has a domain prefix that is not a lowercase DNS name"));
        }
        // Kubernetes reserves these domains for its own resources.
        if domain == "kubernetes.io" || domain.ends_with(".kubernetes.io") || domain == "k8s.io" {
            return Err(invalid("uses a domain reserved by Kubernetes"));
        }
        if !is_qualified_name_part(short) {
            return Err(invalid("has a name part that is not 1-63 letters, digits, '-', '_' or '.'"));
        }
        Ok(ResourceName(name.to_owned()))
    }
}

impl fmt::Display for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Namespaces whose pods are never patched, matched by exact name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExcludedNamespaces(BTreeSet<String>);

/// An `--exclude-namespaces` entry that cannot be a namespace name.
#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "namespace {name:?} in the exclusion list is not a valid namespace name (1-63 lowercase letters, digits \
     or '-'); give a comma-separated list such as kube-system,monitoring"
)]
pub struct InvalidNamespace {
    name: String,
}

impl FromStr for ExcludedNamespaces {
    type Err = InvalidNamespace;

    /// A comma-separated list; blanks around names and empty entries are
    /// ignored, so `""` excludes nothing.
    fn from_str(list: &str) -> Result<Self, Self::Err> {
        comma_set(list, is_dns_label).map(ExcludedNamespaces).map_err(|name| InvalidNamespace { name })
    }
}

/// The entries of a comma-separated list (blanks around them and empty ones ignored), or the
/// first one `valid` refuses.
pub(crate) fn comma_set(list: &str, valid: impl Fn(&str) -> bool) -> Result<BTreeSet<String>, String> {
    let mut entries = BTreeSet::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if !valid(entry) {
            return Err(entry.to_owned());
        }
        entries.insert(entry.to_owned());
    }
    Ok(entries)
}

impl ExcludedNamespaces {
    /// Whether pods in `namespace` are left alone.
    pub fn contains(&self, namespace: &str) -> bool {
        self.0.contains(namespace)
    }

    /// The names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

/// The configured decision inputs, shared read-only by every request.
#[derive(Debug, Clone)]
pub struct MutationPolicy {
    resource_name: ResourceName,
    resource_pointer_token: String,
    excluded_namespaces: ExcludedNamespaces,
    skipped_node_labels: SkippedNodeLabels,
}

impl MutationPolicy {
    /// A policy adding `resource_name` outside `excluded_namespaces`.
    pub fn new(resource_name: ResourceName, excluded_namespaces: ExcludedNamespaces) -> Self {
        // Escaped once here rather than per request.
        let resource_pointer_token = escape_pointer_token(&resource_name.0);
        Self {
            resource_name,
            resource_pointer_token,
            excluded_namespaces,
            skipped_node_labels: SkippedNodeLabels::default(),
        }
    }

    /// Leaves alone the pods that can only run on nodes carrying one of these label keys.
    pub fn with_skipped_node_labels(mut self, labels: SkippedNodeLabels) -> Self {
        self.skipped_node_labels = labels;
        self
    }

    /// The node label keys whose pods are left alone.
    pub fn skipped_node_labels(&self) -> &SkippedNodeLabels {
        &self.skipped_node_labels
    }

    /// The extended resource, e.g. `eni-ipam.io/ip`.
    pub fn resource_name(&self) -> &str {
        &self.resource_name.0
    }

    /// The resource name as one JSON Pointer token, e.g. `eni-ipam.io~1ip`.
    pub fn resource_pointer_token(&self) -> &str {
        &self.resource_pointer_token
    }

    /// Whether pods in `namespace` are left alone.
    pub fn is_excluded(&self, namespace: &str) -> bool {
        self.excluded_namespaces.contains(namespace)
    }
}

fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_qualified_name_part(s: &str) -> bool {
    let bytes = s.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names_need_a_domain_that_is_not_kubernetes() {
        assert!("eni-ipam.io/ip".parse::<ResourceName>().is_ok());
        assert!("example.com/pod-ip_v4".parse::<ResourceName>().is_ok());
        for bad in
            ["ip", "/ip", "eni-ipam.io/", "ENI.io/ip", "kubernetes.io/ip", "x.kubernetes.io/ip", "a/b/c"]
        {
            assert!(bad.parse::<ResourceName>().is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn resource_name_error_says_what_to_use() {
        let message = "ip".parse::<ResourceName>().unwrap_err().to_string();
        assert_eq!(
            message,
            "resource name \"ip\" has no domain prefix; use <domain>/<name> such as eni-ipam.io/ip"
        );
    }

    #[test]
    fn namespace_lists_are_trimmed_and_may_be_empty() {
        let list: ExcludedNamespaces = " kube-system, monitoring ,,".parse().unwrap();
        assert_eq!(list.names().collect::<Vec<_>>(), ["kube-system", "monitoring"]);
        assert!(!list.contains("kube"));
        assert_eq!("".parse::<ExcludedNamespaces>().unwrap(), ExcludedNamespaces::default());
        assert!("kube_system".parse::<ExcludedNamespaces>().is_err());
    }
}
