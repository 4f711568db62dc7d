//! What makes a node's own documents and the requests it accepted survive a
//! crash: every automerge change the node writes is appended to its
//! document's journal file and synced to disk before anything else can see
//! it (a peer's sync message, a websocket, a claim's answer), and every
//! request is appended, as a plain record, before its 202
//! ([`crate::protocol::codec`]: automerge writes them later, in batches).
//!
//! One file per own document (per epoch and scope, `<epoch>-<scope>.log`),
//! and one per epoch for accepted requests (`<epoch>.intake`), so dropping
//! a document, or requests past their TTL, is deleting a file and the
//! journal never needs compaction. Each entry is a frame
//! `[len: u32 LE][crc32: u32 LE][payload]`; a crash can leave a torn last
//! frame, which loading cuts off (it was never synced, so nobody was told
//! of it).
//!
//! Writing and syncing are separate steps, so that the sync (the slow one)
//! need not hold the core's lock: [`Journal::append`] only writes, and
//! advances a sequence number; [`Journal::take_sync`] hands every file with
//! an append not yet known durable to whoever syncs them outside the lock
//! (the group committer, one sync for every request that arrived
//! meanwhile), and the durable watermark says how far the disk has caught
//! up. Whatever lets a write leave the node (a peer's sync message, a
//! websocket notice) first takes and runs such a sync, which is `None` when
//! the watermark has already passed every write.
//!
//! A sync covers every file written since the watermark, not only those
//! written since the last sync was taken: syncs are taken by many callers
//! (the group committer, a step, every session), and one that finishes
//! first must not move the watermark past an append that only a slower one
//! covers. They run one at a time: a sync that finds another running waits
//! for it, and then does nothing if that one covered its appends. Without
//! this, every session's sync message started an `fdatasync` of its own
//! (a node with eight neighbours, one every 10 ms each), on files the
//! group committer was syncing already.
//!
//! A node whose journal is gone (a new disk, a wiped data folder) must not
//! act as the owner of requests its peers still hold under its name, since
//! it has forgotten what it decided about them. So the owner identity lives
//! next to the journal ([`open_owner`]): a node that finds no journal takes a
//! new one (`<node>@<lineage>`), and its old requests simply expire
//! unmatched.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;

use crate::protocol::persist::{Dropped, Loaded, Part, Persist};
use ride_types::halo::Scope;
use ride_types::ids::{Entropy, NodeId};

const FRAME_HEADER: usize = 8;
const OWNER_FILE: &str = "owner";
const DROPPED_FILE: &str = "dropped";

#[derive(Debug, Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("journal {path}: unreadable: {source}")]
    Corrupt {
        path: String,
        source: postcard::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Whether an append waits for the disk. Tests and the simulation skip the
/// `fsync` (their crashes are process-level, the page cache survives them);
/// a node always syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    Fsync,
    PageCache,
}

fn file_name(part: &Part) -> String {
    format!("{}-{}.log", part.epoch, part.scope.to_file_part())
}

/// One file of the journal: an own document's changes, or the requests
/// accepted in one epoch of this node's clock (see [`Journal::append_intake`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum JournalFile {
    Document(Part),
    Intake(u64),
}

impl JournalFile {
    fn file_name(&self) -> String {
        match self {
            Self::Document(part) => file_name(part),
            Self::Intake(epoch) => format!("{epoch}.intake"),
        }
    }

    fn of_path(path: &Path) -> Option<Self> {
        let stem = path.file_stem()?.to_str()?;
        match path.extension()?.to_str()? {
            "log" => {
                let (epoch, scope) = stem.split_once('-')?;
                Some(Self::Document(Part {
                    epoch: epoch.parse().ok()?,
                    scope: Scope::from_file_part(scope)?,
                }))
            }
            "intake" => Some(Self::Intake(stem.parse().ok()?)),
            _ => None,
        }
    }
}

