//! The durable local log between ingestion and ClickHouse. A hit is
//! answered 202 only once its post-privacy form ([`record`]) is in a
//! checksummed, fsync'd segment file ([`segment`]); the aggregator reads
//! hits back from here, and a segment is deleted only after ClickHouse
//! confirmed every record in it ([`Journal::confirm_range`], or
//! [`Journal::confirm`] at start-up). Deleting files and noting the
//! confirmed end are done after the state lock is let go, so appends and
//! readers never wait on them; confirming therefore blocks on file I/O and
//! belongs on a blocking thread.
//!
//! Start-up is two steps: [`Journal::recover`] locks the folder, scans it
//! and settles what a crash left (a [`Recovered`] value with its report),
//! then [`Recovered::start`] starts the threads.
//!
//! One appender thread writes: it takes every append that arrived while
//! the previous `fdatasync` ran and covers them all with one more (group
//! commit, no timer). Each record gets the next sequence number; a
//! segment's file name is the sequence number of its first record, and the
//! newest segment is never deleted, so numbering survives restarts.
//!
//! Segments are preallocated: a segment file is filled with zeros and
//! fsync'd as a spare (`next.tmp`, which the start-up scan ignores) before
//! it becomes the active segment by a rename, so a group commit overwrites
//! zeros inside a file whose size and extents are already durable and its
//! `fdatasync` flushes data only (appending made each one commit metadata
//! as well, several times slower on ext4). A helper thread prepares the
//! next spare while the active segment fills; a sealed segment is cut to
//! its data, so only the active one ends in zeros.
//!
//! The log's size is capped: an append that would pass the cap is refused
//! (ingest answers 503), never queued in memory. The cap counts record
//! bytes; the zeros of the active segment and the spare come on top, at
//! most two segment sizes. Must not: hold a client address or raw header
//! (records are encoded after the privacy pipeline), or talk to ClickHouse.

pub mod in_flight;
pub mod record;
pub mod segment;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use crate::metrics::Metrics;
use segment::{Read1, SegmentReader, HEADER, MAX_PAYLOAD};

/// Name of the file holding the journal's identity: batch receipts in
/// ClickHouse are keyed by it.
pub const ID_FILE: &str = "journal-id";
const LOCK_FILE: &str = "lock";
/// Where the journal notes how far ClickHouse confirmed it. Receipts in
/// ClickHouse say the same; this copy keeps a log pointed at another
/// database (or a restored one) from being replayed twice.
const CONFIRMED_FILE: &str = "confirmed";
/// The next segment while it is being prepared, and once it is ready. Not
/// a segment name: a spare half made when tamis stopped is deleted at the
/// next start, never read.
const SPARE_FILE: &str = "next.tmp";
/// Largest segment. Each segment is written twice (its zeros, then its
/// records) and the zeros of the active segment and of the spare are on
/// disk beyond the cap: 16 MiB keeps that at 32 MiB, a few percent of the
/// default 1 GiB cap, and a spare is made in well under a second, while
/// rotating every 16 MiB (a few seconds at full load) costs next to
/// nothing.
const MAX_SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

/// Largest group the appender writes with one fsync.
const MAX_GROUP_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("the durable log is full ({max_bytes} bytes)")]
    Full { max_bytes: u64 },
    #[error("the durable log cannot be written: {0}")]
    Io(String),
    #[error("record of {0} bytes is larger than the log accepts")]
    TooLarge(usize),
    /// An empty record would read as the zero padding of a segment.
    #[error("an empty record cannot be logged")]
    Empty,
}

/// Why [`Journal::confirm_range`] refused a confirmation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfirmError {
    #[error("a confirmation starts at record {first}, but the confirmed end is {confirmed_end}")]
    NotNext { first: u64, confirmed_end: u64 },
    #[error("a confirmation ends at record {end}, before its first, {first}")]
    Reversed { first: u64, end: u64 },
    #[error("a confirmation ends at record {end}, past the durable end {durable_end}")]
    PastDurable { end: u64, durable_end: u64 },
}

/// How the log is kept.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Cap on the bytes of records in the log (preallocated zeros come on
    /// top: at most two segment sizes).
    pub max_bytes: u64,
    /// `fdatasync` each group before answering. Off, a record survives a
    /// crash of tamis but not of the machine (benchmarks compare both).
    pub fsync: bool,
}

/// What start-up found in the log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub segments: usize,
    /// Records found, confirmed or not.
    pub records: u64,
    pub torn_tails: u64,
    pub corrupt: u64,
    /// Sequence number the next append gets.
    pub next_seq: u64,
}

/// A record read back for the aggregator.
#[derive(Debug, PartialEq, Eq)]
pub enum Entry {
    Record {
        seq: u64,
        payload: Vec<u8>,
    },
    /// A record whose checksum failed: its number is used, its content lost.
    Corrupt {
        seq: u64,
    },
}

struct Segment {
    first: u64,
    path: PathBuf,
    /// Bytes of durable records (the active segment's file is longer: zero
    /// padding follows).
    len: u64,
    /// Records in it, all durable.
    records: u64,
    /// No more appends go to it, and its file is cut to `len`.
    sealed: bool,
}

impl Segment {
    /// Sequence number after its last record.
    fn end(&self) -> u64 {
        self.first + self.records
    }
}

