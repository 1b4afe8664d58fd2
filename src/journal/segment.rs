//! One segment file of the journal: framing, scanning at start-up,
//! sequential reading, and preparing zero-filled files. A record on disk is
//! `u32 LE payload length | u32 LE CRC-32C of the payload | payload`, and
//! a payload is never empty, so an all-zero header is never a record: in
//! the active (preallocated) segment it marks the end of the data, followed
//! by zeros to the end of the file. This file knows nothing of what a
//! payload means.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Bytes before each payload.
pub const HEADER: u64 = 8;
/// Longest payload written. A length above it can only be damage.
pub const MAX_PAYLOAD: u32 = 256 * 1024;
/// Zeros written per call when preparing a file, and read per call when
/// looking for the end of a file's data.
const ZERO_CHUNK: usize = 1024 * 1024;

/// Appends one framed record to `out`. `payload` must not be empty (its
/// header would read as the zero padding of a preallocated segment).
pub fn frame(payload: &[u8], out: &mut Vec<u8>) {
    debug_assert!(!payload.is_empty(), "an empty payload frames as padding");
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
    /// Length up to the end of the last whole record: where data ends.
    pub good_len: u64,
    /// Bytes after `good_len` up to the last non-zero byte of the file: an
    /// unfinished record (torn tail) or a damaged header that makes the
    /// rest unreadable.
    pub tail: u64,
    /// Zero bytes that end the file after `good_len + tail`: the unused
    /// part of a preallocated segment.
    pub zeros: u64,
    /// Frame length of the last record when it failed its checksum and
    /// nothing but zero padding follows it (`tail == 0`, `zeros > 0`). In
    /// the active segment that is a write cut short by a crash (its
    /// missing bytes read as the padding's zeros), not a damaged record:
    /// see [`Scan::tear_last`].
    pub suspect_last: u64,
}

impl Scan {
    /// Counts the last record, when it is suspect, as a torn tail instead
    /// of a corrupt record: it then takes no sequence number.
    pub fn tear_last(&mut self) {
        if self.suspect_last > 0 {
            self.records -= 1;
            self.corrupt -= 1;
            self.good_len -= self.suspect_last;
            self.tail += self.suspect_last;
            self.suspect_last = 0;
        }
    }
}

/// Reads a segment through, checking every frame.
pub fn scan(path: &Path) -> io::Result<Scan> {
    let file = File::open(path)?;
    let total = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(256 * 1024, &file);
    let mut scan = Scan::default();
    let mut payload = Vec::new();
    let mut last_bad = 0;
    while let Frame::Record { valid } = read_frame(&mut reader, &mut payload)? {
        let len = HEADER + payload.len() as u64;
        scan.records += 1;
        scan.good_len += len;
        last_bad = if valid {
            0
        } else {
            scan.corrupt += 1;
            len
        };
    }
    let data_end = end_of_nonzero(&file, scan.good_len, total)?;
    scan.tail = data_end - scan.good_len;
    scan.zeros = total - data_end;
    if scan.tail == 0 && scan.zeros > 0 {
        scan.suspect_last = last_bad;
    }
    Ok(scan)
}

/// Offset just after the last non-zero byte at or after `from` (`from`
/// itself when only zeros follow).
fn end_of_nonzero(file: &File, from: u64, total: u64) -> io::Result<u64> {
    let mut end = from;
    let mut at = from;
    let mut chunk = vec![0u8; ZERO_CHUNK];
    while at < total {
        let want = (total - at).min(ZERO_CHUNK as u64) as usize;
        let got = file.read_at(&mut chunk[..want], at)?;
        if got == 0 {
            break;
        }
        if let Some(last) = chunk[..got].iter().rposition(|b| *b != 0) {
            end = at + last as u64 + 1;
        }
        at += got as u64;
    }
    Ok(end)
}

/// Cuts a segment back to its last whole record and makes that durable
/// (also how a segment is sealed: its zero padding goes).
pub fn truncate(path: &Path, len: u64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(len)?;
    file.sync_all()
}

