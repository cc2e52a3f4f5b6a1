//! Backups of the embedded engine: the consistent copy a running server
//! takes of its namespaces ([`SnapshotCopy`]), the gzipped tar archive it
//! streams to the caller ([`archive`]), and putting an archive back into a
//! data directory ([`restore`]).
//!
//! The copy is physical (the engine's files, checkpointed) rather than an
//! export of memories: it restores in the time it takes to unpack, with the
//! indexes already built, and needs no list of tenants. The price is that it
//! restores only into the embedded engine; a tenant moves between backends
//! with Export and Import. The copy is staged on the data directory's own
//! file system first, so writes wait only for a local copy, never for the
//! caller to download the archive.
//!
//! The engine preallocates its files sparsely (a namespace of three memories
//! spans 170 MB of mostly holes), so copies and restores skip zero blocks
//! instead of writing them, the archive stores such files as GNU sparse
//! entries, and it is gzipped, which shrinks the zeros left.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context;
use bytes::Bytes;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use futures::Stream;
use serde::{Deserialize, Serialize};
use tar::EntryType;
use tokio::sync::mpsc;

use crate::backend::VectorStore;
use crate::backend::embedded::EmbeddedStore;
use crate::config::{BackendKind, Config};
use crate::error::{Error, Result};

mod download;

pub use download::{Downloaded, download};

/// Where a running server stages its copies, inside `backend.embedded.path`.
/// Anything left here (by a server that died mid-copy) is removed at start.
pub const STAGING_DIR: &str = ".snapshots";
/// The archive's first entry: what it holds and which vecmem wrote it.
const MANIFEST: &str = "vecmem-snapshot.json";
const FORMAT: u32 = 1;
/// Bytes per streamed chunk (one gRPC message, well under the 4 MiB clients
/// accept by default).
const CHUNK: usize = 1 << 20;
/// A block of this many zero bytes is left as a hole when a file is written.
const SPARSE_BLOCK: usize = 64 << 10;
/// What a hole reads as; compared with `memcmp`, fast in any build.
static ZEROS: [u8; SPARSE_BLOCK] = [0; SPARSE_BLOCK];

/// A copy of some namespaces' data in a staging directory, removed when
/// dropped. Each namespace's directory is as the engine left it at one
/// checkpoint: every write acknowledged before the copy of that namespace
/// began, and none half-applied.
#[derive(Debug)]
pub struct SnapshotCopy {
    dir: StagedDir,
    namespaces: Vec<String>,
}

impl SnapshotCopy {
    /// An empty copy, staged in the data directory `data`.
    pub fn create(data: &Path) -> Result<Self> {
        Ok(Self {
            dir: StagedDir::create(data, "snapshot").map_err(Error::internal)?,
            namespaces: Vec::new(),
        })
    }

    /// Where `namespace`'s copy goes; the caller fills it before the next.
    pub fn add_namespace(&mut self, namespace: &str) -> PathBuf {
        self.namespaces.push(namespace.to_owned());
        self.dir.path().join(namespace)
    }
}

/// A directory of its own under the data directory's [`STAGING_DIR`],
/// removed when dropped.
#[derive(Debug)]
struct StagedDir(PathBuf);

impl StagedDir {
    fn create(data: &Path, purpose: &str) -> io::Result<Self> {
        let dir = data
            .join(STAGING_DIR)
            .join(format!("{purpose}-{}", uuid::Uuid::now_v7()));
        fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if let Err(err) = fs::remove_dir_all(&self.0) {
            tracing::warn!(path = %self.0.display(), error = %err, "staged directory not removed");
        }
    }
}

/// Removes the copies a previous server left staged (it stopped mid-copy).
pub fn clear_staging(data: &Path) -> io::Result<()> {
    match fs::remove_dir_all(data.join(STAGING_DIR)) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    vecmem_version: String,
    created_at: String,
    namespaces: Vec<String>,
}

/// `copy` as a tar archive, in chunks, written as the caller reads them; the
/// staging directory is removed once the archive is written or the caller
/// goes away.
pub fn archive(copy: SnapshotCopy) -> impl Stream<Item = Result<Bytes>> + Send + 'static {
    let (sender, mut receiver) = mpsc::channel(2);
    tokio::task::spawn_blocking(move || {
        let chunks = ChunkWriter {
            sender: sender.clone(),
            buffer: Vec::with_capacity(CHUNK),
        };
        if let Err(err) = write_archive(&copy, chunks) {
            // A caller that went away is not an error worth a log line.
            if err.kind() != io::ErrorKind::BrokenPipe {
                tracing::error!(error = %err, "snapshot archive failed");
                let _ = sender.blocking_send(Err(Error::internal(err)));
            }
        }
    });
    futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