/// The journal of one owner's documents, one file per document.
pub struct Journal {
    dir: PathBuf,
    durability: Durability,
    files: BTreeMap<JournalFile, Arc<File>>,
    /// By file, the sequence number of its newest append, kept until the
    /// watermark passes it; and that of the newest append that created a
    /// file (the directory must be synced too).
    last_append: BTreeMap<JournalFile, u64>,
    dir_changed: u64,
    /// Appends so far, and how many of them are known to be on disk.
    written: u64,
    durable: Arc<Watermark>,
}

/// How many appends are known to be on disk, and whether a sync is
/// running now (see the module's doc).
#[derive(Default)]
struct Watermark {
    upto: AtomicU64,
    syncing: parking_lot::Mutex<bool>,
    synced: parking_lot::Condvar,
    /// Syncs that reached the disk (`journal_syncs_total`).
    syncs: AtomicU64,
}

/// The sync of some appends, to be run outside the core's lock.
#[must_use = "the appends are not durable until the sync runs"]
pub struct PendingSync {
    files: Vec<(PathBuf, Arc<File>)>,
    dir: Option<PathBuf>,
    upto: u64,
    durable: Arc<Watermark>,
    durability: Durability,
}

impl PendingSync {
    /// Syncs the files; on success every append up to this one is durable.
    /// Waits for a sync already running, and syncs nothing if that one
    /// covered these appends.
    pub fn run(self) -> Result<(), JournalError> {
        let mark = &*self.durable;
        let mut syncing = mark.syncing.lock();
        loop {
            if mark.upto.load(Ordering::Acquire) >= self.upto {
                return Ok(());
            }
            if !*syncing {
                break;
            }
            mark.synced.wait(&mut syncing);
        }
        *syncing = true;
        drop(syncing);
        let synced = self.sync_files(mark);
        if synced.is_ok() {
            mark.upto.fetch_max(self.upto, Ordering::AcqRel);
        }
        *mark.syncing.lock() = false;
        mark.synced.notify_all();
        synced
    }

    fn sync_files(&self, mark: &Watermark) -> Result<(), JournalError> {
        if self.durability == Durability::Fsync {
            for (path, file) in &self.files {
                file.sync_data().map_err(io_error(path))?;
            }
            if let Some(dir) = &self.dir {
                sync_dir(dir)?;
            }
            mark.syncs.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("journal_syncs_total").increment(1);
        }
        Ok(())
    }
}

/// The owner identity this node writes as, and whether it is new (its
/// journal was empty or missing, so nothing it owned before is its own).
pub fn open_owner(
    dir: &Path,
    node: &NodeId,
    entropy: &Entropy,
) -> Result<(NodeId, bool), JournalError> {
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let path = dir.join(OWNER_FILE);
    match fs::read_to_string(&path) {
        Ok(owner) if owner.trim().starts_with(&format!("{}@", node.0)) => {
            Ok((NodeId(owner.trim().to_owned()), false))
        }
        _ => {
            // A journal without an owner file is not ours to trust.
            for entry in fs::read_dir(dir).map_err(io_error(dir))?.flatten() {
                if entry.path().extension().is_some_and(|e| e == "log")
                    || entry.file_name() == DROPPED_FILE
                {
                    fs::remove_file(entry.path()).map_err(io_error(&entry.path()))?;
                }
            }
            let owner = NodeId(format!("{}@{}", node.0, entropy.suffix()));
            let tmp = dir.join("owner.tmp");
            let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
            file.write_all(owner.0.as_bytes()).map_err(io_error(&tmp))?;
            file.sync_all().map_err(io_error(&tmp))?;
            fs::rename(&tmp, &path).map_err(io_error(&path))?;
            sync_dir(dir)?;
            Ok((owner, true))
        }
    }
}