/// Overwrites `len` bytes at `at` with zeros and makes that durable: a
/// torn tail in the active segment becomes padding again, and the file
/// keeps its preallocated size.
pub fn zero_range(file: &File, at: u64, len: u64) -> io::Result<()> {
    let zeros = vec![0u8; len.min(ZERO_CHUNK as u64) as usize];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at + done)?;
        done += n as u64;
    }
    file.sync_data()
}

/// Creates `path` (mode 0600, replacing any file there) holding `size`
/// zero bytes, really written so that no later write into it changes
/// the file's size or extents, and fsync'd when `sync` says so. Gives up
/// between chunks once `stop` is set (the file is then left half made).
pub fn prepare_zeroed(path: &Path, size: u64, sync: bool, stop: &AtomicBool) -> io::Result<()> {
    let stopped = || {
        io::Error::new(
            io::ErrorKind::Interrupted,
            "the journal closed while a segment was being prepared",
        )
    };
    if stop.load(Ordering::Relaxed) {
        return Err(stopped());
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    let zeros = vec![0u8; size.min(ZERO_CHUNK as u64) as usize];
    let mut done = 0;
    while done < size {
        if stop.load(Ordering::Relaxed) {
            return Err(stopped());
        }
        let n = (size - done).min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..n])?;
        done += n as u64;
    }
    if sync {
        file.sync_all()?;
    }
    Ok(())
}

enum Frame {
    Record {
        valid: bool,
    },
    /// Clean end of file.
    End,
    /// A header or payload cut short, a length that cannot be, or a zero
    /// header (padding, or damage: the scan tells them apart).
    Damaged,
}

/// Parses a header: the payload length, or `None` when it cannot start a
/// record (zero, as padding reads, or longer than any record).
fn parse_header(header: &[u8; HEADER as usize]) -> (Option<u32>, u32) {
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    ((1..=MAX_PAYLOAD).contains(&len).then_some(len), crc)
}

