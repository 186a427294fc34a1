//! The allocation state file: every allocation and release is written here,
//! atomically (temp file, fsync, rename, fsync of the directory), before the
//! caller gets an answer. A file that cannot be parsed is renamed aside and
//! reported, never overwritten.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::allocator::{Allocation, AllocationKey};

/// The state format version this agent writes and reads.
pub const STATE_VERSION: u32 = 1;

/// What the agent holds, as persisted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpamState {
    /// Container interface -> its IP.
    pub allocations: BTreeMap<AllocationKey, Allocation>,
    /// IP -> the release counter value when it was last freed (for least-recently-used reuse).
    pub released_at: BTreeMap<String, u64>,
    /// Bumped on every release.
    pub release_counter: u64,
    /// IP -> until when (Unix seconds) it is not handed out again: IPs freed from pods that
    /// went away without a CNI DEL, whose old container may still use the address.
    pub cooling_until: BTreeMap<String, u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StateFile {
    version: u32,
    allocations: Vec<Allocation>,
    #[serde(default)]
    released_at: BTreeMap<String, u64>,
    #[serde(default)]
    release_counter: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    cooling_until: BTreeMap<String, u64>,
}

/// Why the state could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error(
        "state file {path}: {op} failed: {source}; check that the directory exists, is writable and the disk is not full"
    )]
    Io { path: PathBuf, op: &'static str, source: std::io::Error },
    /// The file is not a valid state; it was moved aside.
    #[error(
        "state file {path} is corrupt ({reason}); it was moved to {kept_as} and left untouched. The agent will not start \
         from an empty state on its own, because pods may still hold the addresses in it: repair or restore the file, \
         or delete {kept_as} to start empty (IPs of running pods may then be handed out twice)"
    )]
    Corrupt { path: PathBuf, kept_as: PathBuf, reason: String },
    /// A previous run found the file corrupt and the kept copy is still there.
    #[error(
        "state file {path} was found corrupt earlier and kept as {kept_as}; repair it and move it back to {path}, \
         or delete {kept_as} to start empty"
    )]
    CorruptCopyPending { path: PathBuf, kept_as: PathBuf },
}

/// The state file of one agent.
#[derive(Clone, Debug)]
pub struct StateStore {
    path: PathBuf,
}

impl StateStore {
    /// A store at `path` (its directory must exist).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Where the state lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the state; a missing file is an empty state, unless a corrupt copy is pending.
    pub fn load(&self) -> Result<IpamState, StateError> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(kept_as) = self.pending_corrupt_copy() {
                    return Err(StateError::CorruptCopyPending { path: self.path.clone(), kept_as });
                }
                return Ok(IpamState::default());
            }
            Err(source) => return Err(self.io("read", source)),
        };
        match parse(&bytes) {
            Ok(state) => Ok(state),
            Err(reason) => {
                let kept_as = self.corrupt_name();
                fs::rename(&self.path, &kept_as).map_err(|source| self.io("rename aside", source))?;
                Err(StateError::Corrupt { path: self.path.clone(), kept_as, reason })
            }
        }
    }

    /// Writes the whole state durably: temp file, fsync, rename over the old file, fsync the directory.
    pub fn save(&self, state: &IpamState) -> Result<(), StateError> {
        let file = StateFile {
            version: STATE_VERSION,
            allocations: state.allocations.values().cloned().collect(),
            released_at: state.released_at.clone(),
            release_counter: state.release_counter,
            cooling_until: state.cooling_until.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file).expect("the state always serializes");
        let tmp = self.path.with_extension("tmp");
        let mut out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| self.io("create temp file", e))?;
        out.write_all(&bytes).map_err(|e| self.io("write", e))?;
        out.sync_all().map_err(|e| self.io("fsync", e))?;
        drop(out);
        fs::rename(&tmp, &self.path).map_err(|e| self.io("rename into place", e))?;
        let dir = self.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| self.io("fsync directory", e))?;
        Ok(())
    }

    fn io(&self, op: &'static str, source: std::io::Error) -> StateError {
        StateError::Io { path: self.path.clone(), op, source }
    }

    fn corrupt_prefix(&self) -> String {
        format!("{}.corrupt-", self.path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default())
    }

    fn corrupt_name(&self) -> PathBuf {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let mut n = 0;
        loop {
            let candidate = self.path.with_file_name(format!("{}{stamp}-{n}", self.corrupt_prefix()));
            if !candidate.exists() {
                return candidate;
            }
            n += 1;
        }
    }

    fn pending_corrupt_copy(&self) -> Option<PathBuf> {
        let dir = self.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let prefix = self.corrupt_prefix();
        fs::read_dir(dir)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&prefix)))
    }
}

