//! A namespace's journal: every acknowledged write of the embedded engine,
//! kept on disk until the engine's own files hold it.
//!
//! qdrant-edge 0.7.2 writes a WAL but never replays it on load, so only its
//! `flush()` makes data durable. `flush()` cannot run beside an index build:
//! it panics if it cannot take the segment lock at once, which a build holds
//! for short moments, and a point changed while a build runs lives only in
//! memory until the build ends. Flushing on every write therefore made every
//! write wait for whole index builds (tens of seconds on 100k vectors).
//! Instead a write is applied to the engine, appended here and fsynced, and
//! then acknowledged; between index builds the indexer flushes the engine and
//! empties the journal (a checkpoint); at start-up the journal is replayed
//! onto what the engine loaded.
//!
//! Entries are after-images (each changed point whole, as it is after the
//! write, or its removal), never the operations themselves: a payload merge
//! replayed onto a point that the crash lost would change nothing, and a
//! delete by filter replayed onto later data would delete the wrong points.
//! Replaying after-images in order gives the acknowledged state whatever
//! part of the writes the engine had persisted on its own.
//!
//! On disk: frames of `[length: u32 LE][crc32: u32 LE][MessagePack entry]`.
//! A torn or corrupt last frame (the process died while appending it, so
//! its write was never acknowledged) ends the replay.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;

use qdrant_edge::{PointId, PointStructPersisted};
use serde::{Deserialize, Serialize};

const FILE_NAME: &str = "vecmem-journal";
const HEADER_LEN: usize = 8;

/// What one write left behind.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Entry {
    /// These points, whole, as they are after the write.
    Put(Vec<PointStructPersisted>),
    /// These points no longer exist.
    Remove(Vec<PointId>),
}

impl Entry {
    pub fn is_empty(&self) -> bool {
        match self {
            Entry::Put(points) => points.is_empty(),
            Entry::Remove(ids) => ids.is_empty(),
        }
    }
}

pub struct Journal {
    file: File,
    len: u64,
}

impl Journal {
    /// Opens the journal in `dir` and hands `replay` each entry it holds
    /// (those not yet checkpointed), oldest first, one at a time; returns
    /// the journal and how many entries were replayed.
    pub fn open<E>(
        dir: &Path,
        mut replay: impl FnMut(Entry) -> Result<(), E>,
    ) -> Result<(Self, usize), E>
    where
        E: From<io::Error>,
    {
        let path = dir.join(FILE_NAME);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let len = file.metadata()?.len();
        let mut reader = BufReader::new(&file);
        let mut intact = 0;
        let mut replayed = 0;
        while let Some((entry, frame_len)) = read_frame(&mut reader)? {
            replay(entry)?;
            intact += frame_len;
            replayed += 1;
        }
        let mut journal = Self { file, len };
        if intact < len {
            tracing::warn!(
                path = %path.display(),
                dropped_bytes = len - intact,
                "journal ends in a torn write (never acknowledged); dropping it"
            );
            journal.truncate(intact)?;
        }
        Ok((journal, replayed))
    }

