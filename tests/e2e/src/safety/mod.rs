//! The safety scenarios of issue 28: what eni-ipam must never touch or lose in
//! a real VPC (another cluster's ENIs, a live node's ENIs, another CNI's IPs,
//! a node name reused by a new VM, a hostile agent, a pod that died without a
//! CNI DEL). Each scenario is one file here, runs on a bed that the earlier
//! ones leave working, and answers with one [`SafetyRow`].

use serde::Serialize;

pub mod foreign_ips;
pub mod hostile_agent;
pub mod lost_del;
pub mod node_deleted_vm_runs;
pub mod node_name_reused;
pub mod two_clusters;

/// What one safety scenario found. Every count but `leaked_ips_freed` must be 0.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SafetyRow {
    /// Scenario.
    pub scenario: String,
    /// ENIs of another cluster (another identity) detached, deleted or re-tagged.
    pub other_cluster_enis_touched: usize,
    /// ENIs of an instance that still runs detached or deleted.
    pub live_enis_detached: usize,
    /// IPs another CNI (or another cluster) assigned that a pod of ours got, or
    /// that our operator unassigned.
    pub foreign_ips_taken: usize,
    /// IPs in two pools or held by two pods, from the audit.
    pub double_ips: usize,
    /// Pod IPs whose pod died without a CNI DEL, freed by the agent.
    pub leaked_ips_freed: usize,
    /// Pod IPs whose pod died without a CNI DEL, still held at the end.
    pub leaked_ips_left: usize,
    /// Requests a hostile client made that the cluster accepted.
    pub hostile_writes_accepted: usize,
    /// What else the scenario checked, in words (empty when nothing).
    pub note: String,
}

impl SafetyRow {
    /// A row with every count at zero.
    pub fn new(scenario: &str) -> Self {
        Self { scenario: scenario.to_owned(), ..Self::default() }
    }

    /// Whether nothing that must be 0 is not.
    pub fn clean(&self) -> bool {
        self.other_cluster_enis_touched == 0
            && self.live_enis_detached == 0
            && self.foreign_ips_taken == 0
            && self.double_ips == 0
            && self.leaked_ips_left == 0
            && self.hostile_writes_accepted == 0
    }

    fn line(&self) -> String {
        format!(
            "| {:<36} | {:>13} | {:>13} | {:>11} | {:>6} | {:>10} | {:>10} | {:>15} | {} |",
            self.scenario,
            self.other_cluster_enis_touched,
            self.live_enis_detached,
            self.foreign_ips_taken,
            self.double_ips,
            self.leaked_ips_freed,
            self.leaked_ips_left,
            self.hostile_writes_accepted,
            self.note
        )
    }
}

/// The safety table, titled.
pub fn table(title: &str, rows: &[SafetyRow]) -> String {
    let mut out = format!("{title}\n");
    out.push_str("| scenario                             | other cluster | live detached | foreign IPs | double | IPs freed  | IPs left   | hostile writes  | note |\n");
    out.push_str("|--------------------------------------|--------------:|--------------:|------------:|-------:|-----------:|-----------:|----------------:|------|\n");
    for row in rows {
        out.push_str(&row.line());
        out.push('\n');
    }
    out
}

/// Ends a scenario: deletes its `pods`, waits until they are gone, lets the bed settle
/// (a GC pass included) and audits it; panics naming `scenario` when the audit finds
/// anything. Returns the double IPs it counted.
pub(crate) async fn remove_pods_and_audit(
    bed: &mut crate::bed::Bed,
    scenario: &str,
    pods: &[String],
    progress: &(dyn Fn(&str) + Sync),
) -> usize {
    for pod in pods {
        bed.delete_pod(pod);
    }
    bed.wait_for("the scenario's pods to go", crate::scenarios::CONVERGE, |bed| {
        bed.pod_ips().keys().all(|k| !pods.iter().any(|p| k.ends_with(&format!("/{p}"))))
    })
    .await;
    let run = crate::scenarios::Run::new(bed, crate::scenarios::Size::new(false), progress);
    let findings = run.settle().await;
    assert!(findings.clean(), "{scenario}: the audit after settling: {findings:#?}");
    findings.double_ips.len()
}

/// Every safety scenario, in the order they run on one bed.
pub const SCENARIOS: &[&str] = &[
    "hostile_agent",
    "lost_del",
    "foreign_ips",
    "node deleted, VM runs",
    "two clusters, one VPC",
    "node_name_reused",
];

/// Runs every safety scenario on `bed`, in order.
pub async fn all(bed: &mut crate::bed::Bed, progress: &(dyn Fn(&str) + Sync)) -> Vec<SafetyRow> {
    progress(&format!("safety on {}: nodes join, then the webhook and the operators", bed.config.cloud));
    bed.join(bed.config.nodes).await;
    tokio::task::block_in_place(|| bed.start_webhook());
    bed.start_operators();
    #[allow(unused_mut)]
    let mut rows = Vec::new();
    // Each scenario file adds its call here, in SCENARIOS order:
    // rows.push(<file>::run(bed, progress).await);
    rows.push(hostile_agent::run(bed, progress).await);
    rows.push(lost_del::run(bed, progress).await);
    // Before the scenarios that fill node ENI slots: on ECS the other CNI needs one free.
    rows.push(foreign_ips::run(bed, progress).await);
    rows.push(node_deleted_vm_runs::run(bed, progress).await);
    rows.push(two_clusters::run(bed, progress).await);
    // Last: it replaces a node's VM.
    rows.push(node_name_reused::run(bed, progress).await);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_is_clean_only_when_every_must_be_zero_count_is() {
        let mut row = SafetyRow::new("x");
        row.leaked_ips_freed = 3;
        assert!(row.clean());
        row.foreign_ips_taken = 1;
        assert!(!row.clean());
        let text = table("## t", &[row]);
        assert_eq!(text.lines().count(), 4);
        assert!(text.contains("| x "));
    }
}
