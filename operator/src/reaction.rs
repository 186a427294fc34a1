//! What the executor does after a cloud call failed. Pure: the executor asks,
//! then acts on the answer.

use eni_ipam_api::SubnetId;
use eni_ipam_cloud::ErrorClass;

use crate::planner::Action;

/// What converging a node does after one of its actions failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reaction {
    /// The cache was stale or another writer raced us: re-plan on the fresh listing.
    Replan,
    /// The subnet has no address left: believe the cloud until the next subnet
    /// listing (the plan then chooses another subnet), and re-plan.
    SubnetFull(SubnetId),
    /// Re-planning does not fix it: end the pass (the fleet requeues the node).
    Stop,
}

/// The reaction to `class` on `action`; `eni_subnet` is the subnet of the action's
/// ENI (for an assign, whose error names the ENI, not the subnet).
pub fn reaction(class: ErrorClass, action: &Action, eni_subnet: Option<&SubnetId>) -> Reaction {
    match class {
        ErrorClass::Quota | ErrorClass::NotFound | ErrorClass::InvalidState => Reaction::Replan,
        ErrorClass::SubnetFull => {
            let subnet = match action {
                Action::CreateEni { subnet, .. } => Some(subnet),
                Action::Assign { .. } | Action::Release { .. } => eni_subnet,
            };
            subnet.map_or(Reaction::Replan, |s| Reaction::SubnetFull(s.clone()))
        }
        _ => Reaction::Stop,
    }
}

/// Whether a failure whose reaction is [`Reaction::Stop`] is re-planned at once instead:
/// the first 5xx of a node's converge is (the instance was listed again after it, and a
/// requeue's backoff would cost the node its whole chain of calls again, an ENI's
/// attach wait included); a second one ends the pass, and no other class is.
pub fn replan_once(class: ErrorClass, replanned_before: bool) -> bool {
    class == ErrorClass::Transient && !replanned_before
}

/// Where a fresh listing finds an ENI we just created, after attaching it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeenAfterCreate {
    /// Attached (or attaching) to the node's instance.
    OnTheInstance,
    /// Listed, attached to nothing.
    Detached,
    /// Not in the listing: the cloud's listings may not show a new ENI yet.
    NotListed,
}

/// What to do with an ENI we created when attaching it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterAttachFailure {
    /// The attach went through after all: keep it.
    Keep,
    /// Delete it now (it is listed, so a delete really removes it).
    Delete,
    /// Leave it to GC (it carries our tags): a delete now could be answered "not
    /// found", which is taken as done, and the ENI would leak.
    LeaveToGc,
}

/// The decision after a failed attach of an ENI created a moment ago.
pub fn after_attach_failure(class: ErrorClass, seen: SeenAfterCreate) -> AfterAttachFailure {
    match (class, seen) {
        (ErrorClass::Transient | ErrorClass::NotFound, SeenAfterCreate::OnTheInstance) => {
            AfterAttachFailure::Keep
        }
        (_, SeenAfterCreate::NotListed) => AfterAttachFailure::LeaveToGc,
        _ => AfterAttachFailure::Delete,
    }
}

/// Whether the failure calls for a fresh listing before deciding (else the ENI
/// was refused for a reason of its own and is listed: delete it).
pub fn look_before_undoing(class: ErrorClass) -> bool {
    matches!(class, ErrorClass::Transient | ErrorClass::NotFound)
}

#[cfg(test)]
mod tests {
    use eni_ipam_api::EniId;

    use super::*;

    #[test]
    fn only_the_first_5xx_of_a_converge_is_replanned_at_once() {
        // (class, replanned before, replan now)
        let rows = [
            (ErrorClass::Transient, false, true),
            (ErrorClass::Transient, true, false),
            (ErrorClass::Throttled, false, false),
            (ErrorClass::Auth, false, false),
        ];
        for (class, before, want) in rows {
            assert_eq!(replan_once(class, before), want, "{class:?}, replanned before: {before}");
        }
    }

    #[test]
    fn reaction_table() {
        let assign = Action::Assign { eni: EniId::from("eni-1"), count: 2 };
        let create = Action::CreateEni { subnet: SubnetId::from("subnet-b"), device_index: 2, ips: 4 };
        let release = Action::Release { eni: EniId::from("eni-1"), ips: vec![] };
        let a = SubnetId::from("subnet-a");
        let full = |s: &str| Reaction::SubnetFull(SubnetId::from(s));
        // (class, action, the ENI's subnet, reaction, the case)
        let rows: Vec<(ErrorClass, &Action, Option<&SubnetId>, Reaction, &str)> = vec![
            (
                ErrorClass::SubnetFull,
                &assign,
                Some(&a),
                full("subnet-a"),
                "a full subnet on an assign marks the ENI's subnet, not the ENI id",
            ),
            (
                ErrorClass::SubnetFull,
                &create,
                None,
                full("subnet-b"),
                "a full subnet on a create marks the subnet it was made in",
            ),
            (
                ErrorClass::SubnetFull,
                &assign,
                None,
                Reaction::Replan,
                "an ENI gone from the cache: re-plan on the fresh listing",
            ),
            (ErrorClass::Quota, &assign, Some(&a), Reaction::Replan, "an instance limit re-plans"),
            (ErrorClass::NotFound, &release, Some(&a), Reaction::Replan, "a stale cache re-plans"),
            (ErrorClass::InvalidState, &create, None, Reaction::Replan, "a race re-plans"),
            (
                ErrorClass::Throttled,
                &assign,
                Some(&a),
                Reaction::Stop,
                "throttled past the retries ends the pass",
            ),
            (ErrorClass::Transient, &assign, Some(&a), Reaction::Stop, "a 5xx ends the pass"),
            (ErrorClass::Auth, &create, None, Reaction::Stop, "refused credentials end the pass"),
            (ErrorClass::InvalidRequest, &create, None, Reaction::Stop, "a bad request ends the pass"),
        ];
        for (class, action, subnet, want, case) in rows {
            assert_eq!(reaction(class, action, subnet), want, "{case}");
        }
    }

    #[test]
    fn after_attach_failure_table() {
        use AfterAttachFailure::*;
        use SeenAfterCreate::*;
        // (class, what a fresh listing shows, decision, the case)
        let rows = [
            (ErrorClass::Transient, OnTheInstance, Keep, "a timed-out attach that went through is kept"),
            (ErrorClass::Transient, Detached, Delete, "a timed-out attach that did not: deleted"),
            (
                ErrorClass::Transient,
                NotListed,
                LeaveToGc,
                "not listed yet: a delete could be answered not-found and leak it",
            ),
            (
                ErrorClass::NotFound,
                NotListed,
                LeaveToGc,
                "not found right after its create: the listing lags; GC takes it",
            ),
            (ErrorClass::NotFound, Detached, Delete, "not found, but listed now: really deleted"),
            (ErrorClass::NotFound, OnTheInstance, Keep, "not found, yet attached by the time we look: kept"),
            (ErrorClass::Quota, Detached, Delete, "the instance has no slot: deleted"),
            (ErrorClass::InvalidState, NotListed, LeaveToGc, "never deleted blind"),
        ];
        for (class, seen, want, case) in rows {
            assert_eq!(after_attach_failure(class, seen), want, "{case}");
        }
        assert!(look_before_undoing(ErrorClass::NotFound) && look_before_undoing(ErrorClass::Transient));
        assert!(!look_before_undoing(ErrorClass::Quota));
    }
}
