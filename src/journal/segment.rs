//! One segment file of the journal: framing, scanning at start-up, and
//! sequential reading. A record on disk is
//! `u32 LE payload length | u32 LE CRC-32C of the payload | payload`.
//! This file knows nothing of what a payload means.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Bytes before each payload.
pub const HEADER: u64 = 8;
/// Longest payload written. A length above it can only be damage.
pub const MAX_PAYLOAD: u32 = 256 * 1024;

/// Appends one framed record to `out`.
pub fn frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// The file name of the segment whose first record has sequence `first`.
pub fn file_name(first: u64) -> String {
    format!("{first:020}.log")
}

/// The first sequence number a segment file name stands for.
pub fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())?
}

/// What a scan found in a segment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Records framed correctly, whatever their checksum (each takes a
    /// sequence number).
    pub records: u64,
    /// Records whose checksum did not match.
    pub corrupt: u64,
    /// Length up to the end of the last whole record.
    pub good_len: u64,
    /// Bytes after `good_len`: an unfinished record (torn tail) or a
    /// damaged length that makes the rest unreadable.
    pub tail: u64,
}

/// Reads a segment through, checking every frame.
pub fn scan(path: &Path) -> io::Result<Scan> {
    let file = File::open(path)?;
    let total = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let mut scan = Scan::default();
    let mut payload = Vec::new();
    loop {
        match read_frame(&mut reader, &mut payload)? {
            Frame::Record { valid } => {
                scan.records += 1;
                if !valid {
                    scan.corrupt += 1;
                }
                scan.good_len += HEADER + payload.len() as u64;
            }
            Frame::End => break,
            Frame::Damaged => break,
        }
    }
    scan.tail = total - scan.good_len;
    Ok(scan)
}

/// Cuts a segment back to its last whole record and makes that durable.
pub fn truncate(path: &Path, len: u64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(len)?;
    file.sync_all()
}

enum Frame {
    Record {
        valid: bool,
    },
    /// Clean end of file.
    End,
    /// A header or payload cut short, or a length that cannot be.
    Damaged,
}

fn read_frame(reader: &mut impl Read, payload: &mut Vec<u8>) -> io::Result<Frame> {
    let mut header = [0u8; HEADER as usize];
    match read_full(reader, &mut header)? {
        0 => return Ok(Frame::End),
        n if n < header.len() => return Ok(Frame::Damaged),
        _ => {}
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_PAYLOAD {
        return Ok(Frame::Damaged);
    }
    payload.resize(len as usize, 0);
    if read_full(reader, payload)? < len as usize {
        return Ok(Frame::Damaged);
    }
    Ok(Frame::Record {
        valid: crc32c::crc32c(payload) == crc,
    })
}

/// Like `read_exact`, but says how much it got before the end.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads a segment's records in order, never past the length known to be
/// durable (the appender may be writing after it).
pub struct SegmentReader {
    pub path: PathBuf,
    reader: BufReader<File>,
    /// Offset of the next record.
    offset: u64,
    /// Sequence number of the next record.
    pub next_seq: u64,
}

/// One record read back.
pub enum Read1 {
    Record {
        seq: u64,
        payload: Vec<u8>,
    },
    /// The checksum did not match: the sequence number is used up.
    Corrupt {
        seq: u64,
    },
    /// Nothing more below the durable length.
    Caught,
}

impl SegmentReader {
    pub fn open(path: PathBuf, first_seq: u64) -> io::Result<SegmentReader> {
        let file = File::open(&path)?;
        Ok(SegmentReader {
            path,
            reader: BufReader::with_capacity(256 * 1024, file),
            offset: 0,
            next_seq: first_seq,
        })
    }

    /// The next record if it lies wholly below `durable_len`.
    pub fn next(&mut self, durable_len: u64) -> io::Result<Read1> {
        if self.offset + HEADER > durable_len {
            return Ok(Read1::Caught);
        }
        let mut payload = Vec::new();
        let start = self.offset;
        match read_frame(&mut self.reader, &mut payload)? {
            Frame::Record { valid } => {
                self.offset += HEADER + payload.len() as u64;
                if self.offset > durable_len {
                    // Should not happen (the appender publishes whole
                    // records); read it again once it is durable.
                    self.offset = start;
                    self.reader.seek(SeekFrom::Start(start))?;
                    return Ok(Read1::Caught);
                }
                let seq = self.next_seq;
                self.next_seq += 1;
                Ok(if valid {
                    Read1::Record { seq, payload }
                } else {
                    Read1::Corrupt { seq }
                })
            }
            Frame::End | Frame::Damaged => {
                self.reader.seek(SeekFrom::Start(start))?;
                Ok(Read1::Caught)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_ignored() {
        assert_eq!(parse_name(&file_name(42)), Some(42));
        assert_eq!(file_name(7), "00000000000000000007.log");
        for stranger in [
            "journal-id",
            "42.log",
            "0000000000000000000x.log",
            "00000000000000000042.log.tmp",
        ] {
            assert_eq!(parse_name(stranger), None, "{stranger}");
        }
    }

    #[test]
    fn scan_finds_corrupt_records_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(file_name(1));
        let mut bytes = Vec::new();
        for p in [&b"one"[..], b"two", b"three"] {
            frame(p, &mut bytes);
        }
        bytes[HEADER as usize + 3 + HEADER as usize] ^= 0xff; // "two" damaged
        let whole = bytes.len() as u64;
        frame(b"cut short", &mut bytes);
        bytes.truncate(bytes.len() - 4);
        std::fs::write(&path, &bytes).unwrap();
        let found = scan(&path).unwrap();
        assert_eq!(
            found,
            Scan {
                records: 3,
                corrupt: 1,
                good_len: whole,
                tail: bytes.len() as u64 - whole
            }
        );
        truncate(&path, found.good_len).unwrap();
        assert_eq!(scan(&path).unwrap().tail, 0);
    }
}
