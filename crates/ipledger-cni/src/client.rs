//! One HTTP/1.1 exchange with the agent over its unix socket, synchronously.
//!
//! The request is written by hand and the answer parsed with `httparse` (the parser
//! hyper uses): the plugin sends exactly one small request per run, so a full HTTP
//! client, and above all an async runtime, would cost start-up time and binary size
//! for nothing. `Connection: close` lets the agent end the body by closing when it
//! sends neither `Content-Length` nor chunked encoding.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::protocol::MAX_BODY_BYTES;

/// Largest header block accepted from the agent.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Headers parsed at most.
const MAX_HEADERS: usize = 32;

/// A request to the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// Path and query, e.g. `/v1/add`.
    pub path: String,
    /// JSON body, for `POST`.
    pub body: Option<Vec<u8>>,
}

/// The agent's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpReply {
    /// HTTP status code.
    pub status: u16,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

/// Why no answer came back.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Connecting failed: no socket file, nobody listening, permission denied.
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    /// No complete answer before the deadline.
    #[error("no answer within {} s", .0.as_secs())]
    Timeout(Duration),
    /// The connection broke while writing or reading.
    #[error("connection failed: {0}")]
    Io(io::Error),
    /// The bytes that came back are not an acceptable HTTP answer.
    #[error("malformed HTTP answer: {0}")]
    Malformed(String),
}

impl HttpRequest {
    /// The request's bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: ipledger-cni/{}\r\nAccept: application/json\r\nConnection: close\r\n",
            self.method,
            self.path,
            env!("CARGO_PKG_VERSION"),
        );
        if let Some(body) = &self.body {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if let Some(body) = &self.body {
            bytes.extend_from_slice(body);
        }
        bytes
    }
}

/// Sends `request` to the agent at `socket` and waits for the whole answer, at most
/// `timeout` for the exchange as a whole.
pub fn exchange(
    socket: &Path,
    timeout: Duration,
    request: &HttpRequest,
) -> Result<HttpReply, TransportError> {
    let deadline = Instant::now() + timeout;
    let remaining = || {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(TransportError::Timeout(timeout))
        } else {
            Ok(left)
        }
    };
    let io_error = |e: io::Error| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => TransportError::Timeout(timeout),
        _ => TransportError::Io(e),
    };

    let mut stream = UnixStream::connect(socket).map_err(TransportError::Connect)?;
    stream
        .set_write_timeout(Some(remaining()?))
        .map_err(TransportError::Io)?;
    stream.write_all(&request.encode()).map_err(io_error)?;

    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    loop {
        // A read timeout bounds one read; re-arming it with what is left bounds the
        // whole answer, so an agent that trickles bytes cannot hold the runtime.
        stream
            .set_read_timeout(Some(remaining()?))
            .map_err(TransportError::Io)?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error(e)),
        };
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_HEAD_BYTES + MAX_BODY_BYTES + MAX_BODY_BYTES / 8 {
            return Err(TransportError::Malformed(format!(
                "answer larger than {MAX_BODY_BYTES} bytes"
            )));
        }
        if let Some(reply) = parse_reply(&buf, n == 0)? {
            return Ok(reply);
        }
    }
}

