//! Loading where the kernel or environment lacks a feature names the missing feature.

use eni_ipam_netns_testbed as testbed;

use eni_ipam_datapath::{Datapath, DatapathError, MissingFeature, probe};

#[test]
fn a_pin_dir_outside_bpffs_is_reported_as_bpffs_not_mounted() {
    testbed::require_root_and_bpffs();
    let dir = std::env::temp_dir().join(format!("eni-ipam-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let missing = probe(&dir).unwrap_err();
    assert!(matches!(missing, MissingFeature::BpffsNotMounted { .. }), "{missing:?}");
    let message = Datapath::load_or_adopt(&dir).unwrap_err().to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(message.contains(&format!("bpffs is not mounted at {}", dir.display())), "{message}");
}

#[test]
fn bpffs_with_root_passes_the_probe() {
    testbed::require_root_and_bpffs();
    probe(std::path::Path::new("/sys/fs/bpf/eni-ipam-probe-not-created")).unwrap();
}

#[test]
fn load_errors_name_the_missing_feature() {
    testbed::require_root_and_bpffs();
    let err = Datapath::load_or_adopt("/proc/eni-ipam").unwrap_err();
    assert!(matches!(err, DatapathError::Unsupported(MissingFeature::BpffsNotMounted { .. })), "{err:?}");
}
