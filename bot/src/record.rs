//! `--record`: one JSON line per match notice received.
//!
//! A chaos checker later compares these lines with what the nodes committed,
//! to prove no client was ever told of a match that was not committed. So the
//! line keeps the notice exactly as the wire type serialises it, plus which
//! endpoint's socket delivered it and when; and the file is appended to, never
//! truncated, so several bot runs can share one record. `bot check` reads it
//! back through the same [`Line`], so the two cannot drift apart.
//!
//! The [`Recorder`] writes any serialisable line: `--post-log`
//! ([`crate::post_log`]) appends through it too.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use ride_types::api::ServerMessage;
use serde::{Deserialize, Serialize};

use crate::error::BotError;
use crate::socket::Delivery;

/// One line of the record file: borrowed when written, owned when read.
#[derive(Debug, Serialize, Deserialize)]
pub struct Line<'a> {
    /// Base URL of the endpoint whose websocket delivered the notice.
    pub endpoint: Cow<'a, str>,
    pub received_at: DateTime<Utc>,
    /// `{"type":"match", ...}` exactly as the node sent it.
    pub message: Cow<'a, ServerMessage>,
}

pub struct Recorder {
    path: PathBuf,
    out: BufWriter<File>,
}

impl Recorder {
    pub fn open(path: &Path) -> Result<Self, BotError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| BotError::Record {
                path: path.to_owned(),
                source,
            })?;
        Ok(Recorder {
            path: path.to_owned(),
            out: BufWriter::new(file),
        })
    }

    pub fn append(&mut self, delivery: &Delivery) -> Result<(), BotError> {
        self.write(&Line {
            endpoint: Cow::Borrowed(delivery.endpoint.base().as_str()),
            received_at: delivery.received_at,
            message: Cow::Borrowed(&delivery.message),
        })
    }

    /// Appends `line` as one line of JSON.
    pub fn write<T: Serialize>(&mut self, line: &T) -> Result<(), BotError> {
        serde_json::to_writer(&mut self.out, line)
            .map_err(io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|source| self.error(source))
    }

    /// Pushes buffered lines to the file; called every tick and at the end,
    /// so a killed bot loses at most a second of lines.
    pub fn flush(&mut self) -> Result<(), BotError> {
        self.out.flush().map_err(|source| self.error(source))
    }

    fn error(&self, source: io::Error) -> BotError {
        BotError::Record {
            path: self.path.clone(),
            source,
        }
    }
}
