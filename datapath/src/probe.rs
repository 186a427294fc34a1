//! Checks that the kernel and environment have what the datapath needs, before loading,
//! so that a failure names the missing feature instead of surfacing as a verifier or
//! syscall error.

use std::{
    ffi::CString,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

/// The oldest kernel the datapath runs on (attached through netlink): `bpf_redirect_peer`
/// arrived in 5.10, with LPM tries and LRU hashes long before it.
pub const MIN_KERNEL: (u32, u32) = (5, 10);

/// TCX (pinnable TC links, `--tc-attach=tcx`) arrived in Linux 6.6.
pub const TCX_KERNEL: (u32, u32) = (6, 6);

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const CAP_NET_ADMIN: u32 = 12;
const CAP_BPF: u32 = 39;
const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The one thing the datapath needs that is missing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MissingFeature {
    #[error(
        "bpffs is not mounted at {path} (found filesystem type {fs_type:#x}); mount it with \
         `mount -t bpf bpf /sys/fs/bpf` (scripts/test does) or choose a pin directory on bpffs"
    )]
    BpffsNotMounted { path: PathBuf, fs_type: i64 },

    #[error("capability {name} is missing: run the agent as root or grant CAP_BPF and CAP_NET_ADMIN")]
    Capability { name: &'static str },

    #[error("kernel BTF ({VMLINUX_BTF}) is missing: use a kernel built with CONFIG_DEBUG_INFO_BTF=y")]
    Btf,

    #[error(
        "the eBPF datapath needs Linux >= {}.{} (bpf_redirect_peer), this kernel is {release}: \
         upgrade the node's kernel or run the agent with --datapath=none",
        MIN_KERNEL.0,
        MIN_KERNEL.1
    )]
    Kernel { release: String },

    #[error(
        "TCX links need Linux >= {}.{}, this kernel is {release}: use --tc-attach=netlink (or auto) \
         or upgrade the node's kernel",
        TCX_KERNEL.0,
        TCX_KERNEL.1
    )]
    Tcx { release: String },
}

impl MissingFeature {
    pub(crate) fn tcx() -> Self {
        MissingFeature::Tcx { release: kernel_release() }
    }
}

/// Whether this kernel attaches TC programs as TCX links.
pub fn tcx_supported() -> bool {
    kernel_at_least(&kernel_release(), TCX_KERNEL)
}

/// Checks capabilities, bpffs at `pin_dir` (or its nearest existing ancestor), BTF and the
/// kernel version ([`MIN_KERNEL`]; TCX is checked when the attach mode is resolved).
pub fn probe(pin_dir: &Path) -> Result<(), MissingFeature> {
    for (cap, name) in [(CAP_BPF, "CAP_BPF"), (CAP_NET_ADMIN, "CAP_NET_ADMIN")] {
        if !has_effective_capability(cap) {
            return Err(MissingFeature::Capability { name });
        }
    }
    check_bpffs(pin_dir)?;
    if !Path::new(VMLINUX_BTF).exists() {
        return Err(MissingFeature::Btf);
    }
    let release = kernel_release();
    if !kernel_at_least(&release, MIN_KERNEL) {
        return Err(MissingFeature::Kernel { release });
    }
    Ok(())
}

fn check_bpffs(pin_dir: &Path) -> Result<(), MissingFeature> {
    let existing = pin_dir.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    let fs_type = filesystem_type(existing);
    if fs_type == BPF_FS_MAGIC {
        Ok(())
    } else {
        Err(MissingFeature::BpffsNotMounted { path: pin_dir.to_owned(), fs_type })
    }
}

fn filesystem_type(path: &Path) -> i64 {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return 0;
    };
    // SAFETY: statfs writes into the zeroed struct we own; the path is NUL-terminated.
    unsafe {
        let mut stat: libc::statfs = std::mem::zeroed();
        if libc::statfs(c_path.as_ptr(), &mut stat) != 0 {
            return 0;
        }
        #[allow(clippy::unnecessary_cast)]
        let fs_type = stat.f_type as i64;
        fs_type
    }
}

fn has_effective_capability(cap: u32) -> bool {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = Header { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [Data::default(); 2];
    // SAFETY: capget with version 3 fills exactly two Data structs.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if rc != 0 {
        return false;
    }
    data[(cap / 32) as usize].effective & (1 << (cap % 32)) != 0
}

fn kernel_release() -> String {
    // SAFETY: uname fills the zeroed struct we own with NUL-terminated strings.
    unsafe {
        let mut name: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut name) != 0 {
            return "unknown".to_owned();
        }
        std::ffi::CStr::from_ptr(name.release.as_ptr()).to_string_lossy().into_owned()
    }
}

fn kernel_at_least(release: &str, (major, minor): (u32, u32)) -> bool {
    let mut numbers = release.split(|c: char| !c.is_ascii_digit()).map(|n| n.parse::<u32>().ok());
    match (numbers.next().flatten(), numbers.next().flatten()) {
        (Some(found_major), Some(found_minor)) => (found_major, found_minor) >= (major, minor),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_compare_by_major_then_minor() {
        assert!(kernel_at_least("6.18.44-fc-v595", (6, 6)));
        assert!(kernel_at_least("6.6.0", (6, 6)));
        assert!(!kernel_at_least("6.5.13-generic", (6, 6)));
        assert!(!kernel_at_least("5.15.0", (6, 6)));
        assert!(kernel_at_least("5.10.238-231.953.amzn2.x86_64", MIN_KERNEL));
        assert!(!kernel_at_least("5.4.0-1", MIN_KERNEL));
        assert!(!kernel_at_least("garbage", (6, 6)));
    }

    #[test]
    fn a_tmpfs_directory_is_not_bpffs() {
        let err = check_bpffs(Path::new("/proc/self")).unwrap_err();
        assert!(err.to_string().contains("bpffs is not mounted at /proc/self"), "{err}");
    }
}
