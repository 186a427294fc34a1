//! Device ids (`ip-0` .. `ip-{n-1}`) and the device list sent to kubelet.

use std::collections::BTreeSet;

use crate::proto::deviceplugin::Device;
use crate::proto::{HEALTHY, UNHEALTHY};

const SLOT_PREFIX: &str = "ip-";

/// The id of slot `slot`: `ip-<slot>`. Stable across restarts, so kubelet's
/// checkpoint of which pod holds which id stays valid.
pub fn slot_id(slot: u32) -> String {
    format!("{SLOT_PREFIX}{slot}")
}

/// The slot number of an id this plugin advertises, or `None` for an id it
/// never advertised (other prefix, leading zeros, beyond `max_slots`).
pub fn parse_slot_id(id: &str, max_slots: u32) -> Option<u32> {
    let digits = id.strip_prefix(SLOT_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if digits.len() > 1 && digits.starts_with('0') {
        return None;
    }
    let slot: u32 = digits.parse().ok()?;
    (slot < max_slots).then_some(slot)
}

/// The full device list: every slot below `max_slots`, `Healthy` when in
/// `healthy`, `Unhealthy` otherwise, in slot order.
pub fn device_list(max_slots: u32, healthy: &BTreeSet<u32>) -> Vec<Device> {
    (0..max_slots)
        .map(|slot| Device {
            id: slot_id(slot),
            health: if healthy.contains(&slot) { HEALTHY } else { UNHEALTHY }.to_string(),
            topology: None,
        })
        .collect()
}

/// How many devices of a list are healthy.
pub fn healthy_count(devices: &[Device]) -> usize {
    devices.iter().filter(|device| device.health == HEALTHY).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_foreign_ids_are_refused() {
        for slot in [0, 1, 9, 10, 109] {
            assert_eq!(parse_slot_id(&slot_id(slot), 110), Some(slot));
        }
        for foreign in ["ip-110", "ip-", "ip-01", "ip--1", "ip-1a", "gpu-0", "IP-1", "", "ip-99999999999"] {
            assert_eq!(parse_slot_id(foreign, 110), None, "{foreign:?}");
        }
    }

    #[test]
    fn list_marks_only_the_chosen_slots_healthy() {
        let devices = device_list(4, &BTreeSet::from([1, 3]));
        let shown: Vec<(&str, &str)> = devices.iter().map(|d| (d.id.as_str(), d.health.as_str())).collect();
        assert_eq!(shown, [("ip-0", UNHEALTHY), ("ip-1", HEALTHY), ("ip-2", UNHEALTHY), ("ip-3", HEALTHY)]);
        assert_eq!(healthy_count(&devices), 2);
    }
}