    /// Appends `entry` and waits until it is on disk.
    pub fn append(&mut self, entry: &Entry) -> io::Result<()> {
        if entry.is_empty() {
            return Ok(());
        }
        let frame = encode_frame(entry)?;
        if let Err(err) = self
            .file
            .write_all(&frame)
            .and_then(|()| self.file.sync_data())
        {
            // Cut off whatever part reached the file, so the next append
            // does not land behind a torn frame.
            let _ = self.truncate(self.len);
            return Err(err);
        }
        self.len += frame.len() as u64;
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Empties the journal, once the engine holds everything in it.
    pub fn clear(&mut self) -> io::Result<()> {
        self.truncate(0)
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        // Durable before anything is appended after it: a stale entry
        // replayed over newer data would undo an acknowledged write.
        self.file.sync_all()?;
        self.len = len;
        Ok(())
    }
}

fn encode_frame(entry: &Entry) -> io::Result<Vec<u8>> {
    let body = rmp_serde::to_vec_named(entry).map_err(io::Error::other)?;
    let len = u32::try_from(body.len())
        .map_err(|_| io::Error::other("journal entry larger than 4 GiB"))?;
    let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// The next intact frame's entry and length; `None` at the end of the file
/// or at a torn or corrupt frame.
fn read_frame(reader: &mut impl BufRead) -> io::Result<Option<(Entry, u64)>> {
    let mut header = [0; HEADER_LEN];
    if !read_all(reader, &mut header)? {
        return Ok(None);
    }
    let (len, crc) = header.split_at(4);
    let len = u32::from_le_bytes(len.try_into().unwrap_or_default());
    let crc = u32::from_le_bytes(crc.try_into().unwrap_or_default());
    // Read through `take`, so a corrupt length cannot allocate gigabytes.
    let mut body = Vec::new();
    reader.take(u64::from(len)).read_to_end(&mut body)?;
    if body.len() != len as usize || crc32fast::hash(&body) != crc {
        return Ok(None);
    }
    Ok(rmp_serde::from_slice(&body)
        .ok()
        .map(|entry| (entry, (HEADER_LEN + body.len()) as u64)))
}

/// Fills `buf`; false if the file ends first.
fn read_all(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    match reader.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qdrant_edge::{PointStruct, VectorStructPersisted};
    use serde_json::json;

    fn point(n: u64, payload: serde_json::Value) -> PointStructPersisted {
        PointStruct::new(n, vec![n as f32, 0.5], payload).into()
    }

    fn reopen(dir: &Path) -> (Journal, Vec<Entry>) {
        let mut entries = Vec::new();
        let (journal, replayed) = Journal::open(dir, |entry| {
            entries.push(entry);
            Ok::<_, io::Error>(())
        })
        .expect("open journal");
        assert_eq!(replayed, entries.len());
        (journal, entries)
    }

    #[test]
    fn entries_come_back_in_order_until_cleared() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut journal, entries) = reopen(dir.path());
        assert!(entries.is_empty() && journal.is_empty());
        journal
            .append(&Entry::Put(vec![point(1, json!({"a": null, "b": [1]}))]))
            .expect("append");
        journal
            .append(&Entry::Remove(vec![PointId::NumId(1)]))
            .expect("append");
        journal.append(&Entry::Put(vec![])).expect("empty append");
        drop(journal);

        let (mut journal, entries) = reopen(dir.path());
        let [Entry::Put(points), Entry::Remove(ids)] = entries.as_slice() else {
            panic!("two entries, put then remove: {entries:?}");
        };
        assert_eq!(points, &[point(1, json!({"a": null, "b": [1]}))]);
        assert_eq!(
            points[0].vector,
            VectorStructPersisted::Single(vec![1.0, 0.5])
        );
        assert_eq!(ids, &[PointId::NumId(1)]);

        journal.clear().expect("clear");
        drop(journal);
        let (journal, entries) = reopen(dir.path());
        assert!(entries.is_empty() && journal.is_empty());
    }

    #[test]
    fn a_torn_last_frame_is_dropped_and_appending_goes_on_after_the_intact_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut journal, _) = reopen(dir.path());
        journal
            .append(&Entry::Put(vec![point(1, json!({}))]))
            .expect("append");
        drop(journal);
        let whole = std::fs::read(dir.path().join(FILE_NAME)).expect("read");
        let torn = encode_frame(&Entry::Put(vec![point(2, json!({}))])).expect("encode");
        for cut in [3, HEADER_LEN, torn.len() - 1] {
            let mut bytes = whole.clone();
            bytes.extend_from_slice(&torn[..cut]);
            std::fs::write(dir.path().join(FILE_NAME), &bytes).expect("write");

            let (mut journal, entries) = reopen(dir.path());
            assert_eq!(entries.len(), 1, "cut at {cut}: only the intact frame");
            journal
                .append(&Entry::Remove(vec![PointId::NumId(9)]))
                .expect("append");
            drop(journal);
            let (_, entries) = reopen(dir.path());
            assert!(
                matches!(entries.as_slice(), [Entry::Put(_), Entry::Remove(_)]),
                "cut at {cut}: {entries:?}"
            );
        }
    }

    #[test]
    fn a_corrupt_frame_ends_the_replay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut journal, _) = reopen(dir.path());
        for n in 1..=3 {
            journal
                .append(&Entry::Remove(vec![PointId::NumId(n)]))
                .expect("append");
        }
        drop(journal);
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).expect("read");
        let second_frame_body = bytes.len() / 3 + HEADER_LEN;
        bytes[second_frame_body] ^= 0xff;
        std::fs::write(&path, &bytes).expect("write");
        let (_, entries) = reopen(dir.path());
        assert_eq!(entries.len(), 1);
    }
}