/// Parses an answer from the bytes received so far; `None` while more are needed.
/// `eof` says the agent closed the connection, so nothing more will come.
pub fn parse_reply(buf: &[u8], eof: bool) -> Result<Option<HttpReply>, TransportError> {
    let malformed = |msg: String| Err(TransportError::Malformed(msg));
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if eof => {
            return malformed(if buf.is_empty() {
                "the agent closed the connection without answering".into()
            } else {
                "the connection closed inside the headers".into()
            });
        }
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return malformed(format!("headers larger than {MAX_HEAD_BYTES} bytes"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return malformed(format!("{e}")),
    };
    let status = response.code.unwrap_or_default();
    let mut content_length = None;
    let mut chunked = false;
    for header in response.headers.iter() {
        let value = String::from_utf8_lossy(header.value);
        if header.name.eq_ignore_ascii_case("content-length") {
            match value.trim().parse::<usize>() {
                Ok(n) => content_length = Some(n),
                Err(_) => return malformed(format!("Content-Length {value:?} is not a number")),
            }
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let rest = &buf[head_len..];
    let body = if status == 204 || status == 304 {
        Some(Vec::new())
    } else if chunked {
        match dechunk(rest)? {
            Some(body) => Some(body),
            None if eof => return malformed("the connection closed inside a chunked body".into()),
            None => None,
        }
    } else if let Some(length) = content_length {
        if length > MAX_BODY_BYTES {
            return malformed(format!(
                "Content-Length {length} exceeds the limit of {MAX_BODY_BYTES} bytes"
            ));
        }
        if rest.len() >= length {
            Some(rest[..length].to_vec())
        } else if eof {
            return malformed(format!(
                "the connection closed after {} of {length} body bytes",
                rest.len()
            ));
        } else {
            None
        }
    } else if eof {
        Some(rest.to_vec())
    } else {
        None
    };
    Ok(body.map(|body| HttpReply { status, body }))
}

/// Decodes a chunked body; `None` while incomplete.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, TransportError> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&rest[..line_end]);
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = match usize::from_str_radix(size_text, 16) {
            Ok(size) => size,
            // Too many hex digits for usize is still a size, and far over the limit.
            Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => usize::MAX,
            Err(_) => {
                return Err(TransportError::Malformed(format!(
                    "chunk size {size_text:?} is not hexadecimal"
                )));
            }
        };
        if size == 0 {
            // Trailers, if any, carry nothing ipledger uses.
            return Ok(Some(body));
        }
        // Compared to the room left, not summed: a hostile size must not wrap around.
        if size > MAX_BODY_BYTES.saturating_sub(body.len()) {
            return Err(TransportError::Malformed(format!(
                "body exceeds the limit of {MAX_BODY_BYTES} bytes"
            )));
        }
        let data = &rest[line_end + 2..];
        if data.len() < size + 2 {
            return Ok(None);
        }
        if &data[size..size + 2] != b"\r\n" {
            return Err(TransportError::Malformed(
                "chunk not followed by CRLF".into(),
            ));
        }
        body.extend_from_slice(&data[..size]);
        rest = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_request_has_length_and_closes() {
        let request = HttpRequest {
            method: "POST",
            path: "/v1/add".into(),
            body: Some(b"{\"a\":1}".to_vec()),
        };
        let text = String::from_utf8(request.encode()).unwrap();
        assert!(text.starts_with("POST /v1/add HTTP/1.1\r\n"), "{text}");
        assert!(text.contains("\r\nContent-Length: 7\r\n"));
        assert!(text.contains("\r\nContent-Type: application/json\r\n"));
        assert!(text.contains("\r\nConnection: close\r\n"));
        assert!(text.ends_with("\r\n\r\n{\"a\":1}"));

        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut parsed = httparse::Request::new(&mut headers);
        let head = request.encode();
        assert!(parsed.parse(&head).unwrap().is_complete());
        assert_eq!(parsed.method, Some("POST"));
        assert_eq!(parsed.path, Some("/v1/add"));
    }

    #[test]
    fn get_request_has_no_body_headers() {
        let request = HttpRequest {
            method: "GET",
            path: "/v1/status?network=pods".into(),
            body: None,
        };
        let text = String::from_utf8(request.encode()).unwrap();
        assert!(text.starts_with("GET /v1/status?network=pods HTTP/1.1\r\n"));
        assert!(!text.contains("Content-Length"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn content_length_body_waits_for_all_bytes() {
        let full =
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\ncontent-type: application/json\r\n\r\nhello";
        for cut in 0..full.len() {
            assert_eq!(
                parse_reply(&full[..cut], false).unwrap(),
                None,
                "cut at {cut}"
            );
        }
        let reply = parse_reply(full, false).unwrap().unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, b"hello");
    }

    #[test]
    fn body_without_length_ends_at_close() {
        let bytes = b"HTTP/1.1 503 Service Unavailable\r\n\r\n{\"code\":11}";
        assert_eq!(parse_reply(bytes, false).unwrap(), None);
        let reply = parse_reply(bytes, true).unwrap().unwrap();
        assert_eq!(reply.status, 503);
        assert_eq!(reply.body, b"{\"code\":11}");
    }

    #[test]
    fn chunked_body_is_decoded() {
        let bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3;ext=1\r\n:1}\r\n0\r\n\r\n";
        let reply = parse_reply(bytes, false).unwrap().unwrap();
        assert_eq!(reply.body, b"{\"a\":1}");
        assert_eq!(parse_reply(&bytes[..bytes.len() - 7], false).unwrap(), None);
        assert!(matches!(
            parse_reply(&bytes[..bytes.len() - 7], true),
            Err(TransportError::Malformed(_))
        ));
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(matches!(
            parse_reply(bad, false),
            Err(TransportError::Malformed(_))
        ));
    }

    #[test]
    fn truncated_or_garbage_answers_are_malformed() {
        let cases: [(&[u8], bool); 5] = [
            (b"", true),
            (b"HTTP/1.1 200 OK\r\nContent-Le", true),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", true),
            (b"SSH-2.0-OpenSSH\r\n\r\n", false),
            (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false),
        ];
        for (bytes, eof) in cases {
            assert!(
                matches!(parse_reply(bytes, eof), Err(TransportError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        let huge = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY_BYTES + 1
        );
        assert!(matches!(
            parse_reply(huge.as_bytes(), false),
            Err(TransportError::Malformed(m)) if m.contains("exceeds")
        ));
    }

    /// Chunk sizes from a hostile or broken agent: beyond usize, at usize::MAX after data
    /// (where `len + size` wraps), or summing past the limit are clean errors, never a
    /// panic or an allocation of that size.
    #[test]
    fn hostile_chunk_sizes_are_malformed() {
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let max = format!("{:x}", usize::MAX);
        let near = format!("{:x}", usize::MAX - 1);
        let half = format!("{:x}", MAX_BODY_BYTES / 2 + 1);
        let cases = [
            "ffffffffffffffffff\r\n".to_string(),
            format!("{max}\r\n"),
            format!("1\r\na\r\n{max}\r\n"),
            format!("2\r\nab\r\n{near}\r\n"),
            format!("{half}\r\n"),
        ];
        for chunks in &cases[..4] {
            let bytes = format!("{head}{chunks}");
            for eof in [false, true] {
                assert!(
                    matches!(
                        parse_reply(bytes.as_bytes(), eof),
                        Err(TransportError::Malformed(m)) if m.contains("limit")
                    ),
                    "{chunks:?}"
                );
            }
        }
        // Two chunks each under the limit whose sum is over it.
        let data = "x".repeat(MAX_BODY_BYTES / 2 + 1);
        let bytes = format!("{head}{}{data}\r\n{}", cases[4], cases[4]);
        assert!(matches!(
            parse_reply(bytes.as_bytes(), false),
            Err(TransportError::Malformed(m)) if m.contains("limit")
        ));
    }

    #[test]
    fn no_content_status_has_empty_body() {
        let reply = parse_reply(b"HTTP/1.1 204 No Content\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!(reply.status, 204);
        assert!(reply.body.is_empty());
    }

    proptest::proptest! {
        /// Arbitrary bytes from a confused peer are an answer, a wait or an error;
        /// never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
            eof in proptest::bool::ANY,
        ) {
            let parsed = parse_reply(&bytes, eof);
            if eof {
                proptest::prop_assert!(!matches!(parsed, Ok(None)), "eof always decides");
            }
        }

        /// A well-formed answer cut anywhere is incomplete until its last byte.
        #[test]
        fn any_prefix_of_an_answer_waits_for_more(
            body in "[ -~]{0,64}",
            chunked in proptest::bool::ANY,
            cut_seed in proptest::num::usize::ANY,
        ) {
            let bytes = if chunked {
                // A zero-size chunk ends the body, so an empty body has no data chunk.
                let data = if body.is_empty() {
                    String::new()
                } else {
                    format!("{:x}\r\n{body}\r\n", body.len())
                };
                format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{data}0\r\n\r\n")
            } else {
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len())
            };
            let bytes = bytes.as_bytes();
            // A chunked body is complete at its "0" chunk, before the final CRLF.
            let complete_at = if chunked { bytes.len() - 2 } else { bytes.len() };
            let cut = cut_seed % complete_at;
            proptest::prop_assert_eq!(parse_reply(&bytes[..cut], false).unwrap(), None);
            let reply = parse_reply(bytes, false).unwrap().unwrap();
            proptest::prop_assert_eq!(reply.body, body.as_bytes());
        }
    }

    #[test]
    fn missing_socket_is_a_connect_error() {
        let request = HttpRequest {
            method: "GET",
            path: "/v1/status".into(),
            body: None,
        };
        let error = exchange(
            Path::new("/nonexistent/ipledger-test/agent.sock"),
            Duration::from_secs(1),
            &request,
        )
        .unwrap_err();
        match error {
            TransportError::Connect(e) => assert_eq!(e.kind(), io::ErrorKind::NotFound),
            other => panic!("expected a connect error, got {other:?}"),
        }
    }
}
