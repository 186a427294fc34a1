//! The operator's memory and resync cost at fleet scale, apart from the fake
//! cloud: heap bytes counted by this binary's allocator. `cargo bench -p
//! eni-ipam-operator --bench footprint` measures 1,000 / 5,000 / 20,000 nodes at
//! 17.5 pool IPs a node (20,000 nodes = 350,000 IPs); `cargo test --bench
//! footprint` runs 2,000 nodes once and checks the claims.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use eni_ipam_operator::simulate::footprint::{self, HeapProbe};

/// The system allocator, counting what is held and the most held.
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now =
                    CURRENT.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size - layout.size();
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

struct Probe;

impl HeapProbe for Probe {
    fn current(&self) -> usize {
        CURRENT.load(Ordering::Relaxed)
    }
    fn peak(&self) -> usize {
        PEAK.load(Ordering::Relaxed)
    }
    fn reset_peak(&self) {
        PEAK.store(CURRENT.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let sizes: &[u32] = if benching { &[1_000, 5_000, 20_000] } else { &[2_000] };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    println!(
        "{:>7} {:>9} {:>7} {:>6} {:>8} {:>13} {:>9} {:>10} {:>10} {:>10} {:>9} {:>10}",
        "nodes",
        "pool IPs",
        "ENIs",
        "calls",
        "expected",
        "resync CPU ms",
        "heap MiB",
        "peak MiB",
        "instances",
        "ENINodes",
        "Nodes",
        "cloud MiB"
    );
    let mut rows = Vec::new();
    for &nodes in sizes {
        let f = runtime.block_on(footprint::measure(nodes, 17.5, &Probe)).expect("the footprint run");
        println!(
            "{:>7} {:>9} {:>7} {:>6} {:>8} {:>13.1} {:>9.1} {:>10.1} {:>10.1} {:>10.1} {:>9.1} {:>10.1}",
            f.nodes,
            f.pool_ips,
            f.enis,
            f.resync_calls,
            f.expected_calls,
            f.resync_cpu_ms,
            f.operator_heap_mib,
            f.operator_peak_heap_mib,
            f.instances_cache_mib,
            f.eninode_cache_mib,
            f.node_cache_mib,
            f.cloud_heap_mib
        );
        assert_eq!(f.resync_calls, f.expected_calls, "full resync calls == ceil(ENIs / page size)");
        assert_eq!(f.enis, u64::from(nodes), "one ENI a node was listed");
        assert!(f.operator_heap_mib > 0.0 && f.operator_peak_heap_mib >= f.operator_heap_mib);
        rows.push(f);
    }
    if benching {
        let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
        std::fs::create_dir_all(&out).expect("target/bench");
        let json = serde_json::to_string_pretty(&rows).expect("rows serialize");
        std::fs::write(out.join("footprint.json"), json + "\n").expect("footprint.json");
        println!("wrote target/bench/footprint.json");
    }
}
