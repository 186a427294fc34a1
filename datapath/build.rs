//! Compiles the eBPF programs in `../bpf/` with clang and generates the C layout of the
//! shared header (sizes and field offsets) that `abi.rs`'s test compares with its Rust twin.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

const BPF_SOURCES: &[&str] = &["eni_ipam.bpf.c"];
const HEADER: &str = "eni_ipam.h";

/// One compiled build of the sources.
struct Variant {
    constant: &'static str,
    suffix: &'static str,
    defines: &'static [&'static str],
    doc: &'static str,
}

/// The datapath, and the "next version" only the upgrade test loads: the same programs
/// compiled with `ENI_IPAM_UPGRADE_TEST`, which adds a map (so both the object and its map
/// layout differ, as in a real upgrade).
const VARIANTS: &[Variant] = &[
    Variant { constant: "CURRENT", suffix: "", defines: &[], doc: ": the datapath this build loads" },
    Variant {
        constant: "UPGRADE_TEST_NEXT",
        suffix: "_upgrade_test",
        defines: &["-DENI_IPAM_UPGRADE_TEST"],
        doc: " with `-DENI_IPAM_UPGRADE_TEST`: a next version for the upgrade test only",
    },
];

fn main() {
    // The manifest dir at run time, not compile time: one compiled build script may serve
    // several checkouts of the project that share a target dir.
    let manifest_dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let bpf_dir = Path::new(&manifest_dir).join("../bpf");
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-changed={}", bpf_dir.join(HEADER).display());

    let arch_include = format!("-I/usr/include/{}-linux-gnu", multiarch());
    let header = std::fs::read(bpf_dir.join(HEADER)).expect("read bpf/eni_ipam.h");
    let mut objects = String::new();
    for source in BPF_SOURCES {
        let src = bpf_dir.join(source);
        println!("cargo:rerun-if-changed={}", src.display());
        for variant in VARIANTS {
            let object = out_dir.join(source.replace(".bpf.c", &format!("{}.bpf.o", variant.suffix)));
            run(
                Command::new(&clang)
                    .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror", &arch_include])
                    .args(variant.defines)
                    .arg("-c")
                    .arg(&src)
                    .arg("-o")
                    .arg(&object),
                &clang,
            );
            let preprocessed = capture(
                Command::new(&clang)
                    .args(["-E", "-P", "-target", "bpf", &arch_include])
                    .args(variant.defines)
                    .arg(&src),
                &clang,
            );
            let bytes = std::fs::read(&object).expect("read the compiled eBPF object");
            let mut layout = header.clone();
            layout.extend(variant.defines.join(" ").bytes());
            layout.extend(map_definitions(&preprocessed).bytes());
            objects.push_str(&format!(
                "/// `{source}`{}.\n{}pub static {}: DatapathObject = DatapathObject {{\n    \
                 name: {name:?},\n    bytes: aya::include_bytes_aligned!({object:?}),\n    \
                 version: {version:?},\n    layout: {layout:?},\n}};\n",
                variant.doc,
                if variant.suffix.is_empty() { "" } else { "#[doc(hidden)]\n" },
                variant.constant,
                name = object.file_name().and_then(|n| n.to_str()).expect("object file name"),
                version = short_hash(&bytes),
                layout = short_hash(&layout),
            ));
        }
    }
    std::fs::write(out_dir.join("objects.rs"), objects).expect("write objects.rs into OUT_DIR");

    let probe_src = out_dir.join("c_layout.c");
    let probe_bin = out_dir.join("c_layout");
    std::fs::write(&probe_src, LAYOUT_PROGRAM).expect("write c_layout.c into OUT_DIR");
    run(Command::new(&clang).arg("-I").arg(&bpf_dir).arg(&probe_src).arg("-o").arg(&probe_bin), &clang);
    let output = Command::new(&probe_bin).output().expect("run the generated c_layout program");
    assert!(output.status.success(), "c_layout failed: {}", String::from_utf8_lossy(&output.stderr));
    std::fs::write(out_dir.join("c_layout.rs"), output.stdout).expect("write c_layout.rs into OUT_DIR");
}

/// The map definitions of a preprocessed source (each `struct { ... } name` placed in
/// section `.maps`): with the shared header, what decides whether maps can be shared.
fn map_definitions(preprocessed: &str) -> String {
    let mut definitions = String::new();
    let mut rest = preprocessed;
    while let Some(at) = rest.find("section(\".maps\")") {
        let before = &rest[..at];
        let start = before.rfind("struct {").unwrap_or(0);
        definitions.push_str(&before[start..]);
        rest = &rest[at + 1..];
    }
    definitions
}

