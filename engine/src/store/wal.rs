//! The embedded ledger's write-ahead log.
//!
//! A group of write batches becomes durable by one sequential append and one `fdatasync`
//! here, instead of redb flushing every B-tree page it touched. redb then applies the group
//! without syncing, and a periodic checkpoint (a durable redb commit) makes everything applied
//! so far durable in the B-trees, after which the WAL segments it covers are deleted. On open,
//! the segments still present are replayed into redb, in order; replaying is idempotent
//! because every operation is a put or delete of a whole value.
//!
//! Layout: `wal/SEGMENT.log` files, each a sequence of frames
//! `[payload length: u32 LE][crc32 of payload: u32 LE][payload]`. A frame whose length or
//! checksum does not match at the end of the last segment is a torn write that was never
//! acknowledged, and replay stops there.

use crate::error::StoreError;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Largest frame accepted on replay (a group is bounded by `max_batch` batches).
const MAX_FRAME: usize = 256 << 20;

fn se<E: std::fmt::Display>(what: &str, e: E) -> StoreError {
    StoreError(format!("{what}: {e}"))
}

/// The WAL directory and its current segment.
pub struct Wal {
    dir: PathBuf,
    segment: u64,
    file: File,
    bytes_in_segment: u64,
    /// Rotate to a new segment after this many bytes.
    segment_bytes: u64,
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:016}.log"))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| se("sync wal dir", e))
}

/// Segment numbers present, ascending.
pub fn list_segments(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for entry in std::fs::read_dir(dir).map_err(|e| se("read wal dir", e))? {
        let entry = entry.map_err(|e| se("read wal dir", e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name
            .strip_suffix(".log")
            .and_then(|n| n.parse::<u64>().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Reads every intact frame of the given segments, in order. Stops at the first torn frame,
/// which may only be at the tail of the last segment; one elsewhere is corruption.
pub fn read_frames(dir: &Path, segments: &[u64]) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut frames = Vec::new();
    for (i, &n) in segments.iter().enumerate() {
        let mut buf = Vec::new();
        File::open(segment_path(dir, n))
            .and_then(|mut f| f.read_to_end(&mut buf))
            .map_err(|e| se("read wal segment", e))?;
        let mut at = 0usize;
        while at < buf.len() {
            let torn = |reason: &str| -> Result<(), StoreError> {
                if i + 1 == segments.len() {
                    tracing::warn!(
                        segment = n,
                        offset = at,
                        reason,
                        "ignoring torn WAL tail (never acknowledged)"
                    );
                    Ok(())
                } else {
                    Err(StoreError(format!(
                        "WAL segment {n} is corrupt at offset {at}: {reason}"
                    )))
                }
            };
            if buf.len() - at < 8 {
                torn("short header")?;
                break;
            }
            let len = u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
            let crc = u32::from_le_bytes([buf[at + 4], buf[at + 5], buf[at + 6], buf[at + 7]]);
            if len > MAX_FRAME || buf.len() - at - 8 < len {
                torn("short frame")?;
                break;
            }
            let payload = &buf[at + 8..at + 8 + len];
            if crc32fast::hash(payload) != crc {
                torn("checksum mismatch")?;
                break;
            }
            frames.push(payload.to_vec());
            at += 8 + len;
        }
    }
    Ok(frames)
}

impl Wal {
    /// Starts a fresh segment numbered after every existing one.
    pub fn create(dir: &Path, segment_bytes: u64) -> Result<Wal, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| se("create wal dir", e))?;
        let next = list_segments(dir)?.last().map_or(1, |n| n + 1);
        let file = Self::open_segment(dir, next)?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            segment: next,
            file,
            bytes_in_segment: 0,
            segment_bytes,
        })
    }

    fn open_segment(dir: &Path, n: u64) -> Result<File, StoreError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(dir, n))
            .map_err(|e| se("open wal segment", e))?;
        sync_dir(dir)?;
        Ok(file)
    }

    /// The segment the next append goes to.
    pub fn segment(&self) -> u64 {
        self.segment
    }

    /// Appends one frame and makes it durable. Returns the segment it landed in.
    pub fn append_durable(
        &mut self,
        payload: &[u8],
        scratch: &mut Vec<u8>,
    ) -> Result<u64, StoreError> {
        if self.bytes_in_segment >= self.segment_bytes {
            self.segment += 1;
            self.file = Self::open_segment(&self.dir, self.segment)?;
            self.bytes_in_segment = 0;
        }
        scratch.clear();
        scratch.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        scratch.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        scratch.extend_from_slice(payload);
        self.file
            .write_all(scratch)
            .map_err(|e| se("append wal", e))?;
        self.file.sync_data().map_err(|e| se("sync wal", e))?;
        self.bytes_in_segment += scratch.len() as u64;
        Ok(self.segment)
    }
}

/// Deletes every segment numbered below `keep_from` (their contents are durable in redb).
pub fn delete_segments_before(dir: &Path, keep_from: u64) -> Result<usize, StoreError> {
    let mut n = 0;
    for s in list_segments(dir)? {
        if s < keep_from {
            std::fs::remove_file(segment_path(dir, s)).map_err(|e| se("remove wal segment", e))?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_across_segments_and_a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(dir.path(), 64).unwrap();
        let mut scratch = Vec::new();
        let mut segs = Vec::new();
        for i in 0..10u8 {
            segs.push(wal.append_durable(&[i; 40], &mut scratch).unwrap());
        }
        assert!(segs.last() > segs.first(), "rotated");
        // Tear the last frame of the last segment.
        let last = *list_segments(dir.path()).unwrap().last().unwrap();
        let p = segment_path(dir.path(), last);
        let len = std::fs::metadata(&p).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let frames = read_frames(dir.path(), &list_segments(dir.path()).unwrap()).unwrap();
        assert_eq!(frames.len(), 9);
        assert!(
            frames
                .iter()
                .enumerate()
                .all(|(i, f)| f == &vec![i as u8; 40])
        );
    }

    #[test]
    fn corruption_before_the_tail_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(dir.path(), 64).unwrap();
        let mut scratch = Vec::new();
        for i in 0..6u8 {
            wal.append_durable(&[i; 40], &mut scratch).unwrap();
        }
        let first = list_segments(dir.path()).unwrap()[0];
        let p = segment_path(dir.path(), first);
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[10] ^= 0xFF;
        std::fs::write(&p, bytes).unwrap();
        assert!(read_frames(dir.path(), &list_segments(dir.path()).unwrap()).is_err());
    }

    #[test]
    fn checkpointed_segments_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(dir.path(), 10).unwrap();
        let mut scratch = Vec::new();
        for _ in 0..4 {
            wal.append_durable(b"0123456789ab", &mut scratch).unwrap();
        }
        let cur = wal.segment();
        assert!(delete_segments_before(dir.path(), cur).unwrap() >= 1);
        assert_eq!(list_segments(dir.path()).unwrap(), vec![cur]);
    }
}