impl Journal {
    /// Opens the journal in `dir`, returning every document's saved
    /// changes. Torn tails are cut off.
    pub fn open(dir: &Path, durability: Durability) -> Result<(Self, Loaded), JournalError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let mut loaded = BTreeMap::new();
        let mut intake = BTreeMap::new();
        let mut files = BTreeMap::new();
        for entry in fs::read_dir(dir).map_err(io_error(dir))?.flatten() {
            let path = entry.path();
            let Some(name) = JournalFile::of_path(&path) else {
                continue;
            };
            let mut file = OpenOptions::new()
                .read(true)
                .append(true)
                .open(&path)
                .map_err(io_error(&path))?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).map_err(io_error(&path))?;
            let (chunks, good) = read_frames(&bytes);
            if good < bytes.len() {
                tracing::warn!(path = %path.display(), torn = bytes.len() - good, "cut a torn journal tail");
                file.set_len(good as u64).map_err(io_error(&path))?;
            }
            match &name {
                JournalFile::Document(part) => loaded.insert(part.clone(), chunks),
                JournalFile::Intake(epoch) => intake.insert(*epoch, chunks),
            };
            files.insert(name, Arc::new(file));
        }
        let dropped_path = dir.join(DROPPED_FILE);
        let dropped = match fs::read(&dropped_path) {
            Ok(bytes) => postcard::from_bytes(&bytes).map_err(|source| JournalError::Corrupt {
                path: dropped_path.display().to_string(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Dropped::default(),
            Err(e) => return Err(io_error(&dropped_path)(e)),
        };
        Ok((
            Self {
                dir: dir.to_owned(),
                durability,
                files,
                last_append: BTreeMap::new(),
                dir_changed: 0,
                written: 0,
                durable: Arc::default(),
            },
            Loaded {
                docs: loaded,
                intake,
                dropped,
            },
        ))
    }

    /// Replaces the record of dropped documents (atomically: a crash
    /// leaves the old one or the new one).
    pub fn save_dropped(&mut self, dropped: &Dropped) -> Result<(), JournalError> {
        let path = self.dir.join(DROPPED_FILE);
        let tmp = self.dir.join("dropped.tmp");
        let bytes = postcard::to_stdvec(dropped).unwrap_or_default();
        let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
        file.write_all(&bytes).map_err(io_error(&tmp))?;
        if self.durability == Durability::Fsync {
            file.sync_data().map_err(io_error(&tmp))?;
        }
        fs::rename(&tmp, &path).map_err(io_error(&path))
    }

    /// Carries out what the protocol queued, in order, without waiting for
    /// the disk: durable once a [`Journal::take_sync`] taken after this
    /// has run.
    pub fn persist(&mut self, queued: Vec<Persist>) -> Result<(), JournalError> {
        for item in queued {
            match item {
                Persist::Changes(changes) => self.append(&changes)?,
                Persist::Dropped(dropped) => self.save_dropped(&dropped)?,
                Persist::Remove(part) => self.remove(&part)?,
                Persist::IntakeBefore(epoch) => self.remove_intake_before(epoch)?,
            }
        }
        Ok(())
    }

    /// Appends each document's new changes, without waiting for the disk:
    /// they are durable once a [`Journal::take_sync`] taken after this has
    /// run.
    pub fn append(&mut self, writes: &[(Part, Vec<u8>)]) -> Result<(), JournalError> {
        for (part, bytes) in writes {
            self.append_frame(JournalFile::Document(part.clone()), bytes)?;
        }
        Ok(())
    }

    /// Appends requests accepted in `epoch` of this node's clock (encoded
    /// by [`crate::protocol::codec`]), durable as [`Journal::append`]'s are.
    /// They are journaled before their 202, and written into documents
    /// later, in batches; a restart reads them back.
    pub fn append_intake(&mut self, epoch: u64, bytes: &[u8]) -> Result<(), JournalError> {
        self.append_frame(JournalFile::Intake(epoch), bytes)
    }

    fn append_frame(&mut self, name: JournalFile, bytes: &[u8]) -> Result<(), JournalError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let path = self.path_of(&name);
        if !self.files.contains_key(&name) {
            let file = OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .open(&path)
                .map_err(io_error(&path))?;
            self.files.insert(name.clone(), Arc::new(file));
            self.dir_changed = self.written + 1;
        }
        let file = &self.files[&name];
        let mut frame = Vec::with_capacity(FRAME_HEADER + bytes.len());
        let len = u32::try_from(bytes.len()).expect("a frame under 4 GiB");
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(bytes).to_le_bytes());
        frame.extend_from_slice(bytes);
        (&**file).write_all(&frame).map_err(io_error(&path))?;
        self.written += 1;
        self.last_append.insert(name, self.written);
        Ok(())
    }

    /// The sync that makes every append so far durable, to run outside the
    /// lock; `None` when the watermark has passed every append.
    pub fn take_sync(&mut self) -> Option<PendingSync> {
        let durable = self.durable.upto.load(Ordering::Acquire);
        if durable >= self.written {
            return None;
        }
        self.last_append.retain(|_, seq| *seq > durable);
        let files = self
            .last_append
            .keys()
            .filter_map(|name| Some((self.path_of(name), Arc::clone(self.files.get(name)?))))
            .collect();
        Some(PendingSync {
            files,
            dir: (self.dir_changed > durable).then(|| self.dir.clone()),
            upto: self.written,
            durable: Arc::clone(&self.durable),
            durability: self.durability,
        })
    }

    /// Syncs that reached the disk so far.
    #[cfg(test)]
    fn syncs(&self) -> u64 {
        self.durable.syncs.load(Ordering::Relaxed)
    }

    /// Every append so far is on disk.
    pub fn is_durable(&self) -> bool {
        self.durable.upto.load(Ordering::Acquire) >= self.written
    }

    /// Deletes a dropped document's file.
    pub fn remove(&mut self, part: &Part) -> Result<(), JournalError> {
        self.remove_file(JournalFile::Document(part.clone()))
    }

    /// Deletes the accepted requests of every epoch before `epoch`.
    pub fn remove_intake_before(&mut self, epoch: u64) -> Result<(), JournalError> {
        let old: Vec<JournalFile> = self
            .files
            .keys()
            .filter(|name| matches!(name, JournalFile::Intake(e) if *e < epoch))
            .cloned()
            .collect();
        for name in old {
            self.remove_file(name)?;
        }
        Ok(())
    }

    fn remove_file(&mut self, name: JournalFile) -> Result<(), JournalError> {
        self.last_append.remove(&name);
        if self.files.remove(&name).is_some() {
            let path = self.path_of(&name);
            fs::remove_file(&path).map_err(io_error(&path))?;
        }
        Ok(())
    }

    fn path_of(&self, name: &JournalFile) -> PathBuf {
        self.dir.join(name.file_name())
    }
}