struct State {
    segments: VecDeque<Segment>,
    /// Every record below this number is durable.
    durable_end: u64,
    /// Every record below this number is in ClickHouse.
    confirmed_end: u64,
    /// When each group of records became durable: (end, when), oldest first.
    ages: VecDeque<(u64, SystemTime)>,
    /// Sealed segments whose every record is confirmed, taken out of
    /// `segments`: their files are deleted outside this lock
    /// ([`Shared::clean_up`]), and their bytes count against the cap until
    /// they are gone. One whose file could not be deleted stays here and is
    /// tried again at the next clean-up.
    doomed: Vec<Segment>,
}

/// Whether a confirmation moved the confirmed end.
enum Moved {
    No,
    Yes {
        /// The active segment holds only confirmed records: the appender
        /// may rotate it away now, not at the next hit (which a full log
        /// would refuse).
        reclaimable: bool,
    },
}

impl State {
    /// Moves the confirmed end to `end` (never past the durable end, never
    /// back) and sets aside the segments it frees. No file work.
    fn move_confirmed_end(&mut self, shared: &Shared, end: u64) -> Moved {
        if end <= self.confirmed_end {
            return Moved::No;
        }
        self.confirmed_end = end.min(self.durable_end);
        while self.ages.len() > 1 && self.ages[1].0 <= self.confirmed_end {
            self.ages.pop_front();
        }
        self.set_aside_confirmed();
        shared.publish(self);
        Moved::Yes {
            reclaimable: rotation_due(shared, self),
        }
    }

    /// Moves the sealed segments whose every record is confirmed to
    /// `doomed`. No file work: that is for [`Shared::clean_up`], after the
    /// lock is let go. Returns whether any segment waits for deletion.
    fn set_aside_confirmed(&mut self) -> bool {
        while self
            .segments
            .front()
            .is_some_and(|front| front.sealed && front.end() <= self.confirmed_end)
        {
            if let Some(done) = self.segments.pop_front() {
                self.doomed.push(done);
            }
        }
        !self.doomed.is_empty()
    }
}

struct Shared {
    dir: PathBuf,
    /// Held locked for as long as the journal is open: two processes on one
    /// log would corrupt it.
    _lock: File,
    max_bytes: u64,
    fsync: bool,
    segment_bytes: u64,
    state: Mutex<State>,
    durable: Condvar,
    /// Bytes of records on disk plus bytes reserved by appends not yet
    /// written.
    bytes: AtomicU64,
    /// Held while segment files are deleted and the confirmed note is
    /// written, so that notes are written in order and a deletion is never
    /// made twice. Guards no value.
    cleanup: Mutex<()>,
    /// Set by a thread that set segments aside and found a clean-up under
    /// way: the thread doing it makes one more pass.
    cleanup_again: AtomicBool,
    metrics: Arc<Metrics>,
}

impl Shared {
    /// The state lock. Its segments, counters and ages change in several
    /// steps, so a panic while it was held stops the process
    /// ([`crate::lock::or_abort`]): a restart recovers from the files.
    fn lock(&self) -> MutexGuard<'_, State> {
        crate::lock::or_abort(self.state.lock(), "the journal's state")
    }

    /// Deletes the files of the segments set aside, outside the state
    /// lock, waiting for a clean-up under way in another thread. File I/O:
    /// blocking contexts only.
    fn clean_up(&self) {
        // The lock guards no value: a panic while it was held left nothing
        // half changed, so its guard is taken back.
        let held = self.cleanup.lock().unwrap_or_else(|e| e.into_inner());
        self.delete_doomed(held);
    }

    /// Like [`Shared::clean_up`], but never waits: when another thread is
    /// cleaning up, that one makes one more pass for what was set aside
    /// here. For the appender, whose next group must not wait on another
    /// thread's deletions.
    fn try_clean_up(&self) {
        self.cleanup_again.store(true, Ordering::SeqCst);
        match self.cleanup.try_lock() {
            Ok(held) => self.delete_doomed(held),
            Err(TryLockError::WouldBlock) => {}
            // As in `clean_up`: the lock guards no value.
            Err(TryLockError::Poisoned(e)) => self.delete_doomed(e.into_inner()),
        }
    }

    /// Deletes the set-aside segments' files while `held` (the clean-up
    /// lock) is held, then again for as long as another thread asked for
    /// one more pass meanwhile. A segment whose file cannot be deleted
    /// stays set aside, and counted, for the next clean-up.
    fn delete_doomed<'a>(&'a self, mut held: MutexGuard<'a, ()>) {
        loop {
            self.cleanup_again.store(false, Ordering::SeqCst);
            let doomed = std::mem::take(&mut self.lock().doomed);
            let mut kept = Vec::new();
            for segment in doomed {
                match fs::remove_file(&segment.path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::error!(segment = %segment.path.display(), error = %e, "cannot delete a confirmed log segment; trying again at the next confirmation");
                        kept.push(segment);
                        continue;
                    }
                }
                self.bytes.fetch_sub(segment.len, Ordering::AcqRel);
            }
            let mut state = self.lock();
            kept.append(&mut state.doomed);
            state.doomed = kept;
            self.publish(&state);
            drop(state);
            drop(held);
            if !self.cleanup_again.load(Ordering::SeqCst) {
                return;
            }
            held = match self.cleanup.try_lock() {
                Ok(held) => held,
                // Whoever holds it now makes that pass.
                Err(TryLockError::WouldBlock) => return,
                Err(TryLockError::Poisoned(e)) => e.into_inner(),
            };
        }
    }

    fn publish(&self, state: &State) {
        let m = &self.metrics;
        m.log_bytes
            .store(self.bytes.load(Ordering::Relaxed), Ordering::Relaxed);
        m.log_backlog
            .store(state.durable_end - state.confirmed_end, Ordering::Relaxed);
        let oldest = state
            .ages
            .iter()
            .find(|(end, _)| *end > state.confirmed_end)
            .map(|(_, t)| *t);
        let millis = oldest
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64);
        m.log_oldest_unconfirmed_ms.store(millis, Ordering::Relaxed);
    }
}

