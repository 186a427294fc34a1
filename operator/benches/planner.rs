//! The planner over a fleet of 20,000 nodes in mixed states (fresh, partly
//! used, over target), as one bulk resync would replan them. The baseline,
//! measured in the same run, only walks the same snapshots and counts their
//! pools: the ratio says what the decisions cost over touching the data.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use eni_ipam_api::{EniId, PoolKnobs, SubnetId, VpcId, Zone};
use eni_ipam_cloud::{CloudProfile, Subnet};
use eni_ipam_operator::planner::{EniOwner, EniView, NodeSnapshot, PoolIp, SubnetSelector, plan};

const NODES: u32 = 20_000;

fn fleet() -> Vec<NodeSnapshot> {
    let profile = CloudProfile::aws();
    let limits = profile.instance_types["m5.4xlarge"].clone(); // 8 ENIs x 30 IPs
    let subnets: Vec<Subnet> = (0..6)
        .map(|i| Subnet {
            id: SubnetId(format!("subnet-{i}")),
            vpc: VpcId::from("vpc-1"),
            zone: Zone::from(if i % 2 == 0 { "a" } else { "b" }),
            cidr: String::new(),
            free_ips: 10_000 + i * 100,
            tags: BTreeMap::new(),
        })
        .collect();
    (0..NODES)
        .map(|n| {
            // Every third node fresh, every third partly used, every third over target.
            let enis_in_use = n % 3 + 1;
            let per_eni = match n % 3 {
                0 => 0,
                1 => 12,
                _ => 29,
            };
            let mut enis = Vec::new();
            let mut pool = Vec::new();
            for d in 0..enis_in_use {
                let id = EniId(format!("eni-{n}-{d}"));
                enis.push(EniView {
                    id: id.clone(),
                    device_index: d,
                    subnet: SubnetId::from("subnet-0"),
                    secondary_ips: per_eni,
                    in_use: true,
                    owner: if d == 0 { EniOwner::Primary } else { EniOwner::Ours },
                });
                for k in 0..per_eni {
                    let used = (n + k) % 4 == 0;
                    pool.push(PoolIp {
                        ip: Ipv4Addr::from(n * 256 + d * 32 + k),
                        eni: id.clone(),
                        free_since: (!used).then_some(Duration::ZERO),
                        release: None,
                    });
                }
            }
            NodeSnapshot {
                zone: Zone::from(if n % 2 == 0 { "a" } else { "b" }),
                limits: limits.clone(),
                first_interface_index: 0,
                knobs: PoolKnobs {
                    pre_allocate: 16,
                    min_allocate: 0,
                    max_allocate: 0,
                    max_above_watermark: 4,
                },
                enis,
                pool,
                subnets: subnets.clone(),
                selector: SubnetSelector::default(),
                batch: profile.batch,
                release_delay: Duration::from_secs(180),
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let nodes = fleet();
    let now = Duration::from_secs(600);
    let mut group = c.benchmark_group("fleet_of_20000");
    group.sample_size(20);
    group.bench_function("baseline_count_pools", |b| {
        b.iter(|| {
            let used: u32 = nodes.iter().map(|n| black_box(n).used() + n.available()).sum();
            black_box(used)
        })
    });
    group.bench_function("plan_every_node", |b| {
        b.iter(|| {
            let actions: usize = nodes.iter().map(|n| plan(black_box(n), now).actions.len()).sum();
            black_box(actions)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
