//! The emulator's starting state, from a JSON file: vSwitches (by a name the
//! file uses), instances launched in them, and detached ENIs.
//!
//! ```json
//! {"vswitches": [{"name": "pods-h", "zone": "cn-hangzhou-h", "cidr": "172.16.0.0/16"}],
//!  "instances": [{"vswitch": "pods-h", "instance_type": "ecs.g7.large", "count": 3}],
//!  "enis": [{"vswitch": "pods-h", "count": 10, "secondary_ips": 2, "tags": {"k": "v"}}]}
//! ```

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use anyhow::{Context, bail};
use eni_ipam_api::{InstanceId, SubnetId, Zone};
use eni_ipam_cloud::CreateEni;
use eni_ipam_cloud::fake::CloudState;
use serde::{Deserialize, Serialize};

/// A seed file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    /// vSwitches.
    #[serde(default)]
    pub vswitches: Vec<SeedVSwitch>,
    /// Instances.
    #[serde(default)]
    pub instances: Vec<SeedInstances>,
    /// Detached ENIs.
    #[serde(default)]
    pub enis: Vec<SeedEnis>,
}

/// One vSwitch.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedVSwitch {
    /// Name the rest of the file refers to it by.
    pub name: String,
    /// Zone.
    pub zone: String,
    /// `a.b.c.d/prefix`.
    pub cidr: String,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// Instances of one type in one vSwitch.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedInstances {
    /// vSwitch name.
    pub vswitch: String,
    /// Type (one of the profile's).
    pub instance_type: String,
    /// How many.
    #[serde(default = "one")]
    pub count: u32,
}

/// Detached ENIs in one vSwitch.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedEnis {
    /// vSwitch name.
    pub vswitch: String,
    /// How many.
    #[serde(default = "one")]
    pub count: u32,
    /// Secondary IPs on each.
    #[serde(default)]
    pub secondary_ips: u32,
    /// Tags on each.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

/// The ids the seed got.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Seeded {
    /// vSwitch name -> id.
    pub vswitches: BTreeMap<String, SubnetId>,
    /// Launched instances, in seed order.
    pub instances: Vec<InstanceId>,
}

fn parse_cidr(text: &str) -> anyhow::Result<(Ipv4Addr, u8)> {
    let (base, prefix) = text.split_once('/').with_context(|| format!("cidr '{text}' has no /prefix"))?;
    let base: Ipv4Addr = base.parse().with_context(|| format!("cidr '{text}': bad address"))?;
    let prefix: u8 = prefix.parse().with_context(|| format!("cidr '{text}': bad prefix"))?;
    if !(8..=29).contains(&prefix) {
        bail!("cidr '{text}': a vSwitch prefix must be /8 to /29");
    }
    Ok((base, prefix))
}

impl Seed {
    /// Applies the seed to an empty state.
    pub fn apply(&self, state: &mut CloudState) -> anyhow::Result<Seeded> {
        let mut seeded = Seeded::default();
        for v in &self.vswitches {
            let (base, prefix) = parse_cidr(&v.cidr).with_context(|| format!("vSwitch '{}'", v.name))?;
            let id = state.add_subnet(Zone::from(v.zone.as_str()), base, prefix, v.tags.clone());
            seeded.vswitches.insert(v.name.clone(), id);
        }
        let lookup = |name: &str| {
            seeded
                .vswitches
                .get(name)
                .cloned()
                .with_context(|| format!("the seed names vSwitch '{name}' but does not define it"))
        };
        for group in &self.instances {
            let subnet = lookup(&group.vswitch)?;
            for _ in 0..group.count {
                let id = state.launch_instance(&group.instance_type, &subnet).map_err(|e| {
                    anyhow::anyhow!("launching a {} in '{}': {e}", group.instance_type, group.vswitch)
                })?;
                seeded.instances.push(id);
            }
        }
        for (n, group) in self.enis.iter().enumerate() {
            let subnet = lookup(&group.vswitch)?;
            for i in 0..group.count {
                let request = CreateEni {
                    subnet: subnet.clone(),
                    security_groups: vec![],
                    secondary_ips: group.secondary_ips,
                    tags: group.tags.clone(),
                    client_token: format!("seed-{n}-{i}"),
                };
                state
                    .create_eni(&request)
                    .map_err(|e| anyhow::anyhow!("seeding an ENI in '{}': {e}", group.vswitch))?;
            }
        }
        Ok(seeded)
    }
}
