//! How many IPs a node lacks or has too many of: pure arithmetic over four
//! numbers, the same shape as Cilium's `calculateNeededIPs` /
//! `calculateExcessIPs` (see the table in `tests.rs` for every knob).

use eni_ipam_api::PoolKnobs;

/// IPs to add so that `pre_allocate` are free, the pool holds at least
/// `min_allocate` and at most `max_allocate` (0 = no limit).
/// `available` counts every IP in the pool (used or not) plus IPs on their way
/// (on an ENI still attaching).
pub fn needed_ips(available: u32, used: u32, knobs: &PoolKnobs) -> u32 {
    let free = i64::from(available) - i64::from(used);
    let mut needed = i64::from(knobs.pre_allocate) - free;
    if knobs.min_allocate > 0 {
        needed = needed.max(i64::from(knobs.min_allocate) - i64::from(available));
    }
    if knobs.max_allocate > 0 && i64::from(available) + needed > i64::from(knobs.max_allocate) {
        needed = i64::from(knobs.max_allocate) - i64::from(available);
    }
    needed.max(0) as u32
}

/// IPs the pool holds beyond `pre_allocate + max_above_watermark` free ones,
/// never taking the pool below `min_allocate` or below what is used; a pool
/// above `max_allocate` is brought back under it.
pub fn excess_ips(available: u32, used: u32, knobs: &PoolKnobs) -> u32 {
    let free = i64::from(available) - i64::from(used);
    let keep_free = i64::from(knobs.pre_allocate) + i64::from(knobs.max_above_watermark);
    let mut excess = free - keep_free;
    excess = excess.min(i64::from(available) - i64::from(knobs.min_allocate));
    if knobs.max_allocate > 0 && available > knobs.max_allocate {
        excess = excess.max(i64::from(available) - i64::from(knobs.max_allocate.max(used)));
    }
    excess.clamp(0, free.max(0)) as u32
}
