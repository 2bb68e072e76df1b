//! The load generator's HTTP/1.1 client: a fixed-size pool of keep-alive connections, each a
//! bare hyper connection. It shares two cores with the system under test, so it does no more
//! than wrk would: no per-request pool bookkeeping beyond a semaphore and a stack of idle
//! connections, no redirects, no decompression.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{
    ACCEPT, AUTHORIZATION, CONNECTION, CONTENT_TYPE, HOST, HeaderValue, RETRY_AFTER,
};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// One answer: status (0 when the connection failed), body, when it was sent (Unix ms, to
/// place it against the fault windows of a drill) and the time it took.
pub struct Reply {
    pub status: u16,
    /// `Retry-After` in seconds, when the answer has one (429, 503).
    pub retry_after: Option<Duration>,
    pub body: Bytes,
    pub sent_unix_ms: u64,
    pub elapsed: Duration,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The platform failed to answer: a 5xx (the gateway's 502/504 when a service is down) or
    /// no HTTP answer at all. A fan retries these; every other answer is the platform's word.
    pub fn is_fault(&self) -> bool {
        self.status == 0 || self.status >= 500
    }

    /// The problem's `code`, for error answers.
    pub fn code(&self) -> Option<String> {
        if self.status < 400 {
            return None;
        }
        self.json()["code"].as_str().map(str::to_owned)
    }
}

/// What a request carries besides method and path.
#[derive(Default, Clone)]
pub struct Auth<'a> {
    pub session: Option<&'a str>,
    pub pass: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
}

pub struct Http {
    addr: SocketAddr,
    host: HeaderValue,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    permits: Semaphore,
    timeout: Duration,
}

impl Http {
    /// `base` is `http://host:port`; at most `connections` requests are in flight at once.
    pub fn new(base: &str, connections: usize) -> anyhow::Result<Self> {
        let authority = base
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("only http:// URLs are supported, got {base}"))?
            .trim_end_matches('/');
        let addr = std::net::ToSocketAddrs::to_socket_addrs(authority)
            .with_context(|| format!("resolve {authority}"))?
            .next()
            .ok_or_else(|| anyhow!("{authority} resolves to nothing"))?;
        Ok(Self {
            addr,
            host: HeaderValue::from_str(authority)?,
            idle: Mutex::new(Vec::with_capacity(connections)),
            permits: Semaphore::new(connections),
            timeout: Duration::from_secs(30),
        })
    }

    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    pub async fn get(&self, path: &str, auth: Auth<'_>) -> Reply {
        self.send(Method::GET, path, auth, None).await
    }

    pub async fn post<T: Serialize>(&self, path: &str, auth: Auth<'_>, body: &T) -> Reply {
        let body = serde_json::to_vec(body).expect("request bodies serialize");
        self.send(Method::POST, path, auth, Some(body)).await
    }

    /// Sends one request. In a closed loop, as with wrk, the time runs from when a connection
    /// is free to send on until the whole answer is read: a population larger than the pool
    /// queues here first, and that wait is the load generator's, not the platform's. In a
    /// paced run the first request of each call is timed from when it was due
    /// ([`crate::drive::take_due`]): the waits for a free connection and a late schedule are
    /// the platform falling behind, and count.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Option<Vec<u8>>,
    ) -> Reply {
        let due = crate::drive::take_due();
        let permit = self
            .permits
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let started = due.unwrap_or_else(Instant::now);
        let sent_unix_ms = unix_ms(SystemTime::now());
        let result = tokio::time::timeout(self.timeout, self.exchange(method, path, auth, body))
            .await
            .map_err(|_| anyhow!("timed out"))
            .and_then(|r| r);
        drop(permit);
        match result {
            Ok((status, retry_after, body)) => Reply {
                status,
                retry_after,
                body,
                sent_unix_ms,
                elapsed: started.elapsed(),
            },
            Err(e) => Reply {
                status: 0,
                retry_after: None,
                body: Bytes::from(e.to_string()),
                sent_unix_ms,
                elapsed: started.elapsed(),
            },
        }
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<(u16, Option<Duration>, Bytes)> {
        let pooled = self.idle.lock().expect("pool lock").pop();
        let (mut conn, mut reused) = match pooled {
            Some(c) if !c.is_closed() => (c, true),
            _ => (self.connect().await?, false),
        };
        // A pooled connection the server closed meanwhile (its idle timeout) fails here,
        // before anything is sent: a new one, as a browser does.
        if conn.ready().await.is_err() {
            (conn, reused) = (self.connect().await?, false);
            conn.ready().await?;
        }
        let request = || {
            let mut req = Request::builder()
                .method(method.clone())
                .uri(path)
                .header(HOST, self.host.clone());
            if let Some(s) = auth.session {
                req = req.header(AUTHORIZATION, format!("Bearer {s}"));
            }
            if let Some(q) = auth.pass {
                req = req.header("x-queue-token", q);
            }
            if let Some(k) = auth.idempotency_key {
                req = req.header("idempotency-key", k);
            }
            match &body {
                Some(b) => req
                    .header(CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(b.clone()))),
                None => req.body(Full::new(Bytes::new())),
            }
        };
        let res = match conn.send_request(request()?).await {
            Ok(res) => res,
            // The server closed a reused connection (its keep-alive timeout) just as the
            // request went out: a GET is sent again on a new one, as browsers do; anything
            // else counts as the failure it is.
            Err(_) if reused && method == Method::GET => {
                conn = self.connect().await?;
                conn.ready().await?;
                conn.send_request(request()?).await?
            }
            Err(e) => return Err(e.into()),
        };
        let status = res.status().as_u16();
        let retry_after = res
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // The server's last answer on this connection (nginx closes one after
        // `keepalive_requests`): pooled, the next request would race the close and fail.
        let last = res
            .headers()
            .get(CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let body = res.into_body().collect().await?.to_bytes();
        if !last {
            self.idle.lock().expect("pool lock").push(conn);
        }
        Ok((status, retry_after, body))
    }
}

