//! The durable local log between ingestion and ClickHouse. A hit is
//! answered 202 only once its post-privacy form ([`record`]) is in a
//! checksummed, fsync'd segment file ([`segment`]); the aggregator reads
//! hits back from here, and a segment is deleted only after ClickHouse
//! confirmed every record in it ([`Journal::confirm`]).
//!
//! One appender thread writes: it takes every append that arrived while
//! the previous `fdatasync` ran and covers them all with one more (group
//! commit, no timer). Each record gets the next sequence number; a
//! segment's file name is the sequence number of its first record, and the
//! newest segment is never deleted, so numbering survives restarts.
//!
//! The log's size on disk is capped: an append that would pass the cap is
//! refused (ingest answers 503), never queued in memory. Must not: hold a
//! client address or raw header (records are encoded after the privacy
//! pipeline), or talk to ClickHouse.

pub mod in_flight;
pub mod record;
pub mod segment;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
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
}

/// How the log is kept.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Cap on the log's size on disk.
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
    /// Bytes known durable.
    len: u64,
    /// Records in it, all durable.
    records: u64,
    /// No more appends go to it.
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
    /// Bytes on disk plus bytes reserved by appends not yet written.
    bytes: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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
/// waits for it (a client that hung up still had its hit logged).
pub type OnDurable = Box<dyn FnOnce() + Send>;

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

