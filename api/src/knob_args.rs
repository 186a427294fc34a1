//! The pool knobs as command-line flags (feature `cli`), one definition for
//! every binary that takes them.

use crate::PoolKnobs;

/// Pool knobs as flags: `simulate` gives them to every simulated node; the
/// agent writes them into its node's ENINode when it registers it.
#[derive(Debug, clap::Args, Clone)]
pub struct KnobArgs {
    /// Free IPs to keep ready on every node for new pods.
    #[arg(long, env = "ENI_IPAM_PRE_ALLOCATE", default_value_t = PoolKnobs::DEFAULT_PRE_ALLOCATE)]
    pub pre_allocate: u32,
    /// Every node's pool grows to at least this many IPs at once.
    #[arg(long, env = "ENI_IPAM_MIN_ALLOCATE", default_value_t = 0)]
    pub min_allocate: u32,
    /// No node's pool grows beyond this many IPs (0: only the instance limits).
    #[arg(long, env = "ENI_IPAM_MAX_ALLOCATE", default_value_t = 0)]
    pub max_allocate: u32,
    /// Extra IPs taken when allocating anyway, if the ENI being filled has room.
    #[arg(long, env = "ENI_IPAM_MAX_ABOVE_WATERMARK", default_value_t = 0)]
    pub max_above_watermark: u32,
    /// First ENI device index whose IPs pods may use (default: aws 0, i.e. the
    /// primary ENI's secondary IPs too; alibaba 1).
    #[arg(long, env = "ENI_IPAM_FIRST_INTERFACE_INDEX")]
    pub first_interface_index: Option<u32>,
}

impl KnobArgs {
    /// The knobs.
    pub fn knobs(&self) -> PoolKnobs {
        PoolKnobs {
            pre_allocate: self.pre_allocate,
            min_allocate: self.min_allocate,
            max_allocate: self.max_allocate,
            max_above_watermark: self.max_above_watermark,
        }
    }
}
