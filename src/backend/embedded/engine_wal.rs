//! The engine's own WAL, kept short. qdrant-edge 0.7.2 appends every write
//! to a WAL in `<namespace>/wal` and never reads it back or truncates it, so
//! it grows by every write's vectors and payload for as long as the data
//! lives (7.7 GB after five minutes of flat-out ingest, benches/README.md).
//! vecmem's own journal is what makes writes durable; of the engine's WAL
//! only its length matters: it numbers the next write, and the engine
//! ignores a write numbered below the version a point already has.
//!
//! The WAL is a directory of segments: `closed-<first index>`, full, and
//! `open-<n>`, the one being written and the ones made ready for it. The
//! next number follows from the last closed segment and the open ones, so
//! every closed segment but the last can go: that is what the WAL's own
//! `prefix_truncate` deletes when acknowledged up to its end, which the
//! engine never calls. This does it while the engine is not running on the
//! directory: at start-up, and by leaving them out of a snapshot's copy.

use std::io;
use std::path::{Path, PathBuf};

/// The closed segments of the WAL in `wal_dir` that numbering no longer
/// needs: all but the one that starts last. None when there is no WAL.
pub fn superseded_segments(wal_dir: &Path) -> io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(wal_dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut closed = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let start = name
            .to_str()
            .and_then(|name| name.strip_prefix("closed-"))
            .and_then(|start| start.parse::<u64>().ok());
        if let Some(start) = start {
            closed.push((start, entry.path()));
        }
    }
    closed.sort_unstable();
    closed.pop();
    Ok(closed.into_iter().map(|(_, path)| path).collect())
}

/// Deletes the superseded segments of the WAL in `wal_dir`, which no engine
/// may have open; answers the bytes freed.
pub fn truncate(wal_dir: &Path) -> io::Result<u64> {
    let mut freed = 0;
    for segment in superseded_segments(wal_dir)? {
        freed += std::fs::metadata(&segment)?.len();
        std::fs::remove_file(&segment)?;
    }
    Ok(freed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_closed_segment_but_the_last_is_superseded() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["closed-0", "closed-250", "closed-1000", "open-7", "open-8"] {
            std::fs::write(dir.path().join(name), name).expect("write");
        }
        let mut superseded = superseded_segments(dir.path()).expect("list");
        superseded.sort();
        assert_eq!(
            superseded,
            [dir.path().join("closed-0"), dir.path().join("closed-250")]
        );
        assert_eq!(truncate(dir.path()).expect("truncate"), 18);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .expect("read")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .into_string()
                    .expect("utf-8")
            })
            .collect();
        left.sort();
        assert_eq!(left, ["closed-1000", "open-7", "open-8"]);
    }

    #[test]
    fn a_wal_with_at_most_one_closed_segment_or_none_keeps_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(
            superseded_segments(&dir.path().join("absent"))
                .expect("list")
                .is_empty()
        );
        std::fs::write(dir.path().join("closed-5"), "x").expect("write");
        std::fs::write(dir.path().join("open-1"), "x").expect("write");
        assert_eq!(truncate(dir.path()).expect("truncate"), 0);
        assert!(dir.path().join("closed-5").exists());
    }
}