/// Work to do once a record is durable, whether or not anybody still
/// waits for it (a client that hung up still had its hit logged), given
/// the record's sequence number. It runs on the appender thread, in log
/// order, before readers can see the record: what it hands on arrives
/// in order and never after a reader could have found the record itself.
/// It runs under the log's lock, so it must be short and must not call
/// back into the [`Journal`].
pub type OnDurable = Box<dyn FnOnce(u64) + Send>;

struct Append {
    framed: Vec<u8>,
    done: Option<oneshot::Sender<Result<u64, AppendError>>>,
    on_durable: Option<OnDurable>,
}

/// Handle to the log, shared by request handlers, the feeder and the writer.
#[derive(Clone)]
pub struct Journal {
    shared: Arc<Shared>,
    appends: mpsc::Sender<Append>,
    id: Arc<str>,
}

/// What start-up found and settled in the log folder, before any thread
/// runs: the folder is locked, a torn tail is cut back, older segments
/// left unsealed are sealed, and the numbering is reconciled with the
/// confirmed note. [`Recovered::start`] turns it into a running
/// [`Journal`]; dropping it instead lets the folder go untouched further.
pub struct Recovered {
    dir: PathBuf,
    lock: File,
    id: String,
    options: Options,
    segments: VecDeque<Segment>,
    /// The newest segment, opened for writing, when it was the active
    /// (preallocated) one: appends continue at its data end.
    active: Option<File>,
    /// Sequence number the next append gets.
    end: u64,
    /// Every record below this number is known to be in ClickHouse.
    confirmed_end: u64,
    report: Recovery,
    metrics: Arc<Metrics>,
}

/// Segments as the scan found them, before reconciliation with the note.
struct Scanned {
    segments: VecDeque<Segment>,
    active: Option<File>,
    report: Recovery,
}

impl Journal {
    /// Recovers the log in `dir` and starts it: [`Journal::recover`], then
    /// [`Recovered::start`], for callers that only want the report.
    pub fn open(
        dir: &Path,
        options: Options,
        metrics: Arc<Metrics>,
    ) -> io::Result<(Journal, Recovery)> {
        let recovered = Journal::recover(dir, options, metrics)?;
        let report = recovered.report().clone();
        Ok((recovered.start()?, report))
    }

    /// Opens (or creates) the log in `dir` without starting it: locks the
    /// folder, reads (or makes) its id, scans every segment (cutting back a
    /// torn tail and counting damaged records), and reconciles the
    /// numbering with the confirmed note. Runs no thread.
    pub fn recover(dir: &Path, options: Options, metrics: Arc<Metrics>) -> io::Result<Recovered> {
        let lock = lock_folder(dir)?;
        let id = read_or_create_id(dir)?;
        // A spare left behind may be half made; a new one is prepared.
        match fs::remove_file(dir.join(SPARE_FILE)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut scanned = scan_segments(dir)?;
        let noted = read_confirmed_note(dir);
        let end = reconcile_with_note(&mut scanned, noted)?;
        let Scanned {
            mut segments,
            active,
            mut report,
        } = scanned;
        report.next_seq = end;
        drop_empty_segments(&mut segments);
        let confirmed_end = segments
            .front()
            .map_or(end, |s| s.first)
            .max(noted.min(end));
        Ok(Recovered {
            dir: dir.to_path_buf(),
            lock,
            id,
            options,
            segments,
            active,
            end,
            confirmed_end,
            report,
            metrics,
        })
    }
}

impl Recovered {
    /// What start-up found in the log.
    pub fn report(&self) -> &Recovery {
        &self.report
    }

