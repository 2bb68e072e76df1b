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
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue, RETRY_AFTER};
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

    /// Sends one request. As with wrk, the time runs from when a connection is free to send
    /// on until the whole answer is read: a population larger than the pool queues here
    /// first, and that wait is the load generator's, not the platform's.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Option<Vec<u8>>,
    ) -> Reply {
        let permit = self
            .permits
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let started = Instant::now();
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
        let mut conn = match pooled {
            Some(c) if !c.is_closed() => c,
            _ => self.connect().await?,
        };
        conn.ready().await?;
        let mut req = Request::builder()
            .method(method)
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
        let req = match body {
            Some(b) => req
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(b)))?,
            None => req.body(Full::new(Bytes::new()))?,
        };
        let res = conn.send_request(req).await?;
        let status = res.status().as_u16();
        let retry_after = res
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = res.into_body().collect().await?.to_bytes();
        self.idle.lock().expect("pool lock").push(conn);
        Ok((status, retry_after, body))
    }
}

/// Milliseconds since the Unix epoch (0 for a clock set before it).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
