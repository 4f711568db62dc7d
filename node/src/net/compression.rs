//! Deflate over a session's whole stream, flushed at every frame.
//!
//! Most of a sync message's bytes repeat what the same stream carried a
//! moment before: the writer's actor id, automerge's column layout, field
//! names, and the hash that one message lists as a head and the next as a
//! change's dependency. Compressing each frame alone finds little of that;
//! one deflate stream per direction, with a sync flush after each frame,
//! keeps a 32 KiB window across frames, and each frame still decodes as
//! soon as it arrives. Measured at 1,000 requests/s (BENCHMARKS.md), it
//! is what brings a replicated request's wire bytes near its JSON size.
//!
//! A frame is inflated into a bounded buffer, so a hostile peer cannot
//! make a small frame grow without limit.

use std::io::{self, Write};

use flate2::Compression;
use flate2::write::{DeflateDecoder, DeflateEncoder};
use thiserror::Error;

#[derive(Debug, Error)]
pub(crate) enum CompressionError {
    #[error("frame does not inflate: {0}")]
    Corrupt(io::Error),
    #[error("frame inflates past {limit} bytes")]
    TooLarge { limit: usize },
    #[error("frame ends inside a deflate block")]
    Truncated,
    #[error("deflate: {0}")]
    Deflate(io::Error),
}

/// One direction's compressor: frames go in, in order, and come out
/// compressed against everything sent before them.
pub(crate) struct FrameCompressor {
    deflate: DeflateEncoder<Vec<u8>>,
}

impl FrameCompressor {
    pub(crate) fn new() -> Self {
        // Level 1: most of the gain is the shared window, not the effort
        // spent searching it, and this runs once per frame per peer.
        Self {
            deflate: DeflateEncoder::new(Vec::new(), Compression::fast()),
        }
    }

    /// `frame`, compressed and flushed: the peer can inflate it whole.
    /// An empty frame right after another compresses to nothing.
    pub(crate) fn compress(&mut self, frame: &[u8]) -> Result<Vec<u8>, CompressionError> {
        // flate2's `flush` is deflate's sync flush.
        self.deflate
            .write_all(frame)
            .and_then(|()| self.deflate.flush())
            .map_err(CompressionError::Deflate)?;
        Ok(std::mem::take(self.deflate.get_mut()))
    }
}

/// How every sync flush ends (RFC 1951's empty stored block).
const SYNC_MARKER: [u8; 4] = [0, 0, 0xff, 0xff];

/// One direction's decompressor, the mirror of [`FrameCompressor`].
pub(crate) struct FrameDecompressor {
    inflate: DeflateDecoder<Bounded>,
}

/// Where a frame inflates to: refuses to grow past its limit, so a hostile
/// frame costs at most that much memory.
struct Bounded {
    bytes: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.bytes.len() + buf.len() > self.limit {
            self.overflowed = true;
            return Err(io::Error::other("inflated frame over its limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl FrameDecompressor {
    /// Frames that inflate past `limit` bytes are refused.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            inflate: DeflateDecoder::new(Bounded {
                bytes: Vec::new(),
                limit,
                overflowed: false,
            }),
        }
    }

    /// The frame a peer's [`FrameCompressor::compress`] made from `bytes`.
    pub(crate) fn decompress(&mut self, bytes: &[u8]) -> Result<Vec<u8>, CompressionError> {
        if bytes.is_empty() {
            return Ok(Vec::new());
        }
        // A sync flush ends on an empty stored block: a frame without one
        // was cut, or not made by a compressor.
        if !bytes.ends_with(&SYNC_MARKER) {
            return Err(CompressionError::Truncated);
        }
        let inflated = self
            .inflate
            .write_all(bytes)
            .and_then(|()| self.inflate.flush());
        let out = self.inflate.get_mut();
        if out.overflowed {
            return Err(CompressionError::TooLarge { limit: out.limit });
        }
        inflated.map_err(CompressionError::Corrupt)?;
        Ok(std::mem::take(&mut out.bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pair(limit: usize) -> (FrameCompressor, FrameDecompressor) {
        (FrameCompressor::new(), FrameDecompressor::new(limit))
    }

    proptest! {
        /// Any run of frames, empty ones included, comes out as it went
        /// in, one frame at a time.
        #[test]
        fn frames_round_trip_in_order(frames in proptest::collection::vec(
            prop_oneof![
                1 => Just(Vec::new()),
                4 => proptest::collection::vec(any::<u8>(), 1..5_000),
            ], 1..20)) {
            let (mut tx, mut rx) = pair(1 << 20);
            for frame in &frames {
                let wire = tx.compress(frame).unwrap();
                prop_assert_eq!(&rx.decompress(&wire).unwrap(), frame);
            }
        }
    }

    #[test]
    fn a_frame_like_the_last_costs_a_fraction_of_it() {
        let (mut tx, mut rx) = pair(1 << 20);
        let frame: Vec<u8> = (0..400u32).map(|i| (i * 7919 % 251) as u8).collect();
        let first = tx.compress(&frame).unwrap();
        let second = tx.compress(&frame).unwrap();
        assert!(
            second.len() * 10 < first.len(),
            "{} then {}",
            first.len(),
            second.len()
        );
        assert_eq!(rx.decompress(&first).unwrap(), frame);
        assert_eq!(rx.decompress(&second).unwrap(), frame);
    }

    #[test]
    fn a_frame_that_inflates_past_the_limit_is_refused() {
        let (mut tx, mut rx) = pair(1_000);
        let wire = tx.compress(&[0; 1_001]).unwrap();
        assert!(matches!(
            rx.decompress(&wire),
            Err(CompressionError::TooLarge { limit: 1_000 })
        ));
    }

    #[test]
    fn garbage_and_cut_frames_are_errors_not_panics() {
        let (mut tx, mut rx) = pair(1 << 20);
        assert!(rx.decompress(&[0xff; 64]).is_err());
        let wire = tx.compress(&[7; 3_000]).unwrap();
        assert!(wire.ends_with(&SYNC_MARKER));
        let (_, mut rx) = pair(1 << 20);
        assert!(matches!(
            rx.decompress(&wire[..wire.len() - 1]),
            Err(CompressionError::Truncated)
        ));
    }
}