/// First 16 hex digits of the SHA-256 of `bytes`: names a pin directory.
fn short_hash(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn capture(command: &mut Command, clang: &str) -> String {
    let output = command.output().unwrap_or_else(|error| panic!("cannot run `{clang}` ({error})"));
    assert!(output.status.success(), "`{command:?}` failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("the preprocessor prints UTF-8")
}

fn multiarch() -> String {
    match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") | Err(_) => "x86_64".to_owned(),
        Ok("aarch64") => "aarch64".to_owned(),
        Ok(other) => other.to_owned(),
    }
}

fn run(command: &mut Command, clang: &str) {
    let status = command.status().unwrap_or_else(|error| {
        panic!(
            "cannot run `{clang}` ({error}): the eBPF datapath is compiled with clang at build time; \
             install it with scripts/install-test-tools (clang llvm libbpf-dev) or set CLANG=/path/to/clang"
        )
    });
    assert!(status.success(), "`{command:?}` failed with {status}; see the compiler output above");
}

/// Prints `pub const` items: sizes and offsets of the structs in eni_ipam.h, and the
/// `struct __sk_buff` fields the perf example needs for `bpftool prog run ctx_in`.
const LAYOUT_PROGRAM: &str = r#"
#include <stdio.h>
#include <stddef.h>
#include <linux/bpf.h>
#include "eni_ipam.h"

#define SIZE(t) printf("pub const SIZEOF_%s: usize = %zu;\n", #t, sizeof(struct t))
#define OFF(t, f) printf("pub const OFFSETOF_%s_%s: usize = %zu;\n", #t, #f, offsetof(struct t, f))

int main(void) {
    SIZE(endpoint_key); OFF(endpoint_key, pod_ip);
    SIZE(endpoint_info);
    OFF(endpoint_info, pod_veth_ifindex); OFF(endpoint_info, eni_ifindex); OFF(endpoint_info, pod_mac);
    OFF(endpoint_info, eni_mac); OFF(endpoint_info, gateway_mac); OFF(endpoint_info, counter_slot);
    SIZE(veth_owner); OFF(veth_owner, pod_ip); OFF(veth_owner, counter_slot);
    SIZE(host_route_key); OFF(host_route_key, prefixlen); OFF(host_route_key, addr);
    SIZE(endpoint_counters);
    OFF(endpoint_counters, tx_packets); OFF(endpoint_counters, tx_bytes); OFF(endpoint_counters, rx_packets);
    OFF(endpoint_counters, rx_bytes); OFF(endpoint_counters, drops);
    SIZE(nat_flow_key); OFF(nat_flow_key, saddr); OFF(nat_flow_key, daddr); OFF(nat_flow_key, sport);
    OFF(nat_flow_key, dport); OFF(nat_flow_key, proto);
    printf("pub const DROP_REASONS: usize = %d;\n", ENI_IPAM_DROP_REASONS);
    printf("pub const DROP_SPOOFED_SOURCE: usize = %d;\n", ENI_IPAM_DROP_SPOOFED_SOURCE);
    printf("pub const DROP_UNKNOWN_VETH: usize = %d;\n", ENI_IPAM_DROP_UNKNOWN_VETH);
    printf("pub const DROP_ARP_SPOOFED: usize = %d;\n", ENI_IPAM_DROP_ARP_SPOOFED);
    printf("pub const DROP_IPV6: usize = %d;\n", ENI_IPAM_DROP_IPV6);
    printf("pub const DROP_NOT_IP: usize = %d;\n", ENI_IPAM_DROP_NOT_IP);
    printf("pub const DROP_MALFORMED: usize = %d;\n", ENI_IPAM_DROP_MALFORMED);
    printf("pub const NAT_FLOWS: usize = %d;\n", ENI_IPAM_NAT_FLOWS);
    printf("pub const MAX_ENDPOINTS: usize = %d;\n", ENI_IPAM_MAX_ENDPOINTS);
    printf("pub const UNATTRIBUTED_SLOT: usize = %d;\n", ENI_IPAM_UNATTRIBUTED_SLOT);
    printf("pub const NAT_MARK: usize = %d;\n", ENI_IPAM_NAT_MARK);
    SIZE(__sk_buff); OFF(__sk_buff, ifindex); OFF(__sk_buff, mark);
    return 0;
}
"#;