    /// Starts the spare-preparing helper and the appender thread, makes
    /// sure a preallocated segment is active, and deletes the segments
    /// already confirmed (file I/O: call from a blocking context).
    pub fn start(self) -> io::Result<Journal> {
        let Recovered {
            dir,
            lock,
            id,
            options: Options { max_bytes, fsync },
            segments,
            active,
            end,
            confirmed_end,
            report,
            metrics,
        } = self;
        let segment_bytes = segment_bytes(max_bytes);
        let bytes: u64 = segments.iter().map(|s| s.len).sum();
        let shared = Arc::new(Shared {
            dir,
            _lock: lock,
            max_bytes,
            fsync,
            segment_bytes,
            state: Mutex::new(State {
                segments,
                durable_end: end,
                confirmed_end,
                ages: VecDeque::from([(end, SystemTime::now())]),
                doomed: Vec::new(),
            }),
            durable: Condvar::new(),
            bytes: AtomicU64::new(bytes),
            cleanup: Mutex::new(()),
            cleanup_again: AtomicBool::new(false),
            metrics: metrics.clone(),
        });
        metrics
            .log_torn_tails
            .fetch_add(report.torn_tails, Ordering::Relaxed);
        metrics
            .log_corrupt
            .fetch_add(report.corrupt, Ordering::Relaxed);
        let (appends, queue) = mpsc::channel();
        let mut appender = Appender {
            spare: Spare::start(&shared.dir, segment_bytes, fsync)?,
            shared: shared.clone(),
            file: None,
            data_end: 0,
            cleanup_due: false,
            queue,
        };
        match active {
            Some(file) => {
                appender.data_end = shared.lock().segments.back().map_or(0, |s| s.len);
                appender.file = Some(file);
            }
            // A fresh log, or one whose newest segment was sealed (a stop
            // between sealing and the next segment's activation): start a
            // segment now, so the first appends already overwrite zeros.
            None => appender.start_segment(end)?,
        }
        appender.spare.request();
        // Only now: the newest segment, which keeps the numbering, is
        // never deleted, and with an active segment in place it is not
        // the newest any more.
        let mut state = shared.lock();
        state.set_aside_confirmed();
        shared.publish(&state);
        drop(state);
        shared.clean_up();
        std::thread::Builder::new()
            .name("tamis-journal".into())
            .spawn(move || appender.run())?;
        Ok(Journal {
            shared,
            appends,
            id: Arc::from(id.as_str()),
        })
    }
}

/// Size of each preallocated segment for a log capped at `max_bytes`.
fn segment_bytes(max_bytes: u64) -> u64 {
    (max_bytes / 8).clamp(16 * 1024, MAX_SEGMENT_BYTES)
}

/// Creates the folder (private) and takes its lock file: two processes on
/// one log would corrupt it.
fn lock_folder(dir: &Path) -> io::Result<File> {
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(dir.join(LOCK_FILE))?;
    // A process that just stopped may take a moment to let go.
    let mut tries = 0;
    while lock.try_lock().is_err() {
        tries += 1;
        if tries > 40 {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "the durable log in {} is in use by another tamis process",
                    dir.display()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(lock)
}

/// Reads every segment through, in order: cuts back what cannot be
/// framed, seals older segments left unsealed, and finds the segment that
/// was active (the newest, if it ends in zeros).
fn scan_segments(dir: &Path) -> io::Result<Scanned> {
    let mut found: Vec<(u64, PathBuf)> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            segment::parse_name(&e.file_name().to_string_lossy()).map(|first| (first, e.path()))
        })
        .collect();
    found.sort();
    let mut report = Recovery::default();
    let mut segments = VecDeque::new();
    // The segment that was active when tamis stopped, to append to again.
    let mut active = None;
    let count = found.len();
    for (i, (first, path)) in found.into_iter().enumerate() {
        let newest = i + 1 == count;
        let mut scan = segment::scan(&path)?;
        // Zero padding marks the newest segment as the one that was
        // active: its data ends at the first zero header, and a last
        // record failing its checksum right before the zeros is a write
        // that a crash cut short (its missing bytes read as zeros), not
        // damage.
        let preallocated = newest && scan.zeros > 0;
        if preallocated {
            scan.tear_last();
        }
        if scan.tail > 0 {
            // The newest segment may end in a record cut short by a crash;
            // anywhere else it is damage. Either way the rest cannot be
            // framed.
            if newest {
                report.torn_tails += 1;
            } else {
                report.corrupt += 1;
            }
            tracing::warn!(segment = %path.display(), kept = scan.good_len, cut = scan.tail, "log segment ends in an unreadable record; cut back");
        }
        // A record of the active segment that failed its checksum and is
        // not its last is damage. Appending after it would let a later
        // crash tear the records that follow it, leave it last before the
        // zeros, and have it read as torn at the next start: its number,
        // once given out, would be given out again. So that segment is
        // sealed and appends go to a new one.
        let damaged = preallocated && scan.corrupt > 0;
        if damaged {
            tracing::warn!(segment = %path.display(), "the active log segment holds damaged records; sealed, appends go to a new segment");
        }
        if preallocated && !damaged {
            let file = OpenOptions::new().write(true).open(&path)?;
            if scan.tail > 0 {
                segment::zero_range(&file, scan.good_len, scan.tail)?;
            }
            active = Some(file);
        } else if scan.tail > 0 || scan.zeros > 0 {
            // Zeros after the data of an older segment: it was left
            // unsealed; seal it now.
            segment::truncate(&path, scan.good_len)?;
        }
        if scan.corrupt > 0 {
            tracing::warn!(segment = %path.display(), records = scan.corrupt, "log records failed their checksum; skipped");
        }
        report.corrupt += scan.corrupt;
        report.records += scan.records;
        segments.push_back(Segment {
            first,
            path,
            len: scan.good_len,
            records: scan.records,
            sealed: !preallocated || damaged,
        });
    }
    report.segments = segments.len();
    Ok(Scanned {
        segments,
        active,
        report,
    })
}

/// The confirmed end noted by the last run (0 when there is no note).
fn read_confirmed_note(dir: &Path) -> u64 {
    fs::read_to_string(dir.join(CONFIRMED_FILE))
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .unwrap_or(0)
}

/// The number the next append gets: after the last record found, or after
/// the last one ClickHouse confirmed (`noted`) when the log ends before
/// it, so that no number is given out twice.
fn reconcile_with_note(scanned: &mut Scanned, noted: u64) -> io::Result<u64> {
    let end = scanned.segments.iter().map(Segment::end).max().unwrap_or(1);
    if noted <= end {
        return Ok(end);
    }
    // Records ClickHouse confirmed are gone from the end of the log (a
    // damaged last record reads as a torn one): never hand their numbers
    // out again. Appends go to a new segment after them.
    tracing::warn!(
        log_end = end,
        confirmed = noted,
        "the log ends before what ClickHouse confirmed; numbering continues after it"
    );
    if let Some(last) = scanned.segments.back_mut().filter(|s| !s.sealed) {
        segment::truncate(&last.path, last.len)?;
        last.sealed = true;
    }
    scanned.active = None;
    Ok(noted)
}

/// Deletes old segments without records: they carry nothing. The newest
/// keeps the numbering, so it stays even when empty.
fn drop_empty_segments(segments: &mut VecDeque<Segment>) {
    let newest = segments.back().map(|s| s.first);
    segments.retain(|s| {
        let keep = s.records > 0 || Some(s.first) == newest;
        if !keep {
            let _ = fs::remove_file(&s.path);
        }
        keep
    });
}

impl Journal {
    /// The journal's identity (batch receipts are keyed by it).
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Queues `payload` for the next group commit. The receiver answers with
    /// its sequence number once it is on disk, or why it could not be.
    pub fn append(
        &self,
        payload: &[u8],
    ) -> Result<oneshot::Receiver<Result<u64, AppendError>>, AppendError> {
        self.append_then(payload, None)
    }

