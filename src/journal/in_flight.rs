//! The note of the batch the writer is applying: the range of log records
//! it covers. A batch is applied to ClickHouse in several inserts (one per
//! table, site and hour, each vouched for by its own delivery mark), so a
//! crash can leave it half applied. After a restart the aggregator must cut
//! the replayed records into the same batch again, so that each of those
//! inserts is recognised as done or not; this note says where to cut. It is
//! written (and fsync'd, with its folder) before the first insert of every
//! batch. It knows nothing of what a batch holds.
//!
//! On a ClickHouse cluster the note also names the shard the batch goes to
//! (its `shard` macro): the batch must be looked for, and finished, there.
//! And since a batch is noted only once the one before it has its receipt,
//! the note's first record is where the confirmed records end at least.

use std::fs;
use std::io;
use std::path::Path;

const FILE: &str = "in-flight";

/// The batch being applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    pub first: u64,
    pub end: u64,
    /// The shard it goes to; "" on a single server.
    pub shard: String,
}

/// Notes that records `first..end` are being applied to `shard`, durably.
/// A single server's note is the two numbers, as before clusters.
pub fn note(dir: &Path, first: u64, end: u64, shard: &str) -> io::Result<()> {
    let text = if shard.is_empty() {
        format!("{first} {end}")
    } else {
        format!("{first} {end}\n{shard}")
    };
    super::replace_file(dir, FILE, text.as_bytes(), true)
}

/// The last batch noted in flight, if any note is readable.
pub fn read(dir: &Path) -> Option<InFlight> {
    let text = fs::read_to_string(dir.join(FILE)).ok()?;
    let (range, shard) = text.split_once('\n').unwrap_or((&text, ""));
    let mut parts = range.split_whitespace().map(|p| p.parse::<u64>().ok());
    match (parts.next()??, parts.next()??, parts.next()) {
        (first, end, None) if first < end => Some(InFlight {
            first,
            end,
            shard: shard.to_string(),
        }),
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
        note(dir.path(), 5, 9, "").unwrap();
        note(dir.path(), 9, 12, "").unwrap();
        let single = |first, end| {
            Some(InFlight {
                first,
                end,
                shard: String::new(),
            })
        };
        assert_eq!(read(dir.path()), single(9, 12));
        // A note of the version before clusters reads the same.
        fs::write(dir.path().join(FILE), "9 12").unwrap();
        assert_eq!(read(dir.path()), single(9, 12));
        note(dir.path(), 12, 20, "02").unwrap();
        assert_eq!(
            read(dir.path()),
            Some(InFlight {
                first: 12,
                end: 20,
                shard: "02".into()
            })
        );
        fs::write(dir.path().join(FILE), "12 7").unwrap();
        assert_eq!(read(dir.path()), None);
        fs::write(dir.path().join(FILE), "garbage").unwrap();
        assert_eq!(read(dir.path()), None);
    }
}
