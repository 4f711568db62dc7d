//! Committed matches on disk, so that a node that restarts keeps the promise
//! of `--match-retention`: a match stays visible (`/matches`, a late
//! websocket) and ratable (`POST /rating`) for that long, whatever the
//! documents' retention. A restarted node would otherwise rebuild its
//! matches from its documents alone, and documents are dropped as soon as
//! their requests are past use, much sooner.
//!
//! The log is an append-only file of length-prefixed postcard frames, one
//! per match. It is not synced on every append: every match in it is in the
//! journaled documents first (a commit is told only once durable), so the
//! log only has to outlive the documents, and a `kill -9` loses nothing from
//! the page cache. A torn last frame (a crash mid-write) ends the log where
//! it starts, and is cut off. The log is rewritten with only the matches
//! still retained once it holds twice as many frames (synced, then renamed
//! over the old one).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

/// The log's file name in the node's data folder.
const FILE: &str = "matches.log";
/// The first bytes of the file: a format change gets a new magic.
const MAGIC: &[u8; 8] = b"rmatch01";
/// The fewest frames that trigger a rewrite, so a quiet node never churns.
const MIN_REWRITE: usize = 1_024;

#[derive(Debug, Error)]
pub enum MatchLogError {
    #[error("match log {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("match log {}: not a match log (it starts with {found:?})", path.display())]
    NotALog { path: PathBuf, found: Vec<u8> },
    #[error("match log {}: cannot encode a match: {source}", path.display())]
    Encode {
        path: PathBuf,
        source: postcard::Error,
    },
}

/// The log of values of type `T` (the node's committed matches).
#[derive(Debug)]
pub(crate) struct MatchLog<T> {
    path: PathBuf,
    file: File,
    /// Frames in the file, retained or not.
    frames: usize,
    kind: PhantomData<fn(T) -> T>,
}

impl<T: Serialize + DeserializeOwned> MatchLog<T> {
    /// Opens the log in `dir` (made if new) and reads what it holds.
    pub(crate) fn open(dir: &Path) -> Result<(Self, Vec<T>), MatchLogError> {
        let path = dir.join(FILE);
        let io = |source| MatchLogError::Io {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(dir).map_err(io)?;
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(e)),
        };
        if bytes.is_empty() {
            write_whole(&path, std::iter::empty::<&T>())?;
        } else if !bytes.starts_with(MAGIC) {
            return Err(MatchLogError::NotALog {
                path,
                found: bytes.iter().take(MAGIC.len()).copied().collect(),
            });
        }
        let (values, good) = read_frames(&bytes);
        let file = OpenOptions::new().append(true).open(&path).map_err(io)?;
        // A torn tail is cut off, so that the next frame follows a whole one.
        let good = good.max(MAGIC.len()) as u64;
        if file.metadata().map_err(io)?.len() > good {
            file.set_len(good).map_err(io)?;
        }
        let log = Self {
            frames: values.len(),
            path,
            file,
            kind: PhantomData,
        };
        Ok((log, values))
    }

    /// Appends `values` (not synced: see the module doc).
    pub(crate) fn append<'a>(
        &mut self,
        values: impl IntoIterator<Item = &'a T>,
    ) -> Result<(), MatchLogError>
    where
        T: 'a,
    {
        let mut out = Vec::new();
        for value in values {
            frame(&self.path, value, &mut out)?;
            self.frames += 1;
        }
        self.file
            .write_all(&out)
            .map_err(|source| MatchLogError::Io {
                path: self.path.clone(),
                source,
            })
    }

    /// Whether the log holds at least twice the `retained` frames (and
    /// enough to be worth a rewrite).
    pub(crate) fn wants_rewrite(&self, retained: usize) -> bool {
        self.frames >= MIN_REWRITE.max(2 * retained)
    }

    /// Replaces the log by one holding only `retained`.
    pub(crate) fn rewrite<'a>(
        &mut self,
        retained: impl ExactSizeIterator<Item = &'a T>,
    ) -> Result<(), MatchLogError>
    where
        T: 'a,
    {
        let frames = retained.len();
        write_whole(&self.path, retained)?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|source| MatchLogError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.frames = frames;
        Ok(())
    }
}

