//! The agent's Kubernetes side: create or adopt its ENINode from the Node
//! (with an ownerReference), and write `status.used` plus the release-handshake
//! answers with server-side apply under field manager `eni-ipam-agent`, at most
//! once per update interval, retrying with full jitter.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use eni_ipam_api::{
    ConditionStatus, ENINode, ENINodeCondition, ENINodeSpec, PoolOverrides, ReleaseState, SecurityGroupId,
    SubnetId,
};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::time::Instant;

use crate::allocator::release_answers;
use crate::backoff::{FullJitter, jitter_rng};
use crate::ipam::Ipam;
use crate::metrics::Metrics;
use crate::node_identity::{IdentityError, identity};
use crate::pool::{CapacityRule, NodePool, SubnetMap};
use crate::uninstall_mark::UninstallArming;

/// The agent's field manager for server-side apply.
pub const FIELD_MANAGER: &str = "eni-ipam-agent";

/// How often the ENINode is re-read by default when nothing changes locally (pool growth, release marks).
pub const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(5);

const RETRY: FullJitter = FullJitter { base: Duration::from_millis(200), cap: Duration::from_secs(10) };

/// A client from `--kube-url`, or in-cluster / kubeconfig.
pub async fn client(url: Option<&str>) -> anyhow::Result<Client> {
    let config = match url {
        Some(url) => kube::Config::new(url.parse()?),
        None => kube::Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

/// Why registration failed this time.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The Node cannot be identified.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The apiserver call failed.
    #[error("{op} failed: {source}")]
    Kube { op: String, source: kube::Error },
}

/// What a new ENINode's spec gets from the agent's flags: only what the admin set
/// explicitly (`--pre-allocate`, `--eni-subnet`, ...), which then wins over the
/// cluster-wide knobs on that node. Cluster policy lives in the knobs ConfigMap the
/// operator watches, not here. An existing ENINode keeps its own.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpecDefaults {
    /// Pool knobs set by flags.
    pub knobs: PoolOverrides,
    /// First ENI device index for pods (`None`: the cluster-wide knobs decide).
    pub first_interface_index: Option<u32>,
    /// Subnets new ENIs may use (empty: the cluster-wide knobs decide).
    pub subnet_ids: Vec<SubnetId>,
    /// Tags a subnet must carry to be used.
    pub subnet_tags: BTreeMap<String, String>,
    /// Security groups of new ENIs.
    pub security_groups: Vec<SecurityGroupId>,
}

/// Annotation on ENINodes whose spec knobs are per-node choices (written by this agent
/// version from explicit flags, or by an admin). An ENINode without it was created by an
/// agent that copied the DaemonSet's flags into every spec: those copies are cleared once,
/// so the cluster-wide knobs reach the node.
pub const KNOBS_LAYERED_ANNOTATION: &str = "eni-ipam.io/knobs-layered";

/// Set to "true" on an ENINode before upgrading from an older agent to keep its spec
/// knobs as they are (they were set for this node on purpose).
pub const KEEP_NODE_KNOBS_ANNOTATION: &str = "eni-ipam.io/keep-node-knobs";

/// The merge patch that turns an ENINode written by an older agent into a layered one:
/// its copied knobs cleared (unless kept on purpose), the flags set explicitly written, the
/// marker added. `None` when the ENINode is already layered.
pub fn layering_patch(existing: &ENINode, defaults: &SpecDefaults) -> Option<serde_json::Value> {
    let annotations = existing.annotations();
    if annotations.contains_key(KNOBS_LAYERED_ANNOTATION) {
        return None;
    }
    let marker = json!({"metadata": {"annotations": {KNOBS_LAYERED_ANNOTATION: "true"}}});
    if annotations.get(KEEP_NODE_KNOBS_ANNOTATION).is_some_and(|v| v == "true") {
        return Some(marker);
    }
    let or_null = |v: serde_json::Value, empty: bool| if empty { serde_json::Value::Null } else { v };
    let ipam = serde_json::to_value(defaults.knobs).expect("knobs serialize");
    let mut patch = marker;
    patch["spec"] = json!({
        // `null` removes the old agent's copies; a merge patch replaces `ipam` key by key.
        "ipam": {
            "preAllocate": ipam.get("preAllocate"),
            "minAllocate": ipam.get("minAllocate"),
            "maxAllocate": ipam.get("maxAllocate"),
            "maxAboveWatermark": ipam.get("maxAboveWatermark"),
        },
        "firstInterfaceIndex": defaults.first_interface_index,
        "subnetIds": or_null(json!(defaults.subnet_ids), defaults.subnet_ids.is_empty()),
        "subnetTags": or_null(json!(defaults.subnet_tags), defaults.subnet_tags.is_empty()),
        "securityGroups": or_null(json!(defaults.security_groups), defaults.security_groups.is_empty()),
    });
    Some(patch)
}

