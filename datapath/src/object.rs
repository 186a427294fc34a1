//! The compiled eBPF objects embedded in the crate (built by `build.rs`), each with the two
//! hashes that name its pin directories: `version` (of the object's bytes) for the programs
//! and `layout` (of the shared header and the map definitions) for the maps.

/// One compiled build of `bpf/eni_ipam.bpf.c`.
#[derive(Debug)]
pub struct DatapathObject {
    /// File name of the object, for messages.
    pub name: &'static str,
    pub bytes: &'static [u8],
    /// Hash of the object: programs are pinned under `programs/<version>/`.
    pub version: &'static str,
    /// Hash of the map layout: maps are pinned under `maps/<layout>/`, shared by every
    /// version with the same layout.
    pub layout: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/objects.rs"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upgrade_test_object_differs_in_version_and_layout() {
        assert_eq!(CURRENT.version.len(), 16);
        assert_eq!(CURRENT.layout.len(), 16);
        assert_ne!(CURRENT.version, UPGRADE_TEST_NEXT.version);
        assert_ne!(CURRENT.layout, UPGRADE_TEST_NEXT.layout, "the next object adds a map");
        assert_ne!(CURRENT.bytes, UPGRADE_TEST_NEXT.bytes);
    }
}