impl Http {
    /// Opens `path` as a server-sent event stream on a connection of its own (a stream is held
    /// for as long as the fan waits: neither the pool's connections nor its permits) and hands
    /// the text of each `data:` frame to `on_data`, until `on_data` answers false or the server
    /// ends the stream. Answers the status (0 when no answer came); the frames only with 200.
    pub async fn stream(
        &self,
        path: &str,
        auth: Auth<'_>,
        mut on_data: impl FnMut(&str) -> bool,
    ) -> u16 {
        let opened: anyhow::Result<_> = async {
            let mut conn = self.connect().await?;
            conn.ready().await?;
            let mut req = Request::builder()
                .method(Method::GET)
                .uri(path)
                .header(HOST, self.host.clone())
                .header(ACCEPT, "text/event-stream");
            if let Some(s) = auth.session {
                req = req.header(AUTHORIZATION, format!("Bearer {s}"));
            }
            Ok(conn
                .send_request(req.body(Full::new(Bytes::new()))?)
                .await?)
        }
        .await;
        let Ok(res) = opened else { return 0 };
        let status = res.status().as_u16();
        if status != 200 {
            return status;
        }
        let mut body = res.into_body();
        let mut pending = String::new();
        while let Some(Ok(frame)) = body.frame().await {
            let Ok(chunk) = frame.into_data() else {
                continue;
            };
            pending.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = pending.find("\n\n") {
                let event: String = pending.drain(..end + 2).collect();
                for data in event.lines().filter_map(|l| l.strip_prefix("data:")) {
                    if !on_data(data.trim_start()) {
                        return status;
                    }
                }
            }
        }
        status
    }
}

/// Milliseconds since the Unix epoch (0 for a clock set before it).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A server that answers any request with an event stream written in awkward pieces: a
    /// frame split across writes, two frames in one, a keep-alive comment.
    async fn serve_stream(pieces: &'static [&'static str]) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf).await.unwrap();
            sock.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
            )
            .await
            .unwrap();
            for p in pieces {
                let chunk = format!("{:x}\r\n{p}\r\n", p.len());
                sock.write_all(chunk.as_bytes()).await.unwrap();
                sock.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sock.write_all(b"0\r\n\r\n").await.unwrap();
        });
        format!("http://{addr}")
    }

    /// A server that answers the first request on each connection and closes the connection
    /// on its second request without an answer: a keep-alive timeout racing the request,
    /// every time.
    async fn serve_once_per_connection() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = sock.read(&mut buf).await.unwrap();
                    sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await
                        .unwrap();
                    let _ = sock.read(&mut buf).await;
                });
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_get_on_a_connection_closed_under_it_is_sent_again_and_nothing_else_is() {
        let http = Http::new(&serve_once_per_connection().await, 1).unwrap();
        assert_eq!(http.get("/first", Auth::default()).await.status, 200);
        assert_eq!(
            http.get("/again", Auth::default()).await.status,
            200,
            "sent again on a new connection"
        );
        let post = http.post("/pay", Auth::default(), &1).await;
        assert_eq!(post.status, 0, "a POST is not sent twice: {:?}", post.body);
    }

    #[tokio::test]
    async fn a_stream_hands_over_each_data_frame_however_it_is_cut_and_stops_when_asked() {
        let base = serve_stream(&[
            "data: {\"n\":1}\n",
            "\n: keep-alive\n\ndata: {\"n\":2}\n\ndata: {\"n\"",
            ":3}\n\ndata: {\"n\":4}\n\n",
        ])
        .await;
        let http = Http::new(&base, 1).unwrap();
        let mut seen = Vec::new();
        let status = http
            .stream("/events", Auth::default(), |data| {
                seen.push(data.to_owned());
                seen.len() < 3
            })
            .await;
        assert_eq!(status, 200);
        assert_eq!(seen, [r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":3}"#]);
    }
}