fn write_archive(copy: &SnapshotCopy, chunks: ChunkWriter) -> io::Result<()> {
    let now = SystemTime::now();
    let manifest = Manifest {
        format: FORMAT,
        vecmem_version: env!("CARGO_PKG_VERSION").to_owned(),
        created_at: humantime::format_rfc3339_seconds(now).to_string(),
        namespaces: copy.namespaces.clone(),
    };
    let manifest = serde_json::to_vec_pretty(&manifest)?;
    let mut tar = tar::Builder::new(GzEncoder::new(chunks, Compression::fast()));
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(
        now.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs()),
    );
    header.set_cksum();
    tar.append_data(&mut header, MANIFEST, manifest.as_slice())?;
    for namespace in &copy.namespaces {
        tar.append_dir_all(namespace, copy.dir.path().join(namespace))?;
    }
    tar.into_inner()?.finish()?.flush()
}

/// Sends what is written in chunks of [`CHUNK`] bytes; fails with
/// `BrokenPipe` once the receiving side is gone.
struct ChunkWriter {
    sender: mpsc::Sender<Result<Bytes>>,
    buffer: Vec<u8>,
}

impl ChunkWriter {
    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
        self.sender
            .blocking_send(Ok(chunk.into()))
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let taken = bytes.len().min(CHUNK - self.buffer.len());
        self.buffer.extend_from_slice(&bytes[..taken]);
        if self.buffer.len() == CHUNK {
            self.send_buffer()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffer()
    }
}

/// Restores the archive at `archive` into the embedded data directory of
/// `config` (the server must be stopped), then opens it as the server would
/// (without starting index builds), so a dimension or distance that
/// disagrees with the config fails here rather than at the next start.
/// Answers the namespaces restored.
pub async fn restore_deployment(config: &Config, archive: &Path) -> anyhow::Result<Vec<String>> {
    anyhow::ensure!(
        config.backend.kind == BackendKind::Embedded,
        "backend.kind is qdrant: restore Qdrant from its own snapshots (see the README's \
         \"Backups\" section); vecmem snapshots restore into the embedded engine"
    );
    let data = config.backend.embedded.path.clone();
    let archive = archive.to_owned();
    let restored = tokio::task::spawn_blocking(move || restore(&archive, &data)).await??;
    let embedded = config.backend.embedded.clone();
    let namespaces = config.namespaces.clone();
    let store =
        tokio::task::spawn_blocking(move || EmbeddedStore::open_unindexed(&embedded, &namespaces))
            .await?
            .context("the restored data does not open with this config")?;
    store.close().await?;
    Ok(restored)
}

/// Unpacks the archive at `archive` into the data directory `data`, one
/// directory per namespace it holds, and names them. Refuses, changing
/// nothing, if the file is not a vecmem snapshot or a namespace it holds
/// already has data in `data`. The server must not be running on `data`.
pub fn restore(archive: &Path, data: &Path) -> anyhow::Result<Vec<String>> {
    fs::create_dir_all(data).with_context(|| format!("cannot create {}", data.display()))?;
    // Unpacked beside its destination, so each namespace moves into place
    // with a rename.
    let unpacked = StagedDir::create(data, "restore")
        .with_context(|| format!("cannot stage the restore in {}", data.display()))?;
    let file = File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    unpack(file, unpacked.path())
        .with_context(|| format!("{} is not a readable snapshot", archive.display()))?;
    let manifest = fs::read(unpacked.path().join(MANIFEST)).with_context(|| {
        format!(
            "{} is not a vecmem snapshot: it has no {MANIFEST}",
            archive.display()
        )
    })?;
    let manifest: Manifest = serde_json::from_slice(&manifest)
        .with_context(|| format!("{} has an unreadable {MANIFEST}", archive.display()))?;
    anyhow::ensure!(
        manifest.format == FORMAT,
        "{} is a snapshot of format {}; this vecmem restores format {FORMAT}",
        archive.display(),
        manifest.format
    );
    for namespace in &manifest.namespaces {
        let target = data.join(namespace);
        anyhow::ensure!(
            is_absent_or_empty(&target)?,
            "namespace {namespace}: {} already holds data; restore into an empty data \
             directory, or move that one aside",
            target.display()
        );
        anyhow::ensure!(
            unpacked.path().join(namespace).is_dir(),
            "the snapshot names namespace {namespace} but holds no data for it"
        );
    }
    for namespace in &manifest.namespaces {
        let target = data.join(namespace);
        if target.exists() {
            fs::remove_dir(&target)?;
        }
        fs::rename(unpacked.path().join(namespace), &target)
            .with_context(|| format!("cannot move namespace {namespace} into place"))?;
    }
    Ok(manifest.namespaces)
}