impl Journal {
    /// Opens (or creates) the log in `dir`: scans every segment, truncates a
    /// torn tail, counts damaged records, and starts the appender thread.
    pub fn open(
        dir: &Path,
        options: Options,
        metrics: Arc<Metrics>,
    ) -> io::Result<(Journal, Recovery)> {
        let Options { max_bytes, fsync } = options;
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
        let id = read_or_create_id(dir)?;

        let mut found: Vec<(u64, PathBuf)> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                segment::parse_name(&e.file_name().to_string_lossy()).map(|first| (first, e.path()))
            })
            .collect();
        found.sort();
        let mut recovery = Recovery::default();
        let mut segments = VecDeque::new();
        let count = found.len();
        for (i, (first, path)) in found.into_iter().enumerate() {
            let scan = segment::scan(&path)?;
            if scan.tail > 0 {
                // The newest segment may end in a record cut short by a
                // crash; anywhere else it is damage. Either way the rest
                // cannot be framed.
                if i + 1 == count {
                    recovery.torn_tails += 1;
                } else {
                    recovery.corrupt += 1;
                }
                tracing::warn!(segment = %path.display(), kept = scan.good_len, cut = scan.tail, "log segment ends in an unreadable record; cut back");
                segment::truncate(&path, scan.good_len)?;
            }
            if scan.corrupt > 0 {
                tracing::warn!(segment = %path.display(), records = scan.corrupt, "log records failed their checksum; skipped");
            }
            recovery.corrupt += scan.corrupt;
            recovery.records += scan.records;
            segments.push_back(Segment {
                first,
                path,
                len: scan.good_len,
                records: scan.records,
                sealed: true,
            });
        }
        recovery.segments = segments.len();
        let end = segments.iter().map(Segment::end).max().unwrap_or(1);
        recovery.next_seq = end;
        // Empty old segments carry nothing; the newest keeps the numbering.
        let newest = segments.back().map(|s| s.first);
        segments.retain(|s| {
            let keep = s.records > 0 || Some(s.first) == newest;
            if !keep {
                let _ = fs::remove_file(&s.path);
            }
            keep
        });

        let bytes: u64 = segments.iter().map(|s| s.len).sum();
        let noted = fs::read_to_string(dir.join(CONFIRMED_FILE))
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let first_kept = segments
            .front()
            .map_or(end, |s| s.first)
            .max(noted.min(end));
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            _lock: lock,
            max_bytes,
            fsync,
            segment_bytes: (max_bytes / 8).clamp(16 * 1024, 64 * 1024 * 1024),
            state: Mutex::new(State {
                segments,
                durable_end: end,
                confirmed_end: first_kept,
                ages: VecDeque::from([(end, SystemTime::now())]),
            }),
            durable: Condvar::new(),
            bytes: AtomicU64::new(bytes),
            metrics: metrics.clone(),
        });
        delete_confirmed(&shared, &mut shared.lock());
        metrics
            .log_torn_tails
            .fetch_add(recovery.torn_tails, Ordering::Relaxed);
        metrics
            .log_corrupt
            .fetch_add(recovery.corrupt, Ordering::Relaxed);
        let active = open_segment(dir, end)?;
        {
            let mut state = shared.lock();
            if state.segments.back().is_some_and(|s| s.first == end) {
                state.segments.pop_back();
            }
            state.segments.push_back(Segment {
                first: end,
                path: dir.join(segment::file_name(end)),
                len: 0,
                records: 0,
                sealed: false,
            });
            shared.publish(&state);
        }
        let (appends, queue) = mpsc::channel();
        let appender = Appender {
            shared: shared.clone(),
            file: Some(active),
            queue,
        };
        std::thread::Builder::new()
            .name("tamis-journal".into())
            .spawn(move || appender.run())?;
        Ok((
            Journal {
                shared,
                appends,
                id: Arc::from(id.as_str()),
            },
            recovery,
        ))
    }

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

    /// Queues `payload` without waiting for it (counters nobody waits for).
    pub fn append_detached(&self, payload: &[u8]) -> Result<(), AppendError> {
        self.queue(payload, None, None)
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

    /// Records ClickHouse confirmed: every number below `end`. Deletes the
    /// segments holding nothing else.
    pub fn confirm(&self, end: u64) {
        let mut state = self.shared.lock();
        if end <= state.confirmed_end {
            return;
        }
        state.confirmed_end = end.min(state.durable_end);
        while state.ages.len() > 1 && state.ages[1].0 <= state.confirmed_end {
            state.ages.pop_front();
        }
        delete_confirmed(&self.shared, &mut state);
        self.shared.publish(&state);
        note_confirmed(&self.shared.dir, state.confirmed_end);
        // The active segment holds only confirmed records: let the appender
        // rotate it away now, not at the next hit (which a full log would
        // refuse).
        let reclaimable = state.segments.back().is_some_and(|a| {
            !a.sealed
                && a.records > 0
                && a.end() <= state.confirmed_end
                && a.len >= self.shared.segment_bytes / 8
        });
        drop(state);
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

/// Removes sealed segments whose every record is confirmed.
fn delete_confirmed(shared: &Shared, state: &mut State) {
    while let Some(front) = state.segments.front() {
        if !front.sealed || front.end() > state.confirmed_end {
            break;
        }
        match fs::remove_file(&front.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(segment = %front.path.display(), error = %e, "cannot delete a confirmed log segment");
                break;
            }
        }
        shared.bytes.fetch_sub(front.len, Ordering::AcqRel);
        state.segments.pop_front();
    }
}

/// Best effort: if the note is lost, receipts in ClickHouse still say it.
fn note_confirmed(dir: &Path, end: u64) {
    let tmp = dir.join(format!("{CONFIRMED_FILE}.tmp"));
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(end.to_string().as_bytes()))
        .and_then(|()| fs::rename(&tmp, dir.join(CONFIRMED_FILE)));
    if let Err(error) = written {
        tracing::warn!(error = %error, "cannot note the confirmed end of the durable log");
    }
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
    let tmp = dir.join(format!("{ID_FILE}.tmp"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(id.as_bytes())?;
    file.sync_all()?;
    fs::rename(&tmp, &path)?;
    sync_dir(dir)?;
    Ok(id)
}

fn open_segment(dir: &Path, first: u64) -> io::Result<File> {
    let path = dir.join(segment::file_name(first));
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)?;
    sync_dir(dir)?;
    Ok(file)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

struct Appender {
    shared: Arc<Shared>,
    file: Option<File>,
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
            let result = self.write(&buffer, records);
            match result {
                Ok(end) => {
                    let mut seq = end - records;
                    for a in group.drain(..) {
                        if a.framed.is_empty() {
                            continue;
                        }
                        if let Some(on_durable) = a.on_durable {
                            on_durable();
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
        }
    }

    /// Writes one group and makes it durable; returns the new durable end.
    fn write(&mut self, bytes: &[u8], records: u64) -> io::Result<u64> {
        self.rotate_if_due()?;
        if records == 0 {
            return Ok(self.shared.lock().durable_end);
        }
        let file = match self.file.as_mut() {
            Some(f) => f,
            None => {
                let end = self.shared.lock().durable_end;
                self.start_segment(end)?;
                self.file
                    .as_mut()
                    .ok_or_else(|| io::Error::other("no log segment"))?
            }
        };
        let fsync = self.shared.fsync;
        let written = file
            .write_all(bytes)
            .and_then(|()| if fsync { file.sync_data() } else { Ok(()) });
        if let Err(error) = written {
            // Whatever part reached the file is not counted: cut it off and
            // continue in a fresh segment.
            self.abandon_segment();
            return Err(error);
        }
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

    /// Starts a new segment when the active one is large, or when it holds
    /// only confirmed records (so it can be deleted).
    fn rotate_if_due(&mut self) -> io::Result<()> {
        let (due, end) = {
            let state = self.shared.lock();
            match state.segments.back() {
                Some(active) => {
                    let confirmed = active.records > 0 && active.end() <= state.confirmed_end;
                    let due = active.len >= self.shared.segment_bytes
                        || (confirmed && active.len >= self.shared.segment_bytes / 8);
                    (due && self.file.is_some(), state.durable_end)
                }
                None => (false, state.durable_end),
            }
        };
        if due {
            self.file = None;
            self.start_segment(end)?;
            let mut state = self.shared.lock();
            delete_confirmed(&self.shared, &mut state);
            self.shared.publish(&state);
        }
        Ok(())
    }

    fn start_segment(&mut self, first: u64) -> io::Result<()> {
        let file = open_segment(&self.shared.dir, first)?;
        let mut state = self.shared.lock();
        for s in state.segments.iter_mut() {
            s.sealed = true;
        }
        if state.segments.back().is_some_and(|s| s.first == first) {
            // An empty segment with this number exists already: reuse it.
            if let Some(s) = state.segments.back_mut() {
                s.sealed = false;
            }
        } else {
            state.segments.push_back(Segment {
                first,
                path: self.shared.dir.join(segment::file_name(first)),
                len: 0,
                records: 0,
                sealed: false,
            });
        }
        self.file = Some(file);
        Ok(())
    }

    fn abandon_segment(&mut self) {
        self.file = None;
        let state = self.shared.lock();
        if let Some(active) = state.segments.back() {
            let _ = segment::truncate(&active.path, active.len);
        }
        drop(state);
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
                    state = self
                        .shared
                        .durable
                        .wait_timeout(state, left)
                        .unwrap_or_else(|e| e.into_inner())
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
