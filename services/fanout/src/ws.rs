//! The WebSocket layer: the upgrade, and server frames written as bytes.
//!
//! Reading is tungstenite's: client frames are masked, may be fragmented,
//! and pings are answered. Writing is ours. A server frame is not masked,
//! so the hub encodes each message into the wire format once and every
//! subscriber's socket gets the same bytes in one vectored write per burst:
//! no encoding, copy or write buffer per connection (a buffer that would
//! keep the size of the largest burst it ever held, for the connection's
//! life).

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut as _, Bytes, BytesMut};
use fantasy_http::ApiError;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWrite;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// An upgraded connection. Read it as a stream of messages; write frames
/// made here to [`WebSocketStream::get_mut`] with [`write_frames`], after
/// flushing what tungstenite may have queued (a pong).
pub type Socket = WebSocketStream<TokioIo<Upgraded>>;

const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;

/// Most frames one vectored write takes.
const MAX_SLICES: usize = 64;

/// A final, unmasked frame of `opcode` carrying `payload`.
fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(payload.len() + 10);
    b.put_u8(0x80 | opcode);
    match payload.len() {
        n @ 0..=125 => b.put_u8(n as u8),
        n @ 126..=0xFFFF => {
            b.put_u8(126);
            b.put_u16(n as u16);
        }
        n => {
            b.put_u8(127);
            b.put_u64(n as u64);
        }
    }
    b.put_slice(payload);
    b.freeze()
}

/// A text frame.
pub fn text(payload: &str) -> Bytes {
    frame(OP_TEXT, payload.as_bytes())
}

/// An empty ping.
pub fn ping() -> Bytes {
    Bytes::from_static(&[0x80 | OP_PING, 0])
}

/// A close frame (`reason` is cut to fit a control frame's 125 bytes).
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    frame(OP_CLOSE, &payload)
}

/// Writes every frame whole and in order, as many per system call as the
/// socket takes, then flushes. The slices are built inside each poll, so
/// a connection's task holds no room for them between bursts.
pub async fn write_frames<W, B>(w: &mut W, frames: &[B]) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
    B: AsRef<[u8]>,
{
    // The next frame to write, and how much of it has gone.
    let (mut next, mut done) = (0usize, 0usize);
    while next < frames.len() {
        let n = poll_fn(|cx| {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut k = 0;
            for (i, f) in frames[next..].iter().take(MAX_SLICES).enumerate() {
                let bytes = f.as_ref();
                slices[k] = IoSlice::new(if i == 0 { &bytes[done..] } else { bytes });
                k += 1;
            }
            Pin::new(&mut *w).poll_write_vectored(cx, &slices[..k])
        })
        .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let mut n = n;
        while n > 0 {
            let left = frames[next].as_ref().len() - done;
            if n >= left {
                n -= left;
                next += 1;
                done = 0;
            } else {
                done += n;
                n = 0;
            }
        }
    }
    poll_fn(|cx| Pin::new(&mut *w).poll_flush(cx)).await
}

/// A WebSocket upgrade request (RFC 6455 §4.2.1, HTTP/1.1), checked.
#[derive(Debug)]
pub struct Upgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// Why a request to the stream is not a WebSocket upgrade.
#[derive(Debug)]
pub struct NotUpgrade(Response);

impl IntoResponse for NotUpgrade {
    fn into_response(self) -> Response {
        self.0
    }
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = NotUpgrade;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, NotUpgrade> {
        let bad = |why: &str| {
            NotUpgrade(
                ApiError::bad_request(
                    "not_a_websocket_upgrade",
                    format!("{why}: /v1/stream speaks WebSocket (RFC 6455) over HTTP/1.1"),
                )
                .into_response(),
            )
        };
        if parts.method != Method::GET {
            return Err(bad("the upgrade must be a GET"));
        }
        if !has_token(&parts.headers, header::CONNECTION, "upgrade")
            || !has_token(&parts.headers, header::UPGRADE, "websocket")
        {
            return Err(bad("no Connection: upgrade and Upgrade: websocket"));
        }
        if parts
            .headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_none_or(|v| v.as_bytes() != b"13")
        {
            let mut r = ApiError::new(
                StatusCode::UPGRADE_REQUIRED,
                "unsupported_websocket_version",
                "this server speaks WebSocket version 13",
            )
            .into_response();
            r.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
            return Err(NotUpgrade(r));
        }
        let key = parts
            .headers
            .get(header::SEC_WEBSOCKET_KEY)
            .cloned()
            .ok_or_else(|| bad("no Sec-WebSocket-Key"))?;
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or_else(|| bad("this connection cannot be upgraded"))?;
        Ok(Self { key, on_upgrade })
    }
}

impl Upgrade {
    /// Answers 101 and, once the connection has switched, runs `serve` on
    /// it with tungstenite reading under `config`.
    pub fn on_upgrade<F, Fut>(self, config: WebSocketConfig, serve: F) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let accept = derive_accept_key(self.key.as_bytes());
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let socket = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(config),
            )
            .await;
            serve(socket).await;
        });
        let mut r = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let h = r.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(v) = HeaderValue::from_str(&accept) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

    fn parse(bytes: &[u8]) -> (FrameHeader, Vec<u8>) {
        let mut cursor = io::Cursor::new(bytes);
        let (header, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
        let at = usize::try_from(cursor.position()).unwrap();
        let len = usize::try_from(len).unwrap();
        assert_eq!(at + len, bytes.len(), "one frame, nothing after it");
        (header, bytes[at..].to_vec())
    }

    #[test]
    fn frames_decode_as_tungstenite_reads_them_at_every_length_encoding() {
        for n in [0, 1, 125, 126, 127, 65_535, 65_536, 200_000] {
            let payload = "x".repeat(n);
            let (header, body) = parse(&text(&payload));
            assert!(header.is_final);
            assert_eq!(header.mask, None, "server frames are not masked");
            assert_eq!(u8::from(header.opcode), OP_TEXT);
            assert_eq!(body, payload.as_bytes());
        }
        let (header, body) = parse(&close(4001, "slow client"));
        assert_eq!(u8::from(header.opcode), OP_CLOSE);
        assert_eq!(&body[..2], &4001u16.to_be_bytes());
        assert_eq!(&body[2..], b"slow client");
        let (header, body) = parse(&ping());
        assert_eq!(u8::from(header.opcode), OP_PING);
        assert!(body.is_empty());
    }

    #[test]
    fn a_long_close_reason_is_cut_on_a_character_boundary() {
        let reason = "é".repeat(100);
        let (_, body) = parse(&close(1000, &reason));
        assert!(body.len() <= 125);
        assert!(std::str::from_utf8(&body[2..]).is_ok());
    }

    /// Takes at most `chunk` bytes per write, one slice at a time.
    struct Trickle {
        got: Vec<u8>,
        chunk: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            let n = buf.len().min(self.chunk);
            self.got.extend_from_slice(&buf[..n]);
            std::task::Poll::Ready(Ok(n))
        }
        fn poll_flush(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn partial_writes_resume_where_they_stopped() {
        let frames: Vec<Bytes> = (0..100).map(|i| text(&format!("frame {i}"))).collect();
        let whole: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
        for chunk in [1, 3, 7, 1000, usize::MAX] {
            let mut w = Trickle {
                got: Vec::new(),
                chunk,
            };
            write_frames(&mut w, &frames).await.unwrap();
            assert_eq!(w.got, whole, "chunk {chunk}");
        }
    }
}
