//! A minimal HTTP/1.1 keep-alive client for the measured requests.
//!
//! The load generator shares the machine's cores with the service and Postgres, so every cycle it spends
//! is a cycle the service under test does not get. A general client (reqwest on hyper) pays per request
//! for URL parsing, header maps, a connection-pool task hop and its own timer; this one writes the request
//! bytes on a pooled connection and parses the reply in place with `httparse` (about half the client CPU
//! per request here). It speaks exactly what the scenarios need: one request at a time per connection,
//! replies with `Content-Length` or chunked bodies, `Connection: close` honoured. Set-up, `/metrics` and
//! health checks still use reqwest.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Most header lines read from a reply.
const MAX_HEADERS: usize = 32;
/// Largest reply head or body accepted (the service's replies are a few hundred bytes).
const MAX_REPLY_BYTES: usize = 1 << 20;
/// Bytes read per `read` call.
const READ_CHUNK: usize = 8 * 1024;

/// Why a request got no reply.
#[derive(Debug)]
pub enum H1Error {
    Connect(std::io::Error),
    Io(std::io::Error),
    Timeout,
    /// The peer closed the connection before a whole reply.
    Closed,
    Malformed(&'static str),
}

impl H1Error {
    /// A short label for the failure tally.
    pub fn kind(&self) -> &'static str {
        match self {
            H1Error::Connect(_) => "connect",
            H1Error::Io(_) => "io",
            H1Error::Timeout => "timeout",
            H1Error::Closed => "closed",
            H1Error::Malformed(_) => "malformed",
        }
    }
}

impl std::fmt::Display for H1Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            H1Error::Connect(e) => write!(f, "connect: {e}"),
            H1Error::Io(e) => write!(f, "io: {e}"),
            H1Error::Timeout => write!(f, "timed out"),
            H1Error::Closed => write!(f, "connection closed before a whole reply"),
            H1Error::Malformed(what) => write!(f, "malformed reply: {what}"),
        }
    }
}

/// A reply: status and whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet consumed.
    buf: Vec<u8>,
}

/// Keep-alive connections to one `http://host:port`.
pub struct H1 {
    addr: SocketAddr,
    host: String,
    timeout: Duration,
    idle: Mutex<Vec<Conn>>,
    max_idle: usize,
}

impl H1 {
    /// For `base` (`http://host:port[/...]`); resolves the host once.
    pub async fn new(base: &str, max_idle: usize, timeout: Duration) -> anyhow::Result<H1> {
        let rest = base
            .strip_prefix("http://")
            .with_context(|| format!("only http:// URLs are supported by the load client: {base}"))?;
        let host = rest.split('/').next().unwrap_or_default().to_string();
        if host.is_empty() {
            bail!("no host in {base}");
        }
        let with_port = if host.contains(':') {
            host.clone()
        } else {
            format!("{host}:80")
        };
        let addr = tokio::net::lookup_host(&with_port)
            .await
            .with_context(|| format!("resolving {with_port}"))?
            .next()
            .with_context(|| format!("{with_port} resolves to nothing"))?;
        Ok(H1 {
            addr,
            host,
            timeout,
            idle: Mutex::new(Vec::new()),
            max_idle: max_idle.max(1),
        })
    }

    /// Sends one request and reads its reply, within the timeout. `path` starts with `/`.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Reply, H1Error> {
        match tokio::time::timeout(self.timeout, self.exchange(method, path, headers, body)).await {
            Ok(r) => r,
            Err(_) => Err(H1Error::Timeout),
        }
    }

    async fn exchange(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Reply, H1Error> {
        let pooled = self.idle.lock().expect("idle lock").pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => {
                let stream = TcpStream::connect(self.addr).await.map_err(H1Error::Connect)?;
                stream.set_nodelay(true).map_err(H1Error::Connect)?;
                Conn {
                    stream,
                    buf: Vec::with_capacity(READ_CHUNK),
                }
            }
        };
        let req = encode(method, path, &self.host, headers, body);
        conn.stream.write_all(&req).await.map_err(H1Error::Io)?;
        let (reply, keep) = read_reply(&mut conn).await?;
        if keep {
            let mut idle = self.idle.lock().expect("idle lock");
            if idle.len() < self.max_idle {
                idle.push(conn);
            }
        }
        Ok(reply)
    }
}

