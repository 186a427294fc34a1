//! The agent's side of the uninstall handshake (see [`eni_ipam_api::uninstall_mark`]): on
//! every read of its ENINode it arms or disarms, and answers on the ENINode, so that a
//! termination during `helm uninstall` cleans the node and any other termination keeps it.

use std::sync::atomic::{AtomicBool, Ordering};

use eni_ipam_api::ENINode;
use eni_ipam_api::uninstall_mark::{UNINSTALL_ARMED, uninstall_armed, uninstall_requested};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

/// What the agent does after reading its ENINode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArmStep {
    /// Whether a termination from now on cleans the node.
    pub armed: bool,
    /// The answer to write on the ENINode: `Some(true)` set it, `Some(false)` remove it.
    pub answer: Option<bool>,
}

/// The step for an ENINode that does (not) request the uninstall and does (not) carry our
/// answer yet.
pub fn arm_step(requested: bool, answered: bool) -> ArmStep {
    ArmStep { armed: requested, answer: (requested != answered).then_some(requested) }
}

/// Whether this agent cleans its node when terminated; shared by the reporter and `main`.
#[derive(Debug, Default)]
pub struct UninstallArming {
    armed: AtomicBool,
}

impl UninstallArming {
    /// Whether the uninstall was requested on the ENINode when it was last read.
    pub fn is_armed(&self) -> bool {
        self.armed.load(Ordering::SeqCst)
    }

    /// Arms or disarms from a fresh read of `eninode`, and writes the answer when it changes.
    pub async fn observe(&self, api: &Api<ENINode>, eninode: &ENINode) -> Result<(), kube::Error> {
        let annotations = eninode.annotations();
        let step = arm_step(uninstall_requested(annotations), uninstall_armed(annotations));
        let node = eninode.name_any();
        if self.armed.swap(step.armed, Ordering::SeqCst) != step.armed {
            if step.armed {
                tracing::warn!(%node, "uninstall requested: this agent removes its datapath, CNI configuration and state from the node when it is terminated");
            } else {
                tracing::info!(%node, "uninstall request withdrawn: a termination keeps everything again");
            }
        }
        if let Some(answer) = step.answer {
            let value = answer.then_some("true");
            let patch = json!({"metadata": {"annotations": {UNINSTALL_ARMED: value}}});
            api.patch(&node, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_arms_only_while_the_uninstall_is_requested_and_answers_once() {
        // (requested, answered already) -> (armed, answer to write)
        let table = [
            ((false, false), ArmStep { armed: false, answer: None }),
            ((true, false), ArmStep { armed: true, answer: Some(true) }),
            ((true, true), ArmStep { armed: true, answer: None }),
            ((false, true), ArmStep { armed: false, answer: Some(false) }),
        ];
        for ((requested, answered), want) in table {
            assert_eq!(arm_step(requested, answered), want, "requested {requested}, answered {answered}");
        }
    }
}
