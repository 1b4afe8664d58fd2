//! Reading and damaging tamis's durable log on disk, for the durability
//! tests: list segments, walk records, tear a tail, corrupt a record, and
//! scan every byte of every file for what must never be there.
//!
//! The layout is tamis's documented one: in the log directory, `journal-id`
//! and segments `<20-digit first sequence number>.log`, each a sequence of
//! records `u32 LE payload length | u32 LE CRC-32C of the payload | payload`
//! (never an empty payload); the newest (active) segment is preallocated:
//! zeros follow its records to the end of the file, and an all-zero header
//! ends its data.
//! The payload is opaque here, except that a test may look for the page
//! paths of its own requests inside it.

use std::path::{Path, PathBuf};

/// Segment files, oldest first (their names sort by first sequence number).
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut list: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list the log directory {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "log")
                && p.file_stem()
                    .and_then(|s| s.to_str())
                    .is_some_and(|s| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    list.sort();
    list
}

/// One record's place in a segment.
#[derive(Clone, Copy, Debug)]
pub struct RecordAt {
    /// Offset of its header.
    pub offset: usize,
    /// Payload length.
    pub len: usize,
    pub crc_ok: bool,
}

/// A segment walked record by record.
#[derive(Debug)]
pub struct Walk {
    pub records: Vec<RecordAt>,
    /// Where the records end.
    pub data_end: usize,
    /// Bytes after the last whole record that are not zero padding (a
    /// torn tail), 0 when it ends cleanly.
    pub trailing: usize,
    /// Zero bytes after the last whole record to the end of the file: the
    /// unused part of a preallocated (active) segment.
    pub padding: usize,
}

pub fn walk(bytes: &[u8]) -> Walk {
    let mut records = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= 8 {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        if len == 0 || bytes.len() - at - 8 < len {
            break;
        }
        let payload = &bytes[at + 8..at + 8 + len];
        records.push(RecordAt {
            offset: at,
            len,
            crc_ok: crc32c(payload) == crc,
        });
        at += 8 + len;
    }
    let rest = bytes.len() - at;
    let zeros = bytes[at..].iter().all(|b| *b == 0);
    Walk {
        records,
        data_end: at,
        trailing: if zeros { 0 } else { rest },
        padding: if zeros { rest } else { 0 },
    }
}

/// Writes the start of a record that never got finished where the next
/// record would go, at the end of the segment's records (over its zero
/// padding, or at the end of the file): a header that announces
/// `announced` payload bytes, followed by fewer of them.
pub fn append_torn_record(segment: &Path, announced: u32, written: &[u8]) {
    use std::os::unix::fs::FileExt;
    assert!((written.len() as u32) < announced);
    let at = walk(&std::fs::read(segment).expect("read segment")).data_end;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(segment)
        .expect("open segment");
    let mut bytes = announced.to_le_bytes().to_vec();
    bytes.extend_from_slice(&crc32c(written).to_le_bytes());
    bytes.extend_from_slice(written);
    f.write_all_at(&bytes, at as u64)
        .expect("write torn record");
    f.sync_all().expect("sync segment");
}

/// Flips one byte in the middle of record `record`'s payload in `segment`
/// (its CRC no longer matches) and returns the payload as it was.
pub fn corrupt_record(segment: &Path, record: RecordAt) -> Vec<u8> {
    let mut bytes = std::fs::read(segment).expect("read segment");
    let start = record.offset + 8;
    let before = bytes[start..start + record.len].to_vec();
    bytes[start + record.len / 2] ^= 0x5a;
    std::fs::write(segment, &bytes).expect("write segment");
    before
}

/// Page paths `/d/<letters>` found in a payload (a record names its hit's
/// page, in whatever encoding keeps it as plain text).
pub fn pages_in(payload: &[u8]) -> Vec<String> {
    let mut pages = Vec::new();
    let mut i = 0;
    while i + 3 < payload.len() {
        if &payload[i..i + 3] == b"/d/" {
            let end = payload[i + 3..]
                .iter()
                .position(|b| !b.is_ascii_lowercase())
                .map_or(payload.len(), |n| i + 3 + n);
            if end > i + 3 {
                pages.push(String::from_utf8_lossy(&payload[i..end]).into_owned());
            }
            i = end;
        } else {
            i += 1;
        }
    }
    pages
}

/// Every regular file under `dir`, recursively.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Looks for each `(label, needle)` in every byte of every file under
/// `dir`; returns one line per occurrence.
pub fn find_needles(dir: &Path, needles: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut found = Vec::new();
    for file in files(dir) {
        let Ok(bytes) = std::fs::read(&file) else {
            continue;
        };
        for (label, needle) in needles {
            if let Some(at) = bytes
                .windows(needle.len())
                .position(|w| w == needle.as_slice())
            {
                found.push(format!("{label} in {} at byte {at}", file.display()));
            }
        }
    }
    found
}

/// Files and folders under `dir` (and `dir` itself) whose permissions let
/// anyone but the owner in: the log must be 0700 folders, 0600 files.
pub fn loose_permissions(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut loose = Vec::new();
    let mut check = |p: &Path| {
        if let Ok(m) = std::fs::metadata(p) {
            let mode = m.permissions().mode() & 0o777;
            let allowed = if m.is_dir() { 0o700 } else { 0o600 };
            if mode & !allowed != 0 {
                loose.push(format!("{} has mode {mode:o}", p.display()));
            }
        }
    };
    check(dir);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            check(&p);
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    loose
}

/// CRC-32C (Castagnoli), bit by bit: the test only checks a few megabytes.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
