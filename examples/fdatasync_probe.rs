//! Why the journal preallocates its segments: times `fdatasync` after
//! writing 4 KiB blocks to a file, once appending (the file grows, so the
//! file system commits metadata as well) and once overwriting a file filled
//! with zeros and fsync'd beforehand (data only).
//!
//! `cargo run --release --example fdatasync_probe -- [DIR] [BLOCKS]`
//! (DIR defaults to the current folder; use one on the disk the log uses).
//! Writes and then deletes two scratch files; reads nothing else.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

const BLOCK: usize = 4096;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| ".".into()));
    let blocks: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(400);
    let append = dir.join("fdatasync-probe-append.tmp");
    let overwrite = dir.join("fdatasync-probe-overwrite.tmp");

    let appended = {
        let file = scratch(&append)?;
        time(blocks, |_, block| {
            (&file).write_all(block)?;
            file.sync_data()
        })?
    };
    let overwritten = {
        let mut file = scratch(&overwrite)?;
        file.write_all(&vec![0u8; blocks * BLOCK])?;
        file.sync_all()?;
        time(blocks, |i, block| {
            file.write_all_at(block, (i * BLOCK) as u64)?;
            file.sync_data()
        })?
    };
    std::fs::remove_file(&append)?;
    std::fs::remove_file(&overwrite)?;
    println!(
        "fdatasync after each of {blocks} writes of {BLOCK} bytes in {}",
        dir.display()
    );
    report("appending", appended);
    report("overwriting zeros", overwritten);
    Ok(())
}

fn scratch(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

/// Microseconds each `step` took.
fn time(
    blocks: usize,
    mut step: impl FnMut(usize, &[u8]) -> std::io::Result<()>,
) -> std::io::Result<Vec<u128>> {
    let block = vec![0x5au8; BLOCK];
    let mut micros = Vec::with_capacity(blocks);
    for i in 0..blocks {
        let start = Instant::now();
        step(i, &block)?;
        micros.push(start.elapsed().as_micros());
    }
    Ok(micros)
}

fn report(what: &str, mut micros: Vec<u128>) {
    micros.sort_unstable();
    let at = |q: f64| micros[((micros.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    println!(
        "{what:>18}: p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
}
