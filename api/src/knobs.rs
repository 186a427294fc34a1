//! The pool knobs a cluster admin tunes, and the checks that reject
//! combinations no node could ever satisfy.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How many IPs the operator keeps on a node beyond what pods use.
///
/// Semantics (all counts are IPs in the node's pool):
/// - `pre_allocate`: free IPs to keep ready for new pods;
/// - `min_allocate`: the pool never shrinks below this, and grows to it at once;
/// - `max_allocate`: the pool never grows beyond this (0 = no limit but the
///   instance's own);
/// - `max_above_watermark`: when the operator must allocate anyway, it takes up
///   to this many extra IPs if the ENI it is filling has room, so the next pods
///   need no cloud call; it never opens a new ENI just for these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolKnobs {
    /// Free IPs to keep ready for new pods.
    #[serde(default = "default_pre_allocate")]
    pub pre_allocate: u32,
    /// The pool grows to at least this many IPs and never shrinks below it.
    #[serde(default)]
    pub min_allocate: u32,
    /// The pool never grows beyond this many IPs; 0 means no limit.
    #[serde(default)]
    pub max_allocate: u32,
    /// Extra IPs taken when allocating anyway, if the ENI being filled has room.
    #[serde(default)]
    pub max_above_watermark: u32,
}

fn default_pre_allocate() -> u32 {
    PoolKnobs::DEFAULT_PRE_ALLOCATE
}

impl Default for PoolKnobs {
    fn default() -> Self {
        Self {
            pre_allocate: Self::DEFAULT_PRE_ALLOCATE,
            min_allocate: 0,
            max_allocate: 0,
            max_above_watermark: 0,
        }
    }
}

/// Pool knobs as one layer sets them (an ENINode's `spec.ipam`, the cluster-wide
/// default, a node-pool override): a field left unset takes the value of the layer below.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolOverrides {
    /// Free IPs to keep ready for new pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_allocate: Option<u32>,
    /// The pool grows to at least this many IPs and never shrinks below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_allocate: Option<u32>,
    /// The pool never grows beyond this many IPs; 0 means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_allocate: Option<u32>,
    /// Extra IPs taken when allocating anyway, if the ENI being filled has room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_above_watermark: Option<u32>,
}

impl PoolOverrides {
    /// Every knob set to `knobs`.
    pub fn all(knobs: PoolKnobs) -> Self {
        Self {
            pre_allocate: Some(knobs.pre_allocate),
            min_allocate: Some(knobs.min_allocate),
            max_allocate: Some(knobs.max_allocate),
            max_above_watermark: Some(knobs.max_above_watermark),
        }
    }

    /// No knob set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// `base` with the knobs this layer sets.
    pub fn over(&self, base: PoolKnobs) -> PoolKnobs {
        PoolKnobs {
            pre_allocate: self.pre_allocate.unwrap_or(base.pre_allocate),
            min_allocate: self.min_allocate.unwrap_or(base.min_allocate),
            max_allocate: self.max_allocate.unwrap_or(base.max_allocate),
            max_above_watermark: self.max_above_watermark.unwrap_or(base.max_above_watermark),
        }
    }
}

/// A knob combination that no node can satisfy, in words an admin can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KnobError {
    /// min-allocate above max-allocate.
    #[error(
        "min-allocate ({min}) is greater than max-allocate ({max}): lower min-allocate or raise max-allocate (0 means no limit)"
    )]
    MinAboveMax {
        /// The configured min-allocate.
        min: u32,
        /// The configured max-allocate.
        max: u32,
    },
    /// pre-allocate above max-allocate.
    #[error(
        "pre-allocate ({pre}) is greater than max-allocate ({max}): lower pre-allocate or raise max-allocate (0 means no limit)"
    )]
    PreAboveMax {
        /// The configured pre-allocate.
        pre: u32,
        /// The configured max-allocate.
        max: u32,
    },
    /// A knob above what the instance type can ever hold.
    #[error(
        "{knob} ({value}) is above what instance type {instance_type} can hold ({capacity} pod IPs): lower {knob} or pick a larger instance type"
    )]
    AboveCapacity {
        /// Which knob (`pre-allocate`, `min-allocate`).
        knob: &'static str,
        /// Its value.
        value: u32,
        /// The instance type.
        instance_type: String,
        /// Pod IPs the instance type can hold.
        capacity: u32,
    },
}

impl PoolKnobs {
    /// Cilium's default, and ours: enough for a burst of pods without a cloud call.
    pub const DEFAULT_PRE_ALLOCATE: u32 = 8;

    /// Checks that hold whatever the instance type.
    pub fn validate(&self) -> Result<(), KnobError> {
        if self.max_allocate > 0 && self.min_allocate > self.max_allocate {
            return Err(KnobError::MinAboveMax { min: self.min_allocate, max: self.max_allocate });
        }
        if self.max_allocate > 0 && self.pre_allocate > self.max_allocate {
            return Err(KnobError::PreAboveMax { pre: self.pre_allocate, max: self.max_allocate });
        }
        Ok(())
    }

    /// Checks against the pod IPs an instance type can hold at most.
    pub fn validate_for_capacity(&self, instance_type: &str, capacity: u32) -> Result<(), KnobError> {
        self.validate()?;
        for (knob, value) in [("pre-allocate", self.pre_allocate), ("min-allocate", self.min_allocate)] {
            if value > capacity {
                return Err(KnobError::AboveCapacity {
                    knob,
                    value,
                    instance_type: instance_type.to_owned(),
                    capacity,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knobs(pre: u32, min: u32, max: u32) -> PoolKnobs {
        PoolKnobs { pre_allocate: pre, min_allocate: min, max_allocate: max, max_above_watermark: 0 }
    }

    #[test]
    fn min_above_max_is_rejected_and_named() {
        let err = knobs(1, 10, 5).validate().unwrap_err();
        assert_eq!(err, KnobError::MinAboveMax { min: 10, max: 5 });
        assert!(err.to_string().contains("lower min-allocate"));
    }

    #[test]
    fn max_zero_means_no_limit() {
        assert_eq!(knobs(100, 50, 0).validate(), Ok(()));
    }

    #[test]
    fn pre_above_max_is_rejected() {
        assert_eq!(knobs(9, 0, 8).validate(), Err(KnobError::PreAboveMax { pre: 9, max: 8 }));
    }

    #[test]
    fn capacity_checks_name_the_instance_type() {
        let err = knobs(30, 0, 0).validate_for_capacity("m5.large", 27).unwrap_err();
        assert!(err.to_string().contains("m5.large"), "{err}");
        assert!(err.to_string().contains("pre-allocate (30)"), "{err}");
        assert_eq!(knobs(27, 27, 0).validate_for_capacity("m5.large", 27), Ok(()));
        assert!(knobs(1, 28, 0).validate_for_capacity("m5.large", 27).is_err());
    }

    #[test]
    fn overrides_replace_only_what_they_set() {
        let layer = PoolOverrides { min_allocate: Some(4), ..Default::default() };
        assert_eq!(layer.over(knobs(8, 0, 20)), knobs(8, 4, 20));
        assert_eq!(PoolOverrides::all(knobs(1, 2, 3)).over(PoolKnobs::default()), knobs(1, 2, 3));
        assert!(PoolOverrides::default().is_empty() && !layer.is_empty());
        assert_eq!(serde_json::to_value(layer).unwrap(), serde_json::json!({"minAllocate": 4}));
    }

    #[test]
    fn missing_fields_take_defaults() {
        let k: PoolKnobs = serde_json::from_str("{}").unwrap();
        assert_eq!(k, PoolKnobs::default());
    }
}
