//! Pods the webhook leaves without the IP request because of where they will
//! run: pods that can only land on nodes carrying one of the `--skip-node-labels`
//! keys. The case it exists for is Karpenter, which never launches a node for a
//! pod requesting an extended resource it does not know (kubernetes-sigs/karpenter#751):
//! a pod meant for a Karpenter NodePool selects that NodePool's nodes
//! (`karpenter.sh/nodepool`, or a label the NodePool puts on its nodes), and without
//! the request Karpenter provisions for it. Such pods are then bounded by kubelet's
//! max pods instead (docs/scheduling.md, Karpenter).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};
use thiserror::Error;

/// Node label keys whose selection means "no IP request", matched exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SkippedNodeLabels(BTreeSet<String>);

/// A `--skip-node-labels` entry that cannot be a label key.
#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "node label key {key:?} in --skip-node-labels is not a label key ([prefix/]name, e.g. \
     karpenter.sh/nodepool); give a comma-separated list of keys"
)]
pub struct InvalidLabelKey {
    key: String,
}

impl FromStr for SkippedNodeLabels {
    type Err = InvalidLabelKey;

    /// A comma-separated list; blanks and empty entries are ignored, so `""` skips nothing.
    fn from_str(list: &str) -> Result<Self, Self::Err> {
        crate::policy::comma_set(list, is_label_key)
            .map(SkippedNodeLabels)
            .map_err(|key| InvalidLabelKey { key })
    }
}

impl fmt::Display for SkippedNodeLabels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.iter().map(String::as_str).collect::<Vec<_>>().join(","))
    }
}

impl SkippedNodeLabels {
    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the pod with this `spec` can only run on nodes carrying one of the keys: its
    /// `nodeSelector` names one, or its required node affinity has terms and every term
    /// (they are ORed) requires one (operator `In` or `Exists`). A preferred affinity, a
    /// `NotIn` or `DoesNotExist` leave the pod free to run elsewhere: it keeps its request.
    pub fn selected_by(&self, spec: &Map<String, Value>) -> bool {
        if self.is_empty() {
            return false;
        }
        let by_selector = spec
            .get("nodeSelector")
            .and_then(Value::as_object)
            .is_some_and(|selector| selector.keys().any(|k| self.0.contains(k)));
        if by_selector {
            return true;
        }
        let terms = spec
            .get("affinity")
            .and_then(|a| a.get("nodeAffinity"))
            .and_then(|a| a.get("requiredDuringSchedulingIgnoredDuringExecution"))
            .and_then(|r| r.get("nodeSelectorTerms"))
            .and_then(Value::as_array);
        terms.is_some_and(|terms| !terms.is_empty() && terms.iter().all(|term| self.term_requires_one(term)))
    }

    fn term_requires_one(&self, term: &Value) -> bool {
        term.get("matchExpressions").and_then(Value::as_array).into_iter().flatten().any(|expression| {
            let key = expression.get("key").and_then(Value::as_str).unwrap_or_default();
            let operator = expression.get("operator").and_then(Value::as_str).unwrap_or_default();
            self.0.contains(key) && matches!(operator, "In" | "Exists")
        })
    }
}

/// `[prefix/]name`: a DNS subdomain prefix of at most 253 characters, a name of 1-63
/// letters, digits, '-', '_' or '.', starting and ending with a letter or digit.
fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let name_ok = (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    let prefix_ok = prefix.is_none_or(|p| {
        p.len() <= 253
            && p.split('.').all(|label| {
                (1..=63).contains(&label.len())
                    && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    });
    name_ok && prefix_ok
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn karpenter() -> SkippedNodeLabels {
        "karpenter.sh/nodepool, workload-class".parse().unwrap()
    }

    fn required(terms: Value) -> Value {
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": terms}}}})
    }

    /// Each row: a pod spec, whether it can only run on nodes with a skipped key.
    #[test]
    fn only_pods_bound_to_such_nodes_are_selected() {
        let in_pool = json!({"key": "karpenter.sh/nodepool", "operator": "In", "values": ["default"]});
        let exists = json!({"key": "workload-class", "operator": "Exists"});
        let zone = json!({"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a"]});
        let table: Vec<(&str, Value, bool)> = vec![
            (
                "nodeSelector names the NodePool",
                json!({"nodeSelector": {"karpenter.sh/nodepool": "default"}}),
                true,
            ),
            (
                "nodeSelector names another key",
                json!({"nodeSelector": {"kubernetes.io/arch": "arm64"}}),
                false,
            ),
            ("no selection at all", json!({}), false),
            (
                "one required term with In",
                required(json!([{"matchExpressions": [zone.clone(), in_pool.clone()]}])),
                true,
            ),
            (
                "one required term with Exists",
                required(json!([{"matchExpressions": [exists.clone()]}])),
                true,
            ),
            (
                "every ORed term requires one",
                required(json!([{"matchExpressions": [in_pool.clone()]}, {"matchExpressions": [exists]}])),
                true,
            ),
            (
                "one ORed term lets it run elsewhere",
                required(json!([{"matchExpressions": [in_pool.clone()]}, {"matchExpressions": [zone]}])),
                false,
            ),
            (
                "NotIn keeps it off those nodes",
                required(json!([{"matchExpressions": [{"key": "karpenter.sh/nodepool", "operator": "NotIn",
                    "values": ["default"]}]}])),
                false,
            ),
            (
                "DoesNotExist keeps it off those nodes",
                required(
                    json!([{"matchExpressions": [{"key": "workload-class", "operator": "DoesNotExist"}]}]),
                ),
                false,
            ),
            ("no terms", required(json!([])), false),
            (
                "preferred only: it may run anywhere",
                json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 1, "preference": {"matchExpressions": [in_pool]}}]}}}),
                false,
            ),
        ];
        let labels = karpenter();
        for (what, spec, want) in table {
            assert_eq!(labels.selected_by(spec.as_object().unwrap()), want, "{what}");
        }
        let none = SkippedNodeLabels::default();
        let spec = json!({"nodeSelector": {"karpenter.sh/nodepool": "default"}});
        assert!(!none.selected_by(spec.as_object().unwrap()), "no keys configured: nothing is skipped");
    }

    #[test]
    fn keys_are_checked_when_read() {
        assert_eq!("".parse::<SkippedNodeLabels>().unwrap(), SkippedNodeLabels::default());
        assert_eq!(karpenter().to_string(), "karpenter.sh/nodepool,workload-class");
        for bad in ["Karpenter.SH/nodepool", "a b", "-x", "karpenter.sh/", "/name"] {
            let error = bad.parse::<SkippedNodeLabels>().unwrap_err().to_string();
            assert!(error.contains("is not a label key"), "{bad}: {error}");
        }
    }
}