fn read_frame(reader: &mut impl Read, payload: &mut Vec<u8>) -> io::Result<Frame> {
    let mut header = [0u8; HEADER as usize];
    match read_full(reader, &mut header)? {
        0 => return Ok(Frame::End),
        n if n < header.len() => return Ok(Frame::Damaged),
        _ => {}
    }
    let (Some(len), crc) = parse_header(&header) else {
        return Ok(Frame::Damaged);
    };
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

/// Bytes a reader fetches at once.
const READ_AHEAD: u64 = 256 * 1024;

/// Reads a segment's records in order, never past the length known to be
/// durable. It reads with `pread` below that length only, never through a
/// buffered reader that could read ahead: past the durable length, the
/// active segment holds zeros that the appender is about to overwrite, and
/// a copy of them kept in a buffer would be stale.
pub struct SegmentReader {
    pub path: PathBuf,
    file: File,
    /// Bytes read from the file, from offset `buf_at`.
    buf: Vec<u8>,
    buf_at: u64,
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
            file,
            buf: Vec::new(),
            buf_at: 0,
            offset: 0,
            next_seq: first_seq,
        })
    }

    /// The next record if it lies wholly below `durable_len`.
    pub fn next(&mut self, durable_len: u64) -> io::Result<Read1> {
        if self.offset + HEADER > durable_len {
            return Ok(Read1::Caught);
        }
        let Some(header) = self.bytes(HEADER, durable_len)? else {
            return Ok(Read1::Caught);
        };
        let header: [u8; HEADER as usize] = header
            .try_into()
            .map_err(|_| io::Error::other("short header"))?;
        // Below the durable length every header is whole (start-up cut any
        // damage); should one not parse, stop here rather than guess.
        let (Some(len), crc) = parse_header(&header) else {
            return Ok(Read1::Caught);
        };
        let size = HEADER + u64::from(len);
        if self.offset + size > durable_len {
            // Should not happen (the appender publishes whole records);
            // read it again once it is durable.
            return Ok(Read1::Caught);
        }
        let Some(frame) = self.bytes(size, durable_len)? else {
            return Ok(Read1::Caught);
        };
        let payload = frame[HEADER as usize..].to_vec();
        self.offset += size;
        let seq = self.next_seq;
        self.next_seq += 1;
        Ok(if crc32c::crc32c(&payload) == crc {
            Read1::Record { seq, payload }
        } else {
            Read1::Corrupt { seq }
        })
    }

    /// The `n` bytes at the current offset, reading more (never past
    /// `durable_len`) when the buffer does not hold them; `None` if the
    /// file ends first.
    fn bytes(&mut self, n: u64, durable_len: u64) -> io::Result<Option<&[u8]>> {
        let skip = (self.offset - self.buf_at) as usize;
        if self.buf.len() < skip + n as usize {
            self.buf.drain(..skip.min(self.buf.len()));
            self.buf_at = self.offset;
            let end = durable_len.min(self.offset + n.max(READ_AHEAD));
            let mut at = self.offset + self.buf.len() as u64;
            while at < end {
                let have = self.buf.len();
                self.buf.resize(have + (end - at) as usize, 0);
                let got = match self.file.read_at(&mut self.buf[have..], at) {
                    Ok(got) => got,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                        self.buf.truncate(have);
                        continue;
                    }
                    Err(e) => {
                        self.buf.truncate(have);
                        return Err(e);
                    }
                };
                self.buf.truncate(have + got);
                if got == 0 {
                    break;
                }
                at += got as u64;
            }
        }
        let skip = (self.offset - self.buf_at) as usize;
        Ok(self.buf.get(skip..skip + n as usize))
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
            "next.tmp",
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
                tail: bytes.len() as u64 - whole,
                zeros: 0,
                suspect_last: 0,
            }
        );
        truncate(&path, found.good_len).unwrap();
        assert_eq!(scan(&path).unwrap().tail, 0);
    }

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for p in payloads {
            frame(p, &mut bytes);
        }
        bytes
    }

    /// Writes `data` at the start of a zero-filled file of `size` bytes and
    /// scans it.
    fn scan_padded(data: &[u8], size: usize) -> Scan {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(file_name(1));
        let mut bytes = data.to_vec();
        bytes.resize(size, 0);
        std::fs::write(&path, &bytes).unwrap();
        scan(&path).unwrap()
    }

    fn check(case: &str, data: &[u8], size: usize, expected: Scan) {
        assert_eq!(scan_padded(data, size), expected, "{case}");
    }

    #[test]
    fn a_zero_header_ends_the_data_of_a_preallocated_segment() {
        let two = framed(&[b"one", b"two"]);
        let n = two.len() as u64;
        check(
            "only zeros",
            &[],
            4096,
            Scan {
                zeros: 4096,
                ..Scan::default()
            },
        );
        check(
            "records then zeros",
            &two,
            4096,
            Scan {
                records: 2,
                good_len: n,
                zeros: 4096 - n,
                ..Scan::default()
            },
        );
        check(
            "records fill the file exactly",
            &two,
            two.len(),
            Scan {
                records: 2,
                good_len: n,
                ..Scan::default()
            },
        );
        check(
            "zeros shorter than a header",
            &two,
            two.len() + 3,
            Scan {
                records: 2,
                good_len: n,
                zeros: 3,
                ..Scan::default()
            },
        );
        // A zero header with something after it is damage, not padding.
        let mut gap = two.clone();
        gap.extend_from_slice(&[0u8; 8]);
        gap.extend_from_slice(&framed(&[b"three"]));
        let g = gap.len() as u64;
        check(
            "zero header, then a record",
            &gap,
            4096,
            Scan {
                records: 2,
                good_len: n,
                tail: g - n,
                zeros: 4096 - g,
                ..Scan::default()
            },
        );
        // A length of zero with a checksum is damage too.
        let mut odd = two.clone();
        odd.extend_from_slice(&[0, 0, 0, 0, 1, 2, 3, 4]);
        check(
            "zero length, some checksum",
            &odd,
            4096,
            Scan {
                records: 2,
                good_len: n,
                tail: 8,
                zeros: 4096 - n - 8,
                ..Scan::default()
            },
        );
    }

    #[test]
    fn a_torn_record_followed_by_zeros_is_suspect_not_corrupt() {
        let two = framed(&[b"one", b"two"]);
        let n = two.len() as u64;
        let whole = framed(&[&[7u8; 100]]);
        for cut in 1..whole.len() {
            let mut torn = two.clone();
            torn.extend_from_slice(&whole[..cut]);
            let mut found = scan_padded(&torn, 4096);
            found.tear_last();
            assert_eq!(
                (found.records, found.corrupt, found.good_len, found.tail),
                (2, 0, n, whole.len() as u64),
                "cut after {cut} bytes"
            );
        }
        // Cut short by the end of the file rather than by zeros.
        let mut short = two.clone();
        short.extend_from_slice(&whole[..50]);
        let found = scan_padded(&short, short.len() + 20);
        assert_eq!(
            (found.records, found.good_len, found.suspect_last),
            (2, n, 0)
        );
        assert_eq!(found.tail + found.zeros, 70);
        // A damaged record followed by valid ones stays corrupt.
        let mut middle = framed(&[b"one", b"two", b"three"]);
        middle[HEADER as usize + 3 + HEADER as usize] ^= 0xff;
        let mut found = scan_padded(&middle, 4096);
        found.tear_last();
        assert_eq!((found.records, found.corrupt, found.tail), (3, 1, 0));
        // A damaged last record with no padding after it (a sealed
        // segment) stays corrupt as well.
        let mut last = two.clone();
        last[two.len() - 1] ^= 0xff;
        let found = scan_padded(&last, last.len());
        assert_eq!(
            (found.records, found.corrupt, found.suspect_last),
            (2, 1, 0)
        );
    }

    #[test]
    fn a_zeroed_spare_is_made_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("next.tmp");
        std::fs::write(&path, b"left over").unwrap();
        prepare_zeroed(&path, 3 * 1024 * 1024 + 5, true, &AtomicBool::new(false)).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 3 * 1024 * 1024 + 5);
        assert!(bytes.iter().all(|b| *b == 0));
        let stopped = prepare_zeroed(&path, 4096, true, &AtomicBool::new(true));
        assert!(stopped.is_err());
    }

    #[test]
    fn a_reader_never_keeps_bytes_past_the_durable_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(file_name(5));
        std::fs::write(&path, vec![0u8; 64 * 1024]).unwrap();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        let first = framed(&[b"first"]);
        file.write_all_at(&first, 0).unwrap();
        let mut reader = SegmentReader::open(path.clone(), 5).unwrap();
        let durable = first.len() as u64;
        assert!(matches!(
            reader.next(durable).unwrap(),
            Read1::Record { seq: 5, .. }
        ));
        assert!(matches!(reader.next(durable).unwrap(), Read1::Caught));
        // The appender overwrites the zeros after the first record.
        let second = framed(&[b"second", b"third"]);
        file.write_all_at(&second, durable).unwrap();
        let durable = durable + second.len() as u64;
        let mut got = Vec::new();
        while let Read1::Record { seq, payload } = reader.next(durable).unwrap() {
            got.push((seq, payload));
        }
        assert_eq!(got, vec![(6, b"second".to_vec()), (7, b"third".to_vec())]);
    }

    #[test]
    fn zero_range_turns_a_torn_tail_back_into_padding() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(file_name(1));
        let mut bytes = framed(&[b"kept", &[9u8; 40]]);
        let keep = HEADER + 4;
        bytes.resize(1024, 0);
        std::fs::write(&path, &bytes).unwrap();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        zero_range(&file, keep, 48).unwrap();
        let found = scan(&path).unwrap();
        assert_eq!(
            (found.records, found.good_len, found.zeros),
            (1, keep, 1024 - keep)
        );
    }
}