/// The request's bytes.
fn encode(method: &str, path: &str, host: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Vec<u8> {
    let body = body.unwrap_or_default();
    let mut out = Vec::with_capacity(
        128 + path.len() + body.len() + headers.iter().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>(),
    );
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (k, v) in headers {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || method != "GET" {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Reads more bytes into `conn.buf`; `Closed` at end of stream.
async fn fill(conn: &mut Conn) -> Result<(), H1Error> {
    if conn.buf.len() > MAX_REPLY_BYTES {
        return Err(H1Error::Malformed("reply too large"));
    }
    conn.buf.reserve(READ_CHUNK);
    match conn.stream.read_buf(&mut conn.buf).await {
        Ok(0) => Err(H1Error::Closed),
        Ok(_) => Ok(()),
        Err(e) => Err(H1Error::Io(e)),
    }
}

enum Framing {
    Length(usize),
    Chunked,
    /// No length: the body runs to the end of the connection.
    UntilClose,
}

/// Reads one reply; returns it and whether the connection may be used again.
async fn read_reply(conn: &mut Conn) -> Result<(Reply, bool), H1Error> {
    let (status, head_len, framing, mut keep) = loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut headers);
        match res.parse(&conn.buf) {
            Ok(httparse::Status::Complete(n)) => {
                let status = res.code.ok_or(H1Error::Malformed("no status"))?;
                let mut framing = Framing::UntilClose;
                let mut keep = res.version == Some(1);
                for h in res.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        let v = std::str::from_utf8(h.value).map_err(|_| H1Error::Malformed("content-length"))?;
                        let len = v.trim().parse().map_err(|_| H1Error::Malformed("content-length"))?;
                        framing = Framing::Length(len);
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding")
                        && h.value.eq_ignore_ascii_case(b"chunked")
                    {
                        framing = Framing::Chunked;
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        if h.value.eq_ignore_ascii_case(b"close") {
                            keep = false;
                        } else if h.value.eq_ignore_ascii_case(b"keep-alive") {
                            keep = true;
                        }
                    }
                }
                break (status, n, framing, keep);
            }
            Ok(httparse::Status::Partial) => fill(conn).await?,
            Err(_) => return Err(H1Error::Malformed("reply head")),
        }
    };
    conn.buf.drain(..head_len);
    let body = match framing {
        Framing::Length(len) => {
            if len > MAX_REPLY_BYTES {
                return Err(H1Error::Malformed("body too large"));
            }
            while conn.buf.len() < len {
                fill(conn).await?;
            }
            conn.buf.drain(..len).collect()
        }
        Framing::Chunked => read_chunked(conn).await?,
        Framing::UntilClose => {
            keep = false;
            loop {
                match fill(conn).await {
                    Ok(()) => {}
                    Err(H1Error::Closed) => break,
                    Err(e) => return Err(e),
                }
            }
            std::mem::take(&mut conn.buf)
        }
    };
    Ok((Reply { status, body }, keep))
}

async fn read_chunked(conn: &mut Conn) -> Result<Vec<u8>, H1Error> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = conn.buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            fill(conn).await?;
        };
        let line = std::str::from_utf8(&conn.buf[..line_end]).map_err(|_| H1Error::Malformed("chunk size"))?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| H1Error::Malformed("chunk size"))?;
        if body.len() + size > MAX_REPLY_BYTES {
            return Err(H1Error::Malformed("body too large"));
        }
        conn.buf.drain(..line_end + 2);
        // The chunk and its CRLF (the last chunk is followed by an empty trailer line).
        while conn.buf.len() < size + 2 {
            fill(conn).await?;
        }
        body.extend_from_slice(&conn.buf[..size]);
        conn.buf.drain(..size + 2);
        if size == 0 {
            return Ok(body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Serves each accepted connection the given raw replies, one per request read.
    async fn server(replies: Vec<&'static str>) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut seen = Vec::new();
            for r in replies {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap();
                seen.push(String::from_utf8_lossy(&buf[..n]).to_string());
                s.write_all(r.as_bytes()).await.unwrap();
            }
            seen
        });
        (base, task)
    }

    #[tokio::test]
    async fn replies_with_a_length_and_chunked_ones_are_read_on_one_kept_connection() {
        let (base, task) = server(vec![
            "HTTP/1.1 201 Created\r\ncontent-length: 5\r\n\r\nhello",
            "HTTP/1.1 422 Unprocessable Entity\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        ])
        .await;
        let c = H1::new(&base, 4, Duration::from_secs(5)).await.unwrap();
        let a = c
            .request("POST", "/w/1", &[("authorization", "Bearer t")], Some(b"{\"a\":1}"))
            .await
            .unwrap();
        assert_eq!(
            a,
            Reply {
                status: 201,
                body: b"hello".to_vec()
            }
        );
        let b = c.request("GET", "/w/2", &[], None).await.unwrap();
        assert_eq!(
            b,
            Reply {
                status: 422,
                body: b"abcde".to_vec()
            }
        );
        let seen = task.await.unwrap();
        assert!(seen[0].starts_with("POST /w/1 HTTP/1.1\r\n"), "{}", seen[0]);
        assert!(seen[0].contains("authorization: Bearer t\r\n") && seen[0].contains("content-length: 7\r\n"));
        assert!(seen[0].ends_with("\r\n\r\n{\"a\":1}"));
        assert!(seen[1].starts_with("GET /w/2 HTTP/1.1\r\n") && !seen[1].contains("content-length"));
    }

    #[tokio::test]
    async fn a_connection_closed_before_the_reply_is_an_error_not_a_reply() {
        let (base, task) = server(vec!["HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"]).await;
        let c = H1::new(&base, 4, Duration::from_secs(5)).await.unwrap();
        let r = c.request("GET", "/", &[], None).await;
        task.await.unwrap();
        assert!(matches!(r, Err(H1Error::Closed)), "{r:?}");
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let _hold = tokio::spawn(async move {
            let (_s, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let c = H1::new(&base, 4, Duration::from_millis(200)).await.unwrap();
        assert!(matches!(c.request("GET", "/", &[], None).await, Err(H1Error::Timeout)));
    }
}