fn parse(bytes: &[u8]) -> Result<IpamState, String> {
    let file: StateFile = serde_json::from_slice(bytes).map_err(|e| format!("not a state file: {e}"))?;
    if file.version != STATE_VERSION {
        return Err(format!("version {} is not the supported version {STATE_VERSION}", file.version));
    }
    let mut state = IpamState {
        allocations: BTreeMap::new(),
        released_at: file.released_at,
        release_counter: file.release_counter,
        cooling_until: file.cooling_until,
    };
    let mut owners: BTreeMap<String, AllocationKey> = BTreeMap::new();
    for allocation in file.allocations {
        if allocation.ip.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(format!(
                "{} holds {:?}, which is not an IPv4 address",
                allocation.key, allocation.ip
            ));
        }
        if let Some(other) = owners.insert(allocation.ip.clone(), allocation.key.clone()) {
            return Err(format!("{} is held twice, by {other} and by {}", allocation.ip, allocation.key));
        }
        if state.allocations.insert(allocation.key.clone(), allocation).is_some() {
            return Err("one container interface is listed twice".into());
        }
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allocation(container: &str, ip: &str) -> Allocation {
        Allocation {
            key: AllocationKey::new(container, "eth0"),
            ip: ip.into(),
            pod_namespace: "default".into(),
            pod_name: format!("pod-{container}"),
            network: String::new(),
            allocated_at: 0,
            endpoint: None,
        }
    }

    #[test]
    fn save_then_load_round_trips_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("state.json"));
        assert_eq!(store.load().unwrap(), IpamState::default(), "a missing file is an empty state");
        let mut state = IpamState::default();
        for (c, ip) in [("a", "10.0.0.1"), ("b", "10.0.0.2")] {
            let mut a = allocation(c, ip);
            if c == "b" {
                a.endpoint = Some(crate::allocator::PodEndpoint {
                    host_veth: "eni0123456789ab".into(),
                    host_veth_ifindex: 12,
                    pod_mac: "0a:00:00:00:00:02".into(),
                });
            }
            state.allocations.insert(a.key.clone(), a);
        }
        state.released_at.insert("10.0.0.3".into(), 4);
        state.release_counter = 4;
        state.cooling_until.insert("10.0.0.3".into(), 1_900_000_000);
        store.save(&state).unwrap();
        assert_eq!(store.load().unwrap(), state);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["state.json"]);
    }

    #[test]
    fn files_written_before_the_datapath_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let old = r#"{"version":1,"allocations":[{"containerId":"a","ifName":"eth0","ip":"10.0.0.1",
                      "podNamespace":"default","podName":"web"}],"releasedAt":{},"releaseCounter":0}"#;
        fs::write(&path, old).unwrap();
        let state = StateStore::new(&path).load().unwrap();
        let a = &state.allocations[&AllocationKey::new("a", "eth0")];
        assert_eq!((a.ip.as_str(), a.endpoint.as_ref()), ("10.0.0.1", None));
    }

    #[test]
    fn corrupt_files_are_kept_aside_and_reported() {
        let cases: &[(&str, &str)] = &[
            ("not json", "not a state file"),
            ("", "not a state file"),
            (r#"{"version": 9, "allocations": []}"#, "version 9"),
            (r#"{"version": 1, "allocations": [], "extra": 1}"#, "unknown field"),
            (
                r#"{"version":1,"allocations":[{"containerId":"a","ifName":"eth0","ip":"10.0.0.1"},
                   {"containerId":"b","ifName":"eth0","ip":"10.0.0.1"}]}"#,
                "held twice",
            ),
            (
                r#"{"version":1,"allocations":[{"containerId":"a","ifName":"eth0","ip":"bogus"}]}"#,
                "not an IPv4",
            ),
        ];
        for (content, reason_part) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("state.json");
            fs::write(&path, content).unwrap();
            let store = StateStore::new(&path);
            let err = store.load().unwrap_err();
            let StateError::Corrupt { kept_as, reason, .. } = &err else { panic!("{content}: {err}") };
            assert!(reason.contains(reason_part), "{content}: {reason}");
            assert_eq!(fs::read_to_string(kept_as).unwrap(), *content, "the bad file is kept byte for byte");
            assert!(!path.exists());
            assert!(err.to_string().contains("delete"), "says what to do: {err}");
            // The next start does not silently begin empty.
            let again = store.load().unwrap_err();
            assert!(matches!(again, StateError::CorruptCopyPending { .. }), "{again}");
        }
    }

    #[test]
    fn unwritable_directory_is_an_error_naming_the_file() {
        let store = StateStore::new("/nonexistent-eni-ipam-dir/state.json");
        let err = store.save(&IpamState::default()).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-eni-ipam-dir/state.json"), "{err}");
    }
}