/// One frame: the value's length (u32, little-endian) and its postcard.
fn frame<T: Serialize>(path: &Path, value: &T, out: &mut Vec<u8>) -> Result<(), MatchLogError> {
    let bytes = postcard::to_allocvec(value).map_err(|source| MatchLogError::Encode {
        path: path.to_owned(),
        source,
    })?;
    let len = u32::try_from(bytes.len()).expect("a match is far smaller than 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&bytes);
    Ok(())
}

/// The whole frames after the magic, and where the last one ends.
fn read_frames<T: DeserializeOwned>(bytes: &[u8]) -> (Vec<T>, usize) {
    let mut values = Vec::new();
    let mut at = MAGIC.len();
    let mut rest = bytes.get(at..).unwrap_or_default();
    loop {
        let mut len = [0u8; 4];
        if rest.read_exact(&mut len).is_err() {
            break;
        }
        let len = u32::from_le_bytes(len) as usize;
        let Some(body) = rest.get(..len) else {
            break;
        };
        let Ok(value) = postcard::from_bytes(body) else {
            break;
        };
        values.push(value);
        rest = &rest[len..];
        at += 4 + len;
    }
    (values, at)
}

/// Writes a new log holding `values` beside the old one, syncs it, and
/// renames it over the old one.
fn write_whole<'a, T: Serialize + 'a>(
    path: &Path,
    values: impl Iterator<Item = &'a T>,
) -> Result<(), MatchLogError> {
    let io = |source| MatchLogError::Io {
        path: path.to_owned(),
        source,
    };
    let fresh = path.with_extension("log.new");
    let mut out = BufWriter::new(File::create(&fresh).map_err(io)?);
    out.write_all(MAGIC).map_err(io)?;
    let mut buf = Vec::new();
    for value in values {
        buf.clear();
        frame(path, value, &mut buf)?;
        out.write_all(&buf).map_err(io)?;
    }
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    fs::rename(&fresh, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the tests log: a number and a name.
    type Entry = (u32, String);

    fn open(dir: &Path) -> (MatchLog<Entry>, Vec<Entry>) {
        MatchLog::open(dir).expect("a log")
    }

    fn value(i: u32) -> Entry {
        (i, format!("match {i}"))
    }

    #[test]
    fn what_is_appended_is_read_back_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, read) = open(dir.path());
        assert!(read.is_empty());
        let values: Vec<_> = (0..5).map(value).collect();
        log.append(&values).unwrap();
        drop(log);
        assert_eq!(open(dir.path()).1, values);
    }

    #[test]
    fn a_torn_last_frame_is_cut_off_and_the_log_goes_on_after_the_whole_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = open(dir.path());
        log.append(&[value(1), value(2)]).unwrap();
        drop(log);
        let path = dir.path().join(FILE);
        let whole = fs::metadata(&path).unwrap().len();
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&[9, 0, 0, 0, 1, 2])
            .unwrap();
        let (mut log, read) = open(dir.path());
        assert_eq!(read, [value(1), value(2)]);
        assert_eq!(fs::metadata(&path).unwrap().len(), whole);
        log.append(&[value(3)]).unwrap();
        assert_eq!(open(dir.path()).1, [value(1), value(2), value(3)]);
    }

    #[test]
    fn a_rewrite_keeps_only_what_is_retained() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = open(dir.path());
        let values: Vec<_> = (0..MIN_REWRITE as u32).map(value).collect();
        log.append(&values).unwrap();
        assert!(log.wants_rewrite(10) && !log.wants_rewrite(MIN_REWRITE));
        log.rewrite(values[1_000..].iter()).unwrap();
        assert!(!log.wants_rewrite(10));
        log.append(&[value(7)]).unwrap();
        let read = open(dir.path()).1;
        assert_eq!(read.len(), MIN_REWRITE - 1_000 + 1);
        assert_eq!(read.last(), Some(&value(7)));
    }

    #[test]
    fn a_file_that_is_not_a_match_log_is_refused_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE), b"something else").unwrap();
        let refused = MatchLog::<Entry>::open(dir.path());
        assert!(matches!(refused, Err(MatchLogError::NotALog { .. })));
        assert_eq!(fs::read(dir.path().join(FILE)).unwrap(), b"something else");
    }
}
