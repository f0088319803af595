//! [`RawPeer`], an NNP client driven by hand over a blocking socket, for tests that write
//! bytes no engine would (hostile or broken peers) beside a healthy one.

use std::borrow::Cow;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use nnp::wire::{
    capabilities, decode_frame, encode_frame, frame_len, ErrorCode, Hello, Message, MsgType,
};

/// A hand-driven client speaking NNP over a blocking socket.
pub(crate) struct RawPeer {
    pub(crate) stream: TcpStream,
    seq: u64,
    buf: Vec<u8>,
}

impl RawPeer {
    pub(crate) fn connect(addr: SocketAddr) -> RawPeer {
        RawPeer::connect_with(TcpStream::connect(addr).unwrap())
    }

    /// A peer over a socket already connected (bound to a chosen address, tuned...).
    pub(crate) fn connect_with(stream: TcpStream) -> RawPeer {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        RawPeer {
            stream,
            seq: 0,
            buf: Vec::new(),
        }
    }

    pub(crate) fn frame(&mut self, msg: &Message<'_>) -> Vec<u8> {
        let mut out = Vec::with_capacity(frame_len(msg).unwrap());
        encode_frame(msg, self.seq, &mut out).unwrap();
        self.seq += 1;
        out
    }

    pub(crate) fn send(&mut self, msg: &Message<'_>) {
        let bytes = self.frame(msg);
        self.stream.write_all(&bytes).unwrap();
    }

    pub(crate) fn hello() -> Message<'static> {
        Message::Handshake(Hello {
            node_id: 99,
            min_version: 1,
            max_version: 1,
            capabilities: capabilities::ALL,
            layer_sizes: Cow::Owned(vec![8]),
            name: Cow::Borrowed("raw"),
        })
    }

    /// Reads until one whole frame other than a heartbeat is there; returns its type and the
    /// message, or None when the stream ends.
    pub(crate) fn read_frame(&mut self) -> Option<(MsgType, Message<'static>)> {
        loop {
            if let Some((frame, used)) = decode_frame(&self.buf, u32::MAX).unwrap() {
                let msg = frame.message.into_owned();
                self.buf.drain(..used);
                if msg.msg_type() == MsgType::Heartbeat {
                    continue;
                }
                return Some((msg.msg_type(), msg));
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    pub(crate) fn handshake(addr: SocketAddr) -> RawPeer {
        let mut peer = RawPeer::connect(addr);
        peer.send(&RawPeer::hello());
        let (t, _) = peer.read_frame().unwrap();
        assert_eq!(t, MsgType::HandshakeAck);
        peer
    }

    /// Reads until the server closes; returns the Error frame's code if one came.
    pub(crate) fn error_then_close(&mut self) -> Option<ErrorCode> {
        let mut code = None;
        while let Some((_, msg)) = self.read_frame() {
            if let Message::Error { code: c, .. } = msg {
                code = Some(c);
            }
        }
        code
    }
}

/// Runs a healthy echo exchange on its own connection while `hostile` runs.
pub(crate) fn healthy_while(addr: SocketAddr, hostile: impl FnOnce()) {
    let mut good = RawPeer::handshake(addr);
    let data = [1.5f32, -2.0, 3.25];
    good.send(&Message::ForwardData {
        layer_id: 1,
        data: Cow::Borrowed(&data),
    });
    hostile();
    good.send(&Message::ForwardData {
        layer_id: 2,
        data: Cow::Borrowed(&data),
    });
    for layer in [1, 2] {
        let (_, msg) = good.read_frame().expect("the healthy peer is still served");
        assert_eq!(
            msg,
            Message::ForwardData {
                layer_id: layer,
                data: Cow::Borrowed(&data)
            }
        );
    }
}