    /// Like [`Journal::append`], and runs `on_durable` on the appender
    /// thread once the record is on disk.
    pub fn append_then(
        &self,
        payload: &[u8],
        on_durable: Option<OnDurable>,
    ) -> Result<oneshot::Receiver<Result<u64, AppendError>>, AppendError> {
        let (tx, rx) = oneshot::channel();
        self.queue(payload, Some(tx), on_durable)?;
        Ok(rx)
    }

    /// Queues `payload` without waiting for it (counters nobody waits for);
    /// `on_durable` runs as for [`Journal::append_then`].
    pub fn append_detached(
        &self,
        payload: &[u8],
        on_durable: Option<OnDurable>,
    ) -> Result<(), AppendError> {
        self.queue(payload, None, on_durable)
    }

    fn queue(
        &self,
        payload: &[u8],
        done: Option<oneshot::Sender<Result<u64, AppendError>>>,
        on_durable: Option<OnDurable>,
    ) -> Result<(), AppendError> {
        if payload.len() > MAX_PAYLOAD as usize {
            return Err(AppendError::TooLarge(payload.len()));
        }
        if payload.is_empty() {
            return Err(AppendError::Empty);
        }
        let size = HEADER + payload.len() as u64;
        let max = self.shared.max_bytes;
        let reserved = self
            .shared
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                (b + size <= max).then_some(b + size)
            });
        if reserved.is_err() {
            self.shared.metrics.log_full.store(1, Ordering::Relaxed);
            return Err(AppendError::Full { max_bytes: max });
        }
        self.shared.metrics.log_full.store(0, Ordering::Relaxed);
        let mut framed = Vec::with_capacity(size as usize);
        segment::frame(payload, &mut framed);
        self.appends
            .send(Append {
                framed,
                done,
                on_durable,
            })
            .map_err(|_| {
                self.shared.bytes.fetch_sub(size, Ordering::AcqRel);
                AppendError::Io("the log writer has stopped".into())
            })
    }

    /// Whether appends are refused for lack of room.
    pub fn is_full(&self) -> bool {
        self.shared.bytes.load(Ordering::Relaxed) + HEADER + 256 > self.shared.max_bytes
    }

    /// Sequence number after the last durable record.
    pub fn durable_end(&self) -> u64 {
        self.shared.lock().durable_end
    }

    /// Every record below this number is known to be in ClickHouse.
    pub fn confirmed_end(&self) -> u64 {
        self.shared.lock().confirmed_end
    }

    /// Records on disk that ClickHouse has not confirmed.
    pub fn unconfirmed(&self) -> u64 {
        let state = self.shared.lock();
        state.durable_end - state.confirmed_end
    }

    /// Records ClickHouse confirmed: every number below `end`, wherever
    /// the confirmed end stood. For start-up, where the last receipt says
    /// how far ClickHouse got; a batch's receipt goes through
    /// [`Journal::confirm_range`], which checks for gaps. Deletes the
    /// segments holding nothing else and notes the new end in the folder.
    ///
    /// Blocks on file I/O (deleting segment files, rewriting the note),
    /// though never while holding the lock appends and readers take: call
    /// it from a blocking context (a plain thread, or
    /// `tokio::task::spawn_blocking`), never on an async task.
    pub fn confirm(&self, end: u64) {
        let moved = self.shared.lock().move_confirmed_end(&self.shared, end);
        self.after_confirm(moved);
    }

    /// Records the batch of records `first..end` as confirmed by
    /// ClickHouse, as [`Journal::confirm`] does (and blocking as it does),
    /// refusing it unless `first` is where the confirmed end stands and
    /// `end` is durable: a gap would delete records whose receipt
    /// ClickHouse never gave. Numbers that no segment holds (a damaged
    /// tail cut at start-up) are no gap: there is nothing to confirm there.
    pub fn confirm_range(&self, first: u64, end: u64) -> Result<(), ConfirmError> {
        let moved = {
            let mut state = self.shared.lock();
            let confirmed = state.confirmed_end;
            let skipped_held = state
                .segments
                .iter()
                .any(|s| s.records > 0 && s.first < first && s.end() > confirmed);
            if first < confirmed || (first > confirmed && skipped_held) {
                return Err(ConfirmError::NotNext {
                    first,
                    confirmed_end: state.confirmed_end,
                });
            }
            if end < first {
                return Err(ConfirmError::Reversed { first, end });
            }
            if end > state.durable_end {
                return Err(ConfirmError::PastDurable {
                    end,
                    durable_end: state.durable_end,
                });
            }
            state.move_confirmed_end(&self.shared, end)
        };
        self.after_confirm(moved);
        Ok(())
    }

    /// The file work of a confirmation, after the state lock is let go:
    /// the note, then the deletions; then a nudge to the appender when the
    /// active segment can be rotated away.
    fn after_confirm(&self, moved: Moved) {
        let Moved::Yes { reclaimable } = moved else {
            return;
        };
        {
            // Under the clean-up lock, so that notes are written in order
            // (each with the newest end). The lock guards no value: see
            // `Shared::clean_up`.
            let held = self
                .shared
                .cleanup
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            note_confirmed(&self.shared.dir, self.confirmed_end());
            self.shared.delete_doomed(held);
        }
        if reclaimable {
            let _ = self.appends.send(Append {
                framed: Vec::new(),
                done: None,
                on_durable: None,
            });
        }
    }

    /// A reader of records from number `from` on, in order.
    pub fn reader(&self, from: u64) -> Reader {
        Reader {
            shared: self.shared.clone(),
            current: None,
            next: from,
        }
    }
}

