//! The pool knobs as command-line flags (feature `cli`), one definition for
//! every binary that takes them.

use crate::{PoolKnobs, PoolOverrides};

/// Pool knobs as flags: `simulate` gives them to every simulated node (unset ones
/// take the built-in defaults); the agent writes the ones set into its node's
/// ENINode, where they win over the cluster-wide knobs.
#[derive(Debug, clap::Args, Clone)]
pub struct KnobArgs {
    /// Free IPs to keep ready on every node for new pods [default: 8].
    #[arg(long, env = "ENI_IPAM_PRE_ALLOCATE")]
    pub pre_allocate: Option<u32>,
    /// Every node's pool grows to at least this many IPs at once [default: 0].
    #[arg(long, env = "ENI_IPAM_MIN_ALLOCATE")]
    pub min_allocate: Option<u32>,
    /// No node's pool grows beyond this many IPs (0: only the instance limits) [default: 0].
    #[arg(long, env = "ENI_IPAM_MAX_ALLOCATE")]
    pub max_allocate: Option<u32>,
    /// Extra IPs taken when allocating anyway, if the ENI being filled has room [default: 0].
    #[arg(long, env = "ENI_IPAM_MAX_ABOVE_WATERMARK")]
    pub max_above_watermark: Option<u32>,
    /// First ENI device index whose IPs pods may use (default: aws 0, i.e. the
    /// primary ENI's secondary IPs too; alibaba 1).
    #[arg(long, env = "ENI_IPAM_FIRST_INTERFACE_INDEX")]
    pub first_interface_index: Option<u32>,
}

impl KnobArgs {
    /// The knobs given, unset ones absent.
    pub fn overrides(&self) -> PoolOverrides {
        PoolOverrides {
            pre_allocate: self.pre_allocate,
            min_allocate: self.min_allocate,
            max_allocate: self.max_allocate,
            max_above_watermark: self.max_above_watermark,
        }
    }

    /// The knobs, unset ones at the built-in defaults.
    pub fn knobs(&self) -> PoolKnobs {
        self.overrides().over(PoolKnobs::default())
    }
}
