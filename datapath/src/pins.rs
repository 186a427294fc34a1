//! The pin directory's layout, versioned so that two builds of the datapath never open each
//! other's programs or maps:
//! - `programs/<object version>/<program>`: the programs of one build,
//! - `maps/<layout>/<map>`: maps, shared by every build with the same map layout,
//! - `links/<hook>-<ifindex>`: TCX links (pinned; removing the pin detaches),
//! - `filters/<hook>-<ifindex>/`: an empty directory recording a netlink (`tc filter`)
//!   attachment, which the kernel keeps without any pin,
//! - `clsact/<ifindex>/`: an empty directory recording a `clsact` qdisc the datapath added.
//!
//! Anything else under `programs/` and `maps/` (another build's pins, or the flat
//! `programs/<program>` and `maps/<map>` of releases before versioned pins) is stale: it is
//! removed once the current build's programs are attached in its place.

use std::path::{Path, PathBuf};

use crate::{DatapathError, DatapathObject};

/// The sub-directories of the pin directory, in the order they are taken down: attachments
/// first, so that no packet runs a program whose pins are gone.
pub(crate) const SUBDIRS: [&str; 5] = ["links", "filters", "clsact", "programs", "maps"];

#[derive(Clone, Debug)]
pub(crate) struct PinLayout {
    root: PathBuf,
}

impl PinLayout {
    pub(crate) fn new(root: &Path) -> Self {
        Self { root: root.to_owned() }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn programs(&self, object: &DatapathObject) -> PathBuf {
        self.root.join("programs").join(object.version)
    }

    pub(crate) fn maps(&self, object: &DatapathObject) -> PathBuf {
        self.root.join("maps").join(object.layout)
    }

    pub(crate) fn links(&self) -> PathBuf {
        self.root.join("links")
    }

    pub(crate) fn filters(&self) -> PathBuf {
        self.root.join("filters")
    }

    pub(crate) fn clsact(&self) -> PathBuf {
        self.root.join("clsact")
    }

    /// Creates the directories `object` pins into.
    pub(crate) fn create(&self, object: &DatapathObject) -> Result<(), DatapathError> {
        for dir in [self.programs(object), self.maps(object), self.links(), self.filters(), self.clsact()] {
            std::fs::create_dir_all(&dir)
                .map_err(|source| DatapathError::PinDirectory { path: dir, source })?;
        }
        Ok(())
    }

    /// Program and map pins that are not `object`'s (other builds, older layouts).
    pub(crate) fn stale(&self, object: &DatapathObject) -> Vec<PathBuf> {
        let mut stale = Vec::new();
        for (sub, current) in [("programs", object.version), ("maps", object.layout)] {
            let Ok(entries) = std::fs::read_dir(self.root.join(sub)) else {
                continue;
            };
            stale.extend(
                entries.filter_map(Result::ok).filter(|e| e.file_name() != current).map(|e| e.path()),
            );
        }
        stale.sort();
        stale
    }
}

/// Removes a pin or a directory of pins (removing a pin releases the kernel object once
/// nothing else holds it). Absent is success.
pub(crate) fn remove_pin_tree(path: &Path) -> Result<(), DatapathError> {
    let result = if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => {
            Err(DatapathError::Pin { pin: path.to_owned(), action: "remove", source: Box::new(source) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OBJECT: DatapathObject = DatapathObject { name: "t.o", bytes: &[], version: "v2", layout: "l2" };

    #[test]
    fn other_versions_and_flat_pins_are_stale() {
        let dir = tempfile::tempdir().unwrap();
        let layout = PinLayout::new(dir.path());
        layout.create(&OBJECT).unwrap();
        assert_eq!(layout.stale(&OBJECT), Vec::<PathBuf>::new());
        std::fs::create_dir_all(dir.path().join("programs/v1")).unwrap();
        std::fs::create_dir_all(dir.path().join("maps/l1")).unwrap();
        std::fs::write(dir.path().join("programs/from_pod"), b"").unwrap();
        std::fs::write(dir.path().join("maps/endpoints"), b"").unwrap();
        let stale = layout.stale(&OBJECT);
        assert_eq!(
            stale,
            ["maps/endpoints", "maps/l1", "programs/from_pod", "programs/v1"].map(|p| dir.path().join(p))
        );
        for path in &stale {
            remove_pin_tree(path).unwrap();
            remove_pin_tree(path).unwrap();
        }
        assert_eq!(layout.stale(&OBJECT), Vec::<PathBuf>::new());
        assert!(layout.programs(&OBJECT).is_dir() && layout.maps(&OBJECT).is_dir());
    }
}