/// Whether the active segment should give way to a new one: it is full,
/// or it holds only confirmed records, half a segment of them or more (it
/// can then be deleted; not sooner, as every new segment costs writing a
/// segment of zeros).
fn rotation_due(shared: &Shared, state: &State) -> bool {
    state.segments.back().is_some_and(|active| {
        let confirmed = active.records > 0 && active.end() <= state.confirmed_end;
        !active.sealed
            && (active.len >= shared.segment_bytes
                || (confirmed && active.len >= shared.segment_bytes / 2))
    })
}

/// Best effort: if the note is lost, receipts in ClickHouse still say it.
fn note_confirmed(dir: &Path, end: u64) {
    if let Err(error) = replace_file(dir, CONFIRMED_FILE, end.to_string().as_bytes(), false) {
        tracing::warn!(error = %error, "cannot note the confirmed end of the durable log");
    }
}

/// Replaces the file at `path` with `bytes` whole, not durably (see
/// [`replace_file`]).
pub(crate) fn replace_file_in(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::other("not a file name"))?;
    replace_file(dir, name, bytes, false)
}

/// Replaces `dir/name` with `bytes` whole (written beside it, mode 0600,
/// then renamed over it). `durable`: the file and the rename are fsync'd
/// before this returns.
pub(crate) fn replace_file(dir: &Path, name: &str, bytes: &[u8], durable: bool) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    if durable {
        file.sync_all()?;
    }
    fs::rename(&tmp, dir.join(name))?;
    if durable {
        sync_dir(dir)?;
    }
    Ok(())
}