/// Unpacks the gzipped tar `archive` into `into`, files sparse. Only plain
/// files and directories below `into` are accepted: a snapshot holds
/// nothing else.
fn unpack(archive: File, into: &Path) -> anyhow::Result<()> {
    let mut archive = tar::Archive::new(GzDecoder::new(BufReader::new(archive)));
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        anyhow::ensure!(
            path.components()
                .all(|part| matches!(part, Component::Normal(_))),
            "entry {} leads outside the archive",
            path.display()
        );
        let target = into.join(&path);
        match entry.header().entry_type() {
            EntryType::Directory => fs::create_dir_all(&target)?,
            // The tar crate writes a file with holes as a GNU sparse entry.
            EntryType::Regular | EntryType::GNUSparse => {
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent)?;
                }
                let mut file = File::create(&target)?;
                write_sparse(&mut entry, &mut file)?;
                file.sync_all()?;
            }
            other => anyhow::bail!("entry {} is a {other:?}", path.display()),
        }
    }
    Ok(())
}

/// Copies the directory tree `from` to `to`, which must not exist, leaving
/// out the paths `skip` names; files keep their holes.
pub fn copy_tree(from: &Path, to: &Path, skip: &dyn Fn(&Path) -> bool) -> io::Result<()> {
    fs::create_dir(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        if skip(&entry.path()) {
            continue;
        }
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target, skip)?;
        } else {
            let mut source = File::open(entry.path())?;
            write_sparse(&mut source, &mut File::create(target)?)?;
        }
    }
    Ok(())
}

/// Writes all `reader` yields into the new file `file`, seeking over the
/// blocks that are all zeros so that they stay holes.
fn write_sparse(reader: &mut impl Read, file: &mut File) -> io::Result<()> {
    let mut block = vec![0; SPARSE_BLOCK];
    let mut len = 0;
    loop {
        let filled = read_block(reader, &mut block)?;
        if filled == 0 {
            break;
        }
        let data = &block[..filled];
        if data == &ZEROS[..filled] {
            file.seek(SeekFrom::Current(filled as i64))?;
        } else {
            file.write_all(data)?;
        }
        len += filled as u64;
    }
    // A file that ends in a hole gets its length.
    file.set_len(len)
}

/// Fills `block` from `reader`, short only at its end.
fn read_block(reader: &mut impl Read, block: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < block.len() {
        match reader.read(&mut block[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

fn is_absent_or_empty(dir: &Path) -> anyhow::Result<bool> {
    match fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(err) => Err(err).with_context(|| format!("cannot read {}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn a_copied_tree_has_the_same_bytes_and_keeps_its_holes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let from = dir.path().join("from");
        fs::create_dir_all(from.join("segments")).expect("dirs");
        // 8 MiB with data only at the start, the middle and the end.
        let sparse = from.join("segments").join("vectors.dat");
        let mut file = File::create(&sparse).expect("file");
        for offset in [0u64, 4 << 20, (8 << 20) - 3] {
            file.seek(SeekFrom::Start(offset)).expect("seek");
            file.write_all(b"abc").expect("write");
        }
        fs::write(from.join("journal"), b"").expect("empty file");
        drop(file);

        let to = dir.path().join("to");
        copy_tree(&from, &to, &|_| false).expect("copy");
        let copied = to.join("segments").join("vectors.dat");
        assert_eq!(
            fs::read(&copied).expect("read"),
            fs::read(&sparse).expect("read")
        );
        assert_eq!(fs::read(to.join("journal")).expect("read"), b"");
        // Three 64 KiB blocks hold data; the rest stays unallocated.
        let allocated = fs::metadata(&copied).expect("metadata").blocks() * 512;
        assert!(
            allocated <= 3 * SPARSE_BLOCK as u64,
            "{allocated} bytes allocated"
        );
    }

    #[test]
    fn an_archive_entry_outside_the_target_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let archive = dir.path().join("evil.tar.gz");
        let mut tar = tar::Builder::new(GzEncoder::new(
            File::create(&archive).expect("file"),
            Compression::fast(),
        ));
        let mut header = tar::Header::new_gnu();
        header.set_size(4);
        header.set_mode(0o644);
        // `append_data` refuses `..` itself, so write the name raw.
        header.as_old_mut().name[..12].copy_from_slice(b"../escape.tx");
        header.set_cksum();
        tar.append(&header, &b"evil"[..]).expect("append");
        tar.into_inner().expect("tar").finish().expect("gzip");

        let into = dir.path().join("into");
        fs::create_dir_all(&into).expect("dir");
        let refused = unpack(File::open(&archive).expect("open"), &into).expect_err("refused");
        assert!(refused.to_string().contains("leads outside"), "{refused}");
        assert!(!dir.path().join("escape.tx").exists());
    }
}