/// Registers the node, retrying with full jitter until it works (a bad providerID is
/// logged with the Node's name and reported as a condition when the ENINode exists).
pub async fn register(client: &Client, node_name: &str, defaults: &SpecDefaults) -> ENINode {
    let mut attempt = 0;
    let mut rng = jitter_rng();
    loop {
        match register_once(client, node_name, defaults).await {
            Ok(node) => return node,
            Err(err) => {
                tracing::error!(node = node_name, "cannot register the ENINode: {err}");
                if let RegisterError::Identity(identity_err) = &err {
                    let _ = report_condition(
                        client,
                        node_name,
                        "Registered",
                        "BadNodeIdentity",
                        &identity_err.to_string(),
                    )
                    .await;
                }
                let wait = RETRY.wait(attempt, &mut rng);
                attempt += 1;
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// One registration attempt: GET the Node, GET/POST the ENINode, adopt it when needed.
pub async fn register_once(
    client: &Client,
    node_name: &str,
    defaults: &SpecDefaults,
) -> Result<ENINode, RegisterError> {
    let kube_err = |op: String| move |source| RegisterError::Kube { op, source };
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes.get(node_name).await.map_err(kube_err(format!("GET Node {node_name}")))?;
    let spec = node.spec.clone().unwrap_or_default();
    let id = identity(node_name, spec.provider_id.as_deref(), node.labels())?;
    let owner = OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node_name.to_owned(),
        uid: node.uid().unwrap_or_default(),
        ..Default::default()
    };
    let eninodes: Api<ENINode> = Api::all(client.clone());
    match eninodes.get_opt(node_name).await.map_err(kube_err(format!("GET ENINode {node_name}")))? {
        None => {
            let mut eninode = ENINode::new(
                node_name,
                ENINodeSpec {
                    instance_id: id.instance_id.as_str().into(),
                    instance_type: id.instance_type.as_str().into(),
                    zone: id.zone.as_str().into(),
                    ipam: defaults.knobs,
                    first_interface_index: defaults.first_interface_index,
                    subnet_ids: defaults.subnet_ids.clone(),
                    subnet_tags: defaults.subnet_tags.clone(),
                    security_groups: defaults.security_groups.clone(),
                    ..Default::default()
                },
            );
            eninode.metadata.owner_references = Some(vec![owner]);
            eninode.metadata.annotations =
                Some([(KNOBS_LAYERED_ANNOTATION.to_owned(), "true".to_owned())].into());
            let created = eninodes
                .create(&PostParams::default(), &eninode)
                .await
                .map_err(kube_err(format!("create ENINode {node_name}")))?;
            tracing::info!(node = node_name, instance = %id.instance_id, "created the ENINode");
            Ok(created)
        }
        Some(existing) => {
            let existing = match layering_patch(&existing, defaults) {
                None => existing,
                Some(patch) => {
                    let layered = eninodes
                        .patch(node_name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map_err(kube_err(format!("clear the copied knobs of ENINode {node_name}")))?;
                    tracing::info!(
                        node = node_name,
                        "the ENINode carried knobs copied by an older agent: cleared, so the cluster-wide \
                         knobs apply (annotate {KEEP_NODE_KNOBS_ANNOTATION}=true to keep a node's own)"
                    );
                    layered
                }
            };
            let owned = existing.owner_references().iter().any(|o| o.kind == "Node" && o.uid == owner.uid);
            let same_identity = existing.spec.instance_id.as_str() == id.instance_id
                && existing.spec.instance_type.as_str() == id.instance_type
                && existing.spec.zone.as_str() == id.zone;
            if owned && same_identity {
                return Ok(existing);
            }
            let mut owners: Vec<OwnerReference> =
                existing.owner_references().iter().filter(|o| o.kind != "Node").cloned().collect();
            owners.push(owner);
            let patch = json!({
                "metadata": {"ownerReferences": owners},
                "spec": {"instanceId": id.instance_id, "instanceType": id.instance_type, "zone": id.zone},
            });
            let adopted = eninodes
                .patch(node_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(kube_err(format!("adopt ENINode {node_name}")))?;
            tracing::info!(node = node_name, instance = %id.instance_id, "adopted the existing ENINode");
            Ok(adopted)
        }
    }
}

/// Sets one condition on the ENINode, if it exists, keeping the others (the list is atomic for
/// server-side apply, so a merge patch of the whole list is used rather than an apply that would
/// take the operator's conditions over).
async fn report_condition(
    client: &Client,
    node_name: &str,
    type_: &str,
    reason: &str,
    message: &str,
) -> Result<(), kube::Error> {
    let eninodes: Api<ENINode> = Api::all(client.clone());
    let Some(existing) = eninodes.get_opt(node_name).await? else { return Ok(()) };
    let mut conditions = existing.status.map(|s| s.conditions).unwrap_or_default();
    conditions.retain(|c| c.type_ != type_);
    conditions.push(ENINodeCondition {
        type_: type_.to_owned(),
        status: ConditionStatus::False,
        reason: reason.to_owned(),
        message: message.to_owned(),
        last_transition_time: String::new(),
    });
    let patch = json!({"status": {"conditions": conditions}});
    eninodes.patch_status(node_name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// Why one reporter step failed (logged, then retried with full jitter).
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Register(#[from] RegisterError),
    #[error("ENINode {0} not found")]
    Gone(String),
}

/// What one status write carries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusReport {
    /// IP -> owner.
    pub used: BTreeMap<String, String>,
    /// The agent's release answers (only IPs the operator has marked or the agent answered).
    pub release: BTreeMap<String, ReleaseState>,
}

/// The agent's answers for the current `status.release`: re-answer marks, keep our earlier answers
/// (an apply that omits them would delete them), leave `released` to the operator.
pub fn release_report(
    current: &BTreeMap<String, ReleaseState>,
    used: &BTreeMap<String, String>,
) -> BTreeMap<String, ReleaseState> {
    let held = used.keys().cloned().collect();
    let mut answers = release_answers(current, &held);
    for (ip, state) in current {
        if matches!(state, ReleaseState::Ready | ReleaseState::DoNotRelease) {
            answers.insert(ip.clone(), *state);
        }
    }
    answers
}

/// The apply body for a report computed from the ENINode at `resource_version`. The apiserver
/// refuses it (409) once the ENINode has changed since: the operator may have unmarked or
/// released an IP whose earlier answer the report would otherwise put back.
pub fn status_apply_body(report: &StatusReport, resource_version: Option<&str>) -> serde_json::Value {
    let mut body = json!({
        "apiVersion": "eni-ipam.io/v1alpha1",
        "kind": "ENINode",
        "status": {"used": report.used, "inUse": report.used.len(), "release": report.release},
    });
    if let Some(rv) = resource_version {
        body["metadata"] = json!({"resourceVersion": rv});
    }
    body
}

/// Writes `status.used` at most once per interval and keeps the pool in step with the ENINode.
pub struct Reporter {
    client: Client,
    node: String,
    interval: Duration,
    resync: Duration,
    pool_cache: Option<std::path::PathBuf>,
    arming: Option<Arc<UninstallArming>>,
    registration: Option<SpecDefaults>,
}

impl Reporter {
    /// A reporter for `node`, writing at most once per `interval`.
    pub fn new(client: Client, node: String, interval: Duration) -> Self {
        Self {
            client,
            node,
            interval,
            resync: DEFAULT_RESYNC_INTERVAL,
            pool_cache: None,
            arming: None,
            registration: None,
        }
    }

    /// Creates the ENINode again (as at start, with these spec defaults) when it is deleted
    /// under the running agent, instead of failing every read of it.
    pub fn with_registration(mut self, defaults: SpecDefaults) -> Self {
        self.registration = Some(defaults);
        self
    }

    /// Keeps the last pool seen in this file (the pool-file format), for the next start.
    pub fn with_pool_cache(mut self, path: std::path::PathBuf) -> Self {
        self.pool_cache = Some(path);
        self
    }

    /// Arms or disarms the uninstall-on-termination from every read of the ENINode.
    pub fn with_uninstall_arming(mut self, arming: Arc<UninstallArming>) -> Self {
        self.arming = Some(arming);
        self
    }

    /// Re-reads the ENINode at least this often (pool changes, release marks).
    pub fn with_resync(mut self, resync: Duration) -> Self {
        self.resync = resync;
        self
    }

    /// Runs forever: wait for a local change (or the resync interval), wait out the
    /// interval since the last write, read the ENINode, write what changed.
    pub async fn run(
        self,
        ipam: Arc<Ipam>,
        metrics: Arc<Metrics>,
        subnets: SubnetMap,
        capacity: CapacityRule,
    ) {
        let eninodes: Api<ENINode> = Api::all(self.client.clone());
        let mut changes = ipam.subscribe();
        let mut last_written: Option<StatusReport> = None;
        let mut last_cached: Option<NodePool> = None;
        let mut last_write = Instant::now() - self.interval;
        let mut attempt = 0u32;
        let mut rng = jitter_rng();
        loop {
            tokio::time::sleep_until(last_write + self.interval).await;
            let step = async {
                let eninode = match (eninodes.get_opt(&self.node).await?, &self.registration) {
                    (Some(eninode), _) => eninode,
                    (None, Some(defaults)) => {
                        tracing::warn!(node = %self.node, "the ENINode was deleted under the agent; creating it again");
                        register_once(&self.client, &self.node, defaults).await?
                    }
                    (None, None) => return Err(StepError::Gone(self.node.clone())),
                };
                if let Some(arming) = &self.arming {
                    arming.observe(&eninodes, &eninode).await?;
                }
                let pool = NodePool::from_eninode(&eninode, &subnets, capacity);
                if let Some(path) = &self.pool_cache
                    && last_cached.as_ref() != Some(&pool)
                {
                    match pool.save_cache(path) {
                        Ok(()) => last_cached = Some(pool.clone()),
                        Err(e) => {
                            tracing::warn!(node = %self.node, cache = %path.display(), "cannot write the pool cache: {e}")
                        }
                    }
                }
                ipam.set_pool(pool);
                // Everything that changed until now is in this one write.
                changes.borrow_and_update();
                let used = ipam.used();
                let current = eninode.status.as_ref().map(|s| s.release.clone()).unwrap_or_default();
                let report = StatusReport { release: release_report(&current, &used), used };
                let on_server = eninode.status.as_ref().map(|s| StatusReport {
                    used: s.used.clone(),
                    release: release_report(&s.release, &s.used),
                });
                if last_written.as_ref() != Some(&report)
                    || on_server.as_ref().map(|s| &s.used) != Some(&report.used)
                {
                    let params = PatchParams::apply(FIELD_MANAGER).force();
                    eninodes
                        .patch_status(
                            &self.node,
                            &params,
                            &Patch::Apply(&status_apply_body(
                                &report,
                                eninode.metadata.resource_version.as_deref(),
                            )),
                        )
                        .await?;
                    metrics.count_status_patch();
                    last_write = Instant::now();
                    last_written = Some(report);
                }
                Ok::<(), StepError>(())
            };
            match step.await {
                Ok(()) => {
                    attempt = 0;
                    let _ = tokio::time::timeout(self.resync, changes.changed()).await;
                }
                Err(StepError::Kube(kube::Error::Api(e))) if e.code == 409 => {
                    // The ENINode changed between the read and the write: read it again.
                    let wait = RETRY.wait(0, &mut rng);
                    tracing::debug!(node = %self.node, ?wait, "ENINode changed under the status report: {}", e.message);
                    tokio::time::sleep(wait).await;
                }
                Err(err) => {
                    let wait = RETRY.wait(attempt, &mut rng);
                    tracing::warn!(node = %self.node, attempt, ?wait, "cannot update ENINode status: {err}");
                    attempt = attempt.saturating_add(1);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_report_answers_marks_and_keeps_earlier_answers() {
        let current: BTreeMap<String, ReleaseState> = [
            ("10.0.0.1".to_owned(), ReleaseState::Marked),
            ("10.0.0.2".to_owned(), ReleaseState::Marked),
            ("10.0.0.3".to_owned(), ReleaseState::Ready),
            ("10.0.0.4".to_owned(), ReleaseState::Released),
        ]
        .into();
        let used: BTreeMap<String, String> = [("10.0.0.2".to_owned(), "default/web".to_owned())].into();
        let got = release_report(&current, &used);
        let want: BTreeMap<String, ReleaseState> = [
            ("10.0.0.1".to_owned(), ReleaseState::Ready),
            ("10.0.0.2".to_owned(), ReleaseState::DoNotRelease),
            ("10.0.0.3".to_owned(), ReleaseState::Ready),
        ]
        .into();
        assert_eq!(got, want);
        let body = status_apply_body(&StatusReport { used, release: got }, Some("41"));
        assert_eq!(body["metadata"]["resourceVersion"], "41", "the report is applied against what it read");
        assert_eq!(body["status"]["inUse"], 1);
        assert_eq!(body["status"]["release"]["10.0.0.2"], "do-not-release");
        assert_eq!(body["kind"], "ENINode");
    }
}