fn read_or_create_id(dir: &Path) -> io::Result<String> {
    let path = dir.join(ID_FILE);
    match fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let id = format!("{:032x}", rand::random::<u128>());
    replace_file(dir, ID_FILE, id.as_bytes(), true)?;
    Ok(id)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Prepares spare segments on a helper thread, one ahead, so that
/// rotation only renames a file.
struct Spare {
    dir: PathBuf,
    size: u64,
    sync: bool,
    slot: Arc<SpareSlot>,
    requests: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

struct SpareSlot {
    state: Mutex<SpareState>,
    changed: Condvar,
    /// Set when the journal closes: a spare being made is given up.
    stop: AtomicBool,
}

#[derive(Default)]
struct SpareState {
    /// Requested and not finished: only the helper thread touches the
    /// file meanwhile.
    pending: bool,
    /// `next.tmp` is whole, zero-filled and durable.
    ready: bool,
}

impl SpareSlot {
    /// Both flags are set together in one step, with nothing that can
    /// panic between them: a panic while the lock was held left no half
    /// change, so its guard is taken back. At worst the spare is made again
    /// by `take`, which checks nothing but the flags.
    fn lock(&self) -> MutexGuard<'_, SpareState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Spare {
    fn start(dir: &Path, size: u64, sync: bool) -> io::Result<Spare> {
        let slot = Arc::new(SpareSlot {
            state: Mutex::new(SpareState::default()),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let (requests, wanted) = mpsc::channel::<()>();
        let path = dir.join(SPARE_FILE);
        let helper = slot.clone();
        let thread = std::thread::Builder::new()
            .name("tamis-journal-spare".into())
            .spawn(move || {
                while wanted.recv().is_ok() {
                    let made = segment::prepare_zeroed(&path, size, sync, &helper.stop);
                    if let Err(error) = &made {
                        if !helper.stop.load(Ordering::Relaxed) {
                            tracing::warn!(error = %error, "cannot prepare the next log segment; it will be made when needed");
                        }
                    }
                    let mut state = helper.lock();
                    state.pending = false;
                    state.ready = made.is_ok();
                    drop(state);
                    helper.changed.notify_all();
                }
            })?;
        Ok(Spare {
            dir: dir.to_path_buf(),
            size,
            sync,
            slot,
            requests: Some(requests),
            thread: Some(thread),
        })
    }

    /// Asks the helper for a spare, unless one is ready or on its way.
    fn request(&self) {
        let mut state = self.slot.lock();
        if state.ready || state.pending {
            return;
        }
        state.pending = self.requests.as_ref().is_some_and(|r| r.send(()).is_ok());
    }

    /// Makes sure `next.tmp` is a whole, durable spare: waits for the one
    /// being made, or makes it here when there is none (slower, still
    /// correct). It is then no longer counted as ready.
    fn take(&self) -> io::Result<PathBuf> {
        let path = self.dir.join(SPARE_FILE);
        let mut state = self.slot.lock();
        while state.pending {
            if self.thread.as_ref().is_none_or(|t| t.is_finished()) {
                // The helper died (it never does but by a panic): make the
                // spare here.
                state.pending = false;
                state.ready = false;
                break;
            }
            state = self
                .slot
                .changed
                .wait_timeout(state, Duration::from_millis(100))
                // As in `SpareSlot::lock`.
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let ready = std::mem::take(&mut state.ready);
        drop(state);
        if !ready {
            segment::prepare_zeroed(&path, self.size, self.sync, &AtomicBool::new(false))?;
        }
        Ok(path)
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        // Stop the helper before the journal's lock is let go, so that it
        // cannot write `next.tmp` under a journal opened after this one.
        self.slot.stop.store(true, Ordering::Relaxed);
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Appender {
    /// First, so it is dropped (its helper stopped) first.
    spare: Spare,
    shared: Arc<Shared>,
    /// The active segment, opened for writing in place.
    file: Option<File>,
    /// Where the next group goes in `file`: the end of its records.
    data_end: u64,
    /// A rotation set confirmed segments aside: their files are deleted
    /// once the group is answered, never before its write.
    cleanup_due: bool,
    queue: mpsc::Receiver<Append>,
}

impl Appender {
    fn run(mut self) {
        let mut group: Vec<Append> = Vec::new();
        let mut buffer: Vec<u8> = Vec::with_capacity(MAX_GROUP_BYTES);
        // Ends when every `Journal` handle is gone.
        while let Ok(first) = self.queue.recv() {
            group.push(first);
            let mut size = group[0].framed.len();
            while size < MAX_GROUP_BYTES {
                match self.queue.try_recv() {
                    Ok(next) => {
                        size += next.framed.len();
                        group.push(next);
                    }
                    Err(_) => break,
                }
            }
            buffer.clear();
            for a in &group {
                buffer.extend_from_slice(&a.framed);
            }
            // Nudges (empty appends from `confirm`) only give a chance to
            // rotate; they take no number.
            let records = group.iter().filter(|a| !a.framed.is_empty()).count() as u64;
            let result = self.write(&buffer, &mut group, records);
            match result {
                Ok(end) => {
                    let mut seq = end - records;
                    for a in group.drain(..) {
                        if a.framed.is_empty() {
                            continue;
                        }
                        if let Some(done) = a.done {
                            let _ = done.send(Ok(seq));
                        }
                        seq += 1;
                    }
                }
                Err(error) => {
                    self.shared
                        .bytes
                        .fetch_sub(buffer.len() as u64, Ordering::AcqRel);
                    self.shared
                        .metrics
                        .log_write_errors
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %error, records = group.len(), "cannot write the durable log; those hits are refused (503)");
                    for a in group.drain(..) {
                        if let Some(done) = a.done {
                            let _ = done.send(Err(AppendError::Io(error.to_string())));
                        }
                    }
                }
            }
            // After the group is answered: its clients never wait on a
            // deletion, and the next group waits on none made elsewhere.
            if std::mem::take(&mut self.cleanup_due) {
                self.shared.try_clean_up();
            }
        }
    }

    /// Writes one group (`bytes`, the framed records of `group`) and makes
    /// it durable, runs the group's `on_durable` work, then publishes the
    /// new durable end and returns it.
    fn write(&mut self, bytes: &[u8], group: &mut [Append], records: u64) -> io::Result<u64> {
        self.rotate_if_due()?;
        if records == 0 {
            return Ok(self.shared.lock().durable_end);
        }
        if self.file.is_none() {
            let end = self.shared.lock().durable_end;
            self.start_segment(end)?;
        }
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| io::Error::other("no log segment"))?;
        let fsync = self.shared.fsync;
        // In place over the zeros: the file's size does not change (unless
        // a group runs past the preallocated end), so `fdatasync` has no
        // metadata to commit.
        let written = file.write_all_at(bytes, self.data_end).and_then(|()| {
            if fsync {
                file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(error) = written {
            // Whatever part reached the file is not counted: cut it off and
            // continue in a fresh segment.
            self.abandon_segment();
            return Err(error);
        }
        self.data_end += bytes.len() as u64;
        self.shared
            .metrics
            .log_fsyncs
            .fetch_add(1, Ordering::Relaxed);
        let mut state = self.shared.lock();
        let active = state
            .segments
            .back_mut()
            .ok_or_else(|| io::Error::other("no log segment"))?;
        active.len += bytes.len() as u64;
        active.records += records;
        // Under the lock, so no reader can find the group in the log before
        // its work is done (the work only counts and hands on in memory).
        let numbered = (state.durable_end..).zip(group.iter_mut().filter(|a| !a.framed.is_empty()));
        for (seq, a) in numbered {
            if let Some(on_durable) = a.on_durable.take() {
                on_durable(seq);
            }
        }
        state.durable_end += records;
        let end = state.durable_end;
        // One age mark per second at most, so a long outage cannot grow
        // this list without bound.
        let now = SystemTime::now();
        let several = state.ages.len() > 1;
        match state.ages.back_mut() {
            Some(last)
                if several
                    && now
                        .duration_since(last.1)
                        .is_ok_and(|d| d < Duration::from_secs(1)) =>
            {
                last.0 = end
            }
            _ => state.ages.push_back((end, now)),
        }
        self.shared.publish(&state);
        drop(state);
        self.shared.durable.notify_all();
        Ok(end)
    }

    /// Starts a new segment when the active one is full, or when it holds
    /// only confirmed records (so it can be deleted).
    fn rotate_if_due(&mut self) -> io::Result<()> {
        let (due, end) = {
            let state = self.shared.lock();
            (
                self.file.is_some() && rotation_due(&self.shared, &state),
                state.durable_end,
            )
        };
        if due {
            self.file = None;
            self.start_segment(end)?;
            let mut state = self.shared.lock();
            self.cleanup_due |= state.set_aside_confirmed();
            self.shared.publish(&state);
        }
        Ok(())
    }

    /// Seals the active segment and makes the spare the new active one,
    /// named after `first`. Each step is safe to be cut short by a crash:
    /// 1. the old segment is cut to its data and fsync'd: from here on it
    ///    reads exactly as a sealed segment (and as the newest, it keeps
    ///    the numbering should the next steps not happen);
    /// 2. the spare is whole, zero-filled and fsync'd (made here if the
    ///    helper has none ready); until renamed, its name is no segment's;
    /// 3. it is renamed to the new segment's name and the folder fsync'd
    ///    before any record goes in: a crash leaves an empty newest
    ///    segment of number `first`, which start-up takes as active.
    ///
    /// The next spare is then requested from the helper.
    fn start_segment(&mut self, first: u64) -> io::Result<()> {
        self.file = None;
        self.seal_active()?;
        let spare = self.spare.take()?;
        let path = self.shared.dir.join(segment::file_name(first));
        fs::rename(&spare, &path)?;
        sync_dir(&self.shared.dir)?;
        let file = OpenOptions::new().write(true).open(&path)?;
        self.spare.request();
        let mut state = self.shared.lock();
        if state.segments.back().is_some_and(|s| s.first == first) {
            // An empty segment with this number existed: the spare
            // replaced its file.
            if let Some(s) = state.segments.back_mut() {
                s.sealed = false;
                s.len = 0;
            }
        } else {
            state.segments.push_back(Segment {
                first,
                path,
                len: 0,
                records: 0,
                sealed: false,
            });
        }
        drop(state);
        self.file = Some(file);
        self.data_end = 0;
        Ok(())
    }

    /// Cuts the active segment to its records, so it reads as today's
    /// sealed segments do, and marks it sealed.
    fn seal_active(&mut self) -> io::Result<()> {
        let unsealed = {
            let state = self.shared.lock();
            state
                .segments
                .back()
                .filter(|s| !s.sealed)
                .map(|s| (s.path.clone(), s.len))
        };
        if let Some((path, len)) = unsealed {
            let file = OpenOptions::new().write(true).open(&path)?;
            file.set_len(len)?;
            if self.shared.fsync {
                file.sync_all()?;
            }
            if let Some(s) = self.shared.lock().segments.back_mut() {
                s.sealed = true;
            }
        }
        Ok(())
    }

    fn abandon_segment(&mut self) {
        self.file = None;
        // Best effort: if this fails too, the next group's new segment
        // tries again.
        if let Err(error) = self.seal_active() {
            tracing::error!(error = %error, "cannot cut a log segment back after a failed write");
        }
    }
}

/// Reads records back in sequence order, waiting for them to be durable.
pub struct Reader {
    shared: Arc<Shared>,
    current: Option<SegmentReader>,
    /// Number of the next record to hand out.
    next: u64,
}

impl Reader {
    /// Number of the next record this reader hands out.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Moves past the records before `seq`, handed on another way: they
    /// are not handed out (the file is still read past them when the
    /// reader next reads).
    pub fn skip_to(&mut self, seq: u64) {
        self.next = self.next.max(seq);
    }

    /// Up to `max` records, waiting at most `wait` for the first one.
    pub fn read(&mut self, max: usize, wait: Duration) -> io::Result<Vec<Entry>> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        loop {
            // Where the next record lives and how much of it is durable.
            let target = {
                let mut state = self.shared.lock();
                while state.durable_end <= self.next {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() || !out.is_empty() {
                        return Ok(out);
                    }
                    state = crate::lock::or_abort(
                        self.shared.durable.wait_timeout(state, left),
                        "the journal's state",
                    )
                    .0;
                }
                let seg = state
                    .segments
                    .iter()
                    .find(|s| s.end() > self.next && s.records > 0)
                    .map(|s| (s.first, s.path.clone(), s.len));
                match seg {
                    Some(found) => found,
                    // Records below the oldest segment were confirmed and
                    // deleted: nothing to hand out below it.
                    None => return Ok(out),
                }
            };
            let (first, path, durable_len) = target;
            if self.current.as_ref().is_none_or(|r| r.path != path) {
                self.current = Some(SegmentReader::open(path, first)?);
            }
            let Some(reader) = self.current.as_mut() else {
                return Ok(out);
            };
            if first > self.next {
                // A gap (a damaged tail was cut): continue after it.
                self.next = first;
            }
            let mut progressed = false;
            while out.len() < max {
                match reader.next(durable_len)? {
                    Read1::Record { seq, payload } => {
                        progressed = true;
                        if seq >= self.next {
                            self.next = seq + 1;
                            out.push(Entry::Record { seq, payload });
                        }
                    }
                    Read1::Corrupt { seq } => {
                        progressed = true;
                        if seq >= self.next {
                            self.next = seq + 1;
                            out.push(Entry::Corrupt { seq });
                        }
                    }
                    Read1::Caught => break,
                }
            }
            if out.len() >= max {
                return Ok(out);
            }
            if !progressed {
                // The segment holds no more records than we read: the next
                // one (if any) continues the sequence.
                let state = self.shared.lock();
                let after = state
                    .segments
                    .iter()
                    .find(|s| s.first > first)
                    .map(|s| s.first);
                drop(state);
                match after {
                    Some(next_first) if self.next < next_first => self.next = next_first,
                    Some(_) => {}
                    None => {
                        if Instant::now() >= deadline || !out.is_empty() {
                            return Ok(out);
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                if Instant::now() >= deadline {
                    return Ok(out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
