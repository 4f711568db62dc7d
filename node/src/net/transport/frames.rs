//! A session's stream as frames: each peer message postcard-encoded,
//! length-delimited, and deflated with the rest of its direction's
//! stream ([`crate::net::compression`]).

use super::*;

/// Length-delimited, postcard-encoded, deflated [`PeerMessage`]s on one
/// stream, as
/// two halves: a session reads and writes at the same time, so that two
/// peers each blocked sending to the other (their flow-control windows
/// full) still drain what the other sent.
pub(super) struct Frames {
    pub(super) writer: FrameWriter,
    pub(super) reader: FrameReader,
}

pub(super) struct FrameWriter {
    pub(super) send: FramedWrite<quinn::SendStream, LengthDelimitedCodec>,
    pub(super) deflate: FrameCompressor,
    /// The peer's node id, as a metrics label.
    pub(super) peer: String,
}

pub(super) struct FrameReader {
    pub(super) recv: FramedRead<quinn::RecvStream, LengthDelimitedCodec>,
    pub(super) inflate: FrameDecompressor,
    pub(super) peer: String,
}

impl Frames {
    pub(super) fn new(send: quinn::SendStream, recv: quinn::RecvStream, peer: &NodeId) -> Self {
        let codec = || {
            LengthDelimitedCodec::builder()
                .max_frame_length(MAX_FRAME_BYTES)
                .new_codec()
        };
        Self {
            writer: FrameWriter {
                send: FramedWrite::new(send, codec()),
                deflate: FrameCompressor::new(),
                peer: peer.0.clone(),
            },
            reader: FrameReader {
                recv: FramedRead::new(recv, codec()),
                inflate: FrameDecompressor::new(MAX_FRAME_BYTES),
                peer: peer.0.clone(),
            },
        }
    }

    /// The peer is now known by name (its hello).
    pub(super) fn name_peer(&mut self, peer: &NodeId) {
        self.writer.peer = peer.0.clone();
        self.reader.peer = peer.0.clone();
    }

    pub(super) async fn send(&mut self, message: &PeerMessage) -> Result<(), SessionError> {
        self.writer.send(message).await
    }

    /// The peer's first frame, if a hello: its node, region and layout
    /// fingerprint.
    pub(super) async fn hello(&mut self) -> Result<Option<(NodeId, String, u64)>, SessionError> {
        Ok(match self.reader.next().await? {
            Some(PeerMessage::V1(PeerMessageV1::Hello {
                node,
                region,
                layout,
            })) => Some((node, region, layout)),
            _ => None,
        })
    }
}

impl FrameWriter {
    pub(super) async fn send(&mut self, message: &PeerMessage) -> Result<(), SessionError> {
        let encoded = postcard::to_stdvec(message)?;
        let bytes = self.deflate.compress(&encoded)?;
        metrics::counter!("mesh_encoded_bytes_sent_total", "peer" => self.peer.clone())
            .increment(encoded.len() as u64);
        metrics::counter!("mesh_bytes_sent_total", "peer" => self.peer.clone())
            .increment(bytes.len() as u64);
        metrics::counter!("mesh_messages_sent_total", "peer" => self.peer.clone()).increment(1);
        self.send.send(bytes.as_slice()).await?;
        Ok(())
    }
}

impl FrameReader {
    pub(super) async fn next(&mut self) -> Result<Option<PeerMessage>, SessionError> {
        let Some(frame) = self.recv.next().await.transpose()? else {
            return Ok(None);
        };
        metrics::counter!("mesh_bytes_received_total", "peer" => self.peer.clone())
            .increment(frame.len() as u64);
        Ok(Some(postcard::from_bytes(
            &self.inflate.decompress(&frame)?,
        )?))
    }
}
