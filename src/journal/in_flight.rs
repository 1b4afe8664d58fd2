//! The note of the batch the writer is applying: the range of log records
//! it covers. A batch is applied to ClickHouse in several inserts (one per
//! table, site and hour, each vouched for by its own delivery mark), so a
//! crash can leave it half applied. After a restart the aggregator must cut
//! the replayed records into the same batch again, so that each of those
//! inserts is recognised as done or not; this note says where to cut. It is
//! written (and fsync'd, with its folder) before the first insert of every
//! batch. It knows nothing of what a batch holds.

use std::fs;
use std::io;
use std::path::Path;

const FILE: &str = "in-flight";

/// Notes that records `first..end` are being applied, durably.
pub fn note(dir: &Path, first: u64, end: u64) -> io::Result<()> {
    super::replace_file(dir, FILE, format!("{first} {end}").as_bytes(), true)
}

/// The last batch noted in flight, if any note is readable.
pub fn read(dir: &Path) -> Option<(u64, u64)> {
    let text = fs::read_to_string(dir.join(FILE)).ok()?;
    let mut parts = text.split_whitespace().map(|p| p.parse::<u64>().ok());
    match (parts.next()??, parts.next()??) {
        (first, end) if first < end => Some((first, end)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_note_is_read_back_and_nonsense_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), None);
        note(dir.path(), 5, 9).unwrap();
        note(dir.path(), 9, 12).unwrap();
        assert_eq!(read(dir.path()), Some((9, 12)));
        fs::write(dir.path().join(FILE), "12 7").unwrap();
        assert_eq!(read(dir.path()), None);
        fs::write(dir.path().join(FILE), "garbage").unwrap();
        assert_eq!(read(dir.path()), None);
    }
}