/// The payloads of every whole, intact frame, concatenated, and how many
/// bytes they span.
fn read_frames(bytes: &[u8]) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= FRAME_HEADER {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        let Some(payload) = bytes.get(at + FRAME_HEADER..at + FRAME_HEADER + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        out.extend_from_slice(payload);
        at += FRAME_HEADER + len;
    }
    (out, at)
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// What a crash leaves of the journal files whose last write was torn:
/// the simulation appends half a frame to the newest document and the
/// newest intake file, to check that loading cuts it off.
#[cfg(test)]
pub fn tear_last_write(dir: &Path) {
    let names: Vec<(JournalFile, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter_map(|p| Some((JournalFile::of_path(&p)?, p)))
        .collect();
    let newest_document = names
        .iter()
        .filter(|(name, _)| matches!(name, JournalFile::Document(_)))
        .max_by(|(a, _), (b, _)| a.cmp(b));
    let newest_intake = names
        .iter()
        .filter(|(name, _)| matches!(name, JournalFile::Intake(_)))
        .max_by(|(a, _), (b, _)| a.cmp(b));
    for (_, path) in newest_document.into_iter().chain(newest_intake) {
        let mut file = OpenOptions::new().append(true).open(path).expect("open");
        file.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 5, 6])
            .expect("append");
    }
}

#[cfg(test)]
mod tests;
