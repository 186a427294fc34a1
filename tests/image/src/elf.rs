//! How an x86_64 ELF executable is linked, read from its program headers: a
//! dynamic one names a program interpreter (PT_INTERP, the host's ld.so) and the
//! shared libraries it needs (DT_NEEDED); a static one (static-pie included) has
//! neither, so it starts whatever the host's libc is.

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;

/// What an executable asks of the system that runs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Linkage {
    /// The program interpreter (e.g. `/lib64/ld-linux-x86-64.so.2`), if any.
    pub interpreter: Option<String>,
    /// The shared libraries it needs (e.g. `libc.so.6`).
    pub needed: Vec<String>,
}

impl Linkage {
    /// Neither an interpreter nor a shared library: runs on any Linux of its architecture.
    pub fn is_static(&self) -> bool {
        self.interpreter.is_none() && self.needed.is_empty()
    }
}

struct Segment {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

fn bytes_at(file: &[u8], offset: u64, len: u64) -> Result<&[u8], String> {
    let start = usize::try_from(offset).map_err(|_| format!("offset {offset} out of range"))?;
    let end = start.checked_add(usize::try_from(len).map_err(|_| format!("length {len} out of range"))?);
    end.and_then(|end| file.get(start..end))
        .ok_or_else(|| format!("truncated: {len} bytes at {offset} past the end ({} bytes)", file.len()))
}

fn u16_at(file: &[u8], offset: u64) -> Result<u16, String> {
    Ok(u16::from_le_bytes(bytes_at(file, offset, 2)?.try_into().expect("2 bytes")))
}

fn u32_at(file: &[u8], offset: u64) -> Result<u32, String> {
    Ok(u32::from_le_bytes(bytes_at(file, offset, 4)?.try_into().expect("4 bytes")))
}

fn u64_at(file: &[u8], offset: u64) -> Result<u64, String> {
    Ok(u64::from_le_bytes(bytes_at(file, offset, 8)?.try_into().expect("8 bytes")))
}

fn c_string(file: &[u8], offset: u64) -> Result<String, String> {
    let rest = usize::try_from(offset)
        .ok()
        .and_then(|start| file.get(start..))
        .ok_or_else(|| format!("truncated: a string at {offset} past the end ({} bytes)", file.len()))?;
    let end = rest.iter().position(|b| *b == 0).ok_or("a string without its NUL")?;
    Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// The file offset of virtual address `addr`, through the PT_LOAD segment holding it.
fn file_offset(segments: &[Segment], addr: u64) -> Result<u64, String> {
    segments
        .iter()
        .find(|s| s.kind == PT_LOAD && addr >= s.vaddr && addr - s.vaddr < s.filesz)
        .map(|s| addr - s.vaddr + s.offset)
        .ok_or_else(|| format!("address {addr:#x} is in no loaded segment"))
}

/// Reads the linkage of a 64-bit little-endian ELF file; `Err` says what is wrong with it.
pub fn linkage(file: &[u8]) -> Result<Linkage, String> {
    if file.get(..4) != Some(b"\x7fELF") {
        return Err("not an ELF file".into());
    }
    if file.get(4..6) != Some(&[2, 1]) {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let phoff = u64_at(file, 0x20)?;
    let phentsize = u64::from(u16_at(file, 0x36)?);
    let phnum = u64::from(u16_at(file, 0x38)?);
    let mut segments = Vec::new();
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        segments.push(Segment {
            kind: u32_at(file, at)?,
            offset: u64_at(file, at + 8)?,
            vaddr: u64_at(file, at + 16)?,
            filesz: u64_at(file, at + 32)?,
        });
    }
    let interpreter = match segments.iter().find(|s| s.kind == PT_INTERP) {
        Some(s) => Some(c_string(bytes_at(file, s.offset, s.filesz)?, 0)?),
        None => None,
    };
    let mut needed = Vec::new();
    if let Some(dynamic) = segments.iter().find(|s| s.kind == PT_DYNAMIC) {
        let mut names = Vec::new();
        let mut strtab = None;
        for entry in 0..dynamic.filesz / 16 {
            let at = dynamic.offset + entry * 16;
            match (u64_at(file, at)?, u64_at(file, at + 8)?) {
                (DT_NULL, _) => break,
                (DT_NEEDED, name) => names.push(name),
                (DT_STRTAB, addr) => strtab = Some(addr),
                _ => {}
            }
        }
        if !names.is_empty() {
            let strtab = file_offset(&segments, strtab.ok_or("DT_NEEDED without a DT_STRTAB")?)?;
            for name in names {
                needed.push(c_string(file, strtab + name)?);
            }
        }
    }
    Ok(Linkage { interpreter, needed })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 executable: one PT_LOAD covering the file, then the
    /// segments asked for (interpreter path, dynamic section naming `needed`).
    fn executable(interpreter: Option<&str>, needed: &[&str]) -> Vec<u8> {
        let phnum: u64 = 1 + u64::from(interpreter.is_some()) + u64::from(!needed.is_empty());
        let data_start = 64 + 56 * phnum;
        let mut data = Vec::new();
        let mut headers: Vec<(u32, u64, u64)> = Vec::new(); // kind, offset, size
        if let Some(path) = interpreter {
            headers.push((PT_INTERP, data_start, path.len() as u64 + 1));
            data.extend_from_slice(path.as_bytes());
            data.push(0);
        }
        if !needed.is_empty() {
            let strtab = data_start + data.len() as u64;
            let mut offsets = Vec::new();
            data.push(0);
            for name in needed {
                offsets.push(data_start + data.len() as u64 - strtab);
                data.extend_from_slice(name.as_bytes());
                data.push(0);
            }
            let dynamic = data_start + data.len() as u64;
            let mut entries: Vec<(u64, u64)> = offsets.iter().map(|o| (DT_NEEDED, *o)).collect();
            entries.push((DT_STRTAB, strtab)); // vaddr == offset: the PT_LOAD maps the file at 0
            entries.push((DT_NULL, 0));
            for (tag, value) in &entries {
                data.extend_from_slice(&tag.to_le_bytes());
                data.extend_from_slice(&value.to_le_bytes());
            }
            headers.push((PT_DYNAMIC, dynamic, 16 * entries.len() as u64));
        }
        let total = data_start + data.len() as u64;
        headers.insert(0, (PT_LOAD, 0, total));
        let mut file = vec![0u8; 64];
        file[..6].copy_from_slice(b"\x7fELF\x02\x01");
        file[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        file[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        file[0x38..0x3a].copy_from_slice(&(phnum as u16).to_le_bytes());
        for (kind, offset, size) in headers {
            let mut header = [0u8; 56];
            header[..4].copy_from_slice(&kind.to_le_bytes());
            header[8..16].copy_from_slice(&offset.to_le_bytes());
            header[16..24].copy_from_slice(&offset.to_le_bytes());
            header[32..40].copy_from_slice(&size.to_le_bytes());
            header[40..48].copy_from_slice(&size.to_le_bytes());
            file.extend_from_slice(&header);
        }
        file.extend_from_slice(&data);
        file
    }

    #[test]
    fn linkage_of_each_kind_of_file() {
        let ld = "/lib64/ld-linux-x86-64.so.2";
        // Ok((interpreter, libraries)), or Err(a fragment of the error).
        type Want = Result<(Option<&'static str>, Vec<&'static str>), &'static str>;
        let rows: Vec<(&str, Vec<u8>, Want)> = vec![
            ("static (no interpreter, no libraries)", executable(None, &[]), Ok((None, vec![]))),
            (
                "dynamic, two libraries",
                executable(Some(ld), &["libc.so.6", "libgcc_s.so.1"]),
                Ok((Some(ld), vec!["libc.so.6", "libgcc_s.so.1"])),
            ),
            ("libraries but no interpreter", executable(None, &["libc.so.6"]), Ok((None, vec!["libc.so.6"]))),
            ("interpreter only", executable(Some(ld), &[]), Ok((Some(ld), vec![]))),
            ("a shell script", b"#!/bin/sh\necho hi\n".to_vec(), Err("not an ELF file")),
            ("32-bit", b"\x7fELF\x01\x01\x01\x00".to_vec(), Err("not a 64-bit little-endian ELF file")),
            ("cut after the identity", b"\x7fELF\x02\x01\x01\x00".to_vec(), Err("truncated")),
        ];
        for (case, file, want) in rows {
            let got = linkage(&file);
            match want {
                Ok((interpreter, needed)) => {
                    let got = got.unwrap_or_else(|e| panic!("{case}: {e}"));
                    assert_eq!(got.interpreter.as_deref(), interpreter, "{case}");
                    assert_eq!(got.needed, needed, "{case}");
                    assert_eq!(got.is_static(), interpreter.is_none() && needed.is_empty(), "{case}");
                }
                Err(fragment) => {
                    let error = got.expect_err(case);
                    assert!(error.contains(fragment), "{case}: {error}");
                }
            }
        }
    }

    #[test]
    fn the_hosts_shell_is_dynamic() {
        let shell = std::fs::read("/bin/sh").expect("/bin/sh");
        let linkage = linkage(&shell).expect("/bin/sh is ELF");
        assert!(!linkage.is_static(), "{linkage:?}");
        assert!(linkage.needed.iter().any(|n| n.starts_with("libc.so")), "{linkage:?}");
    }
}
