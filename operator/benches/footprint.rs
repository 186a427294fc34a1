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

/// One size in this process: prints its row and returns it.
fn measure(nodes: u32) -> footprint::Footprint {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let f = runtime.block_on(footprint::measure(nodes, 17.5, &Probe)).expect("the footprint run");
    assert_eq!(f.resync_calls, f.expected_calls, "full resync calls == ceil(ENIs / page size)");
    assert_eq!(f.enis, u64::from(nodes), "one ENI a node was listed");
    assert!(f.operator_heap_mib > 0.0 && f.operator_peak_heap_mib >= f.operator_heap_mib);
    f
}

fn header() {
    println!(
        "{:>7} {:>9} {:>7} {:>6} {:>8} {:>13} {:>9} {:>10} {:>10} {:>10} {:>9} {:>10} {:>11}",
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
        "cloud MiB",
        "op RSS MiB"
    );
}

fn row(f: &footprint::Footprint) {
    println!(
        "{:>7} {:>9} {:>7} {:>6} {:>8} {:>13.1} {:>9.1} {:>10.1} {:>10.1} {:>10.1} {:>9.1} {:>10.1} {:>11.1}",
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
        f.cloud_heap_mib,
        f.operator_rss_mib
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Test runners list a bench's tests first (nextest with --all-targets): it has none to list;
    // `scripts/test` runs it once in test mode itself.
    if args.iter().any(|a| a == "--list") {
        return;
    }
    // A child run: one size, its numbers as JSON on stdout.
    if let Some(pos) = args.iter().position(|a| a == "--size") {
        let nodes: u32 = args[pos + 1].parse().expect("--size takes a node count");
        println!("{}", serde_json::to_string(&measure(nodes)).expect("serializes"));
        return;
    }
    header();
    if !args.iter().any(|a| a == "--bench") {
        row(&measure(2_000));
        return;
    }
    // Each size in a fresh process, so one size's freed memory does not hide the next one's RSS.
    let mut rows = Vec::new();
    for nodes in [1_000u32, 5_000, 20_000] {
        let out = std::process::Command::new(std::env::current_exe().expect("this binary"))
            .args(["--size", &nodes.to_string()])
            .output()
            .expect("the child run");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let f: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the child's JSON");
        rows.push(f);
    }
    for f in &rows {
        row(&serde_json::from_value(f.clone()).expect("a footprint"));
    }
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).expect("target/bench");
    let json = serde_json::to_string_pretty(&rows).expect("rows serialize");
    std::fs::write(out.join("footprint.json"), json + "\n").expect("footprint.json");
    println!("wrote target/bench/footprint.json");
}
