//! One generator process of the waiting-room scenario (`loadtest waiting-room-fans`, started
//! by `loadtest run waiting-room`, never by hand): it opens the status streams of the fans it
//! is given, each from its own loopback source address, reads them until they say ACTIVE (or
//! end), and reports what each saw.
//!
//! A stream is a bare TCP connection with one hand-written request and a scan of the bytes
//! that come back, so that one process holds ~15,000 of them in a few tens of MiB: no HTTP
//! client's per-connection machinery. The scan looks for frames, not for the chunked
//! encoding's framing: every frame is `data: {…}` and the chunk sizes in between never
//! contain `data:` or a status name.
//!
//! Protocol with the parent: the fans come as lines on standard input (`ADDR SOURCE_IP
//! SESSION TOKEN`) up to an empty line; the process prints `opened N` once every stream has
//! its answer's head (or failed), then keeps reading until standard input closes (the
//! parent's "stop"), then prints one JSON line per fan ([`FanResult`]) and exits.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;
use tokio::sync::{Semaphore, watch};

/// One fan as the parent assigns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fan {
    pub addr: SocketAddr,
    pub source: IpAddr,
    pub session: String,
    pub token: String,
}

impl Fan {
    pub fn line(&self) -> String {
        format!(
            "{} {} {} {}",
            self.addr, self.source, self.session, self.token
        )
    }

    pub fn parse(line: &str) -> anyhow::Result<Self> {
        let mut parts = line.split(' ');
        let mut next = |what: &str| {
            parts
                .next()
                .filter(|p| !p.is_empty())
                .with_context(|| format!("a fan line without its {what}: {line:?}"))
        };
        Ok(Self {
            addr: next("address")?.parse()?,
            source: next("source address")?.parse()?,
            session: next("session")?.to_owned(),
            token: next("token")?.to_owned(),
        })
    }
}

/// What one fan's stream did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanResult {
    pub token: String,
    /// The answer's status (0: no answer at all).
    pub status: u16,
    /// When the stream first said ACTIVE (Unix ms).
    pub active_at_ms: Option<u64>,
    /// Frames received.
    pub frames: u32,
    /// The last status a frame named (WAITING, ACTIVE, EXPIRED, SOLD_OUT).
    pub last: Option<String>,
    /// The server ended the stream before ACTIVE and before the stop (a dropped stream).
    pub dropped: bool,
    /// Why the stream failed (connection, answer head), if it did.
    pub error: Option<String>,
    /// Attempts it took to open (as a browser's EventSource, a refused or timed-out open is
    /// tried again after a second, up to [`OPEN_ATTEMPTS`] times).
    #[serde(default)]
    pub attempts: u32,
}

/// How many times a fan tries to open its stream.
pub const OPEN_ATTEMPTS: u32 = 5;

/// Answers worth another try: the server was too busy to read the request in time (408),
/// or turned the open away for now.
fn worth_retrying(status: u16) -> bool {
    matches!(status, 408 | 429 | 502 | 503 | 504)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Streams connecting at once, per process: the servers' accept queues stay short.
const CONNECTING: usize = 256;

pub async fn run() -> anyhow::Result<()> {
    let mut input = BufReader::new(tokio::io::stdin()).lines();
    let mut fans = Vec::new();
    while let Some(line) = input.next_line().await? {
        if line.is_empty() {
            break;
        }
        fans.push(Fan::parse(&line)?);
    }
    let (stop_tx, stop) = watch::channel(false);
    let connecting = Arc::new(Semaphore::new(CONNECTING));
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let tasks: Vec<_> = fans
        .into_iter()
        .map(|fan| {
            let (stop, connecting, opened) = (stop.clone(), connecting.clone(), opened_tx.clone());
            tokio::spawn(follow(fan, stop, connecting, opened))
        })
        .collect();
    drop(opened_tx);
    let mut opened = 0usize;
    while opened_rx.recv().await.is_some() {
        opened += 1;
        if opened == tasks.len() {
            break;
        }
    }
    println!("opened {opened}");
    // Standard input closing is the parent's stop.
    while input.next_line().await?.is_some() {}
    let _ = stop_tx.send(true);
    let mut out = String::new();
    for task in tasks {
        let result = task.await.context("a fan's task")?;
        out.push_str(&serde_json::to_string(&result)?);
        out.push('\n');
    }
    let mut stdout = tokio::io::stdout();
    stdout.write_all(out.as_bytes()).await?;
    stdout.flush().await?;
    Ok(())
}

/// Opens one fan's stream and reads it until ACTIVE, its end, or the stop.
async fn follow(
    fan: Fan,
    mut stop: watch::Receiver<bool>,
    connecting: Arc<Semaphore>,
    opened: tokio::sync::mpsc::UnboundedSender<()>,
) -> FanResult {
    let mut result = FanResult {
        token: fan.token.clone(),
        ..FanResult::default()
    };
    let head = loop {
        result.attempts += 1;
        let permit = connecting.acquire().await;
        let head = open(&fan).await;
        drop(permit);
        let again = match &head {
            Ok((_, status, _)) => worth_retrying(*status),
            Err(_) => true,
        };
        if !again || result.attempts >= OPEN_ATTEMPTS {
            break head;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let _ = opened.send(());
    let (mut stream, status, rest) = match head {
        Ok(head) => head,
        Err(e) => {
            result.error = Some(format!("{e:#}"));
            return result;
        }
    };
    result.status = status;
    if status != 200 {
        result.error = Some(format!("answered {status}"));
        return result;
    }
    let mut scan = Scanner::default();
    scan.feed(&rest, &mut result);
    let mut buf = vec![0u8; 2048];
    loop {
        if result.active_at_ms.is_some() {
            return result;
        }
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    result.dropped = !matches!(result.last.as_deref(), Some("EXPIRED" | "SOLD_OUT"));
                    return result;
                }
                Ok(n) => scan.feed(&buf[..n], &mut result),
            },
            _ = stop.wait_for(|s| *s) => return result,
        }
    }
}

/// Connects from the fan's source address and reads the answer's head: the stream, the
/// status, and what came after the head.
async fn open(fan: &Fan) -> anyhow::Result<(tokio::net::TcpStream, u16, Vec<u8>)> {
    let socket = TcpSocket::new_v4()?;
    socket
        .bind(SocketAddr::new(fan.source, 0))
        .with_context(|| format!("bind {}", fan.source))?;
    let mut stream = tokio::time::timeout(Duration::from_secs(30), socket.connect(fan.addr))
        .await
        .context("connect: timed out")?
        .context("connect")?;
    let request = format!(
        "GET /api/queue/tokens/{}/events HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nAccept: text/event-stream\r\n\r\n",
        fan.token, fan.addr, fan.session
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    let end = loop {
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf))
            .await
            .context("the answer's head: timed out")??;
        anyhow::ensure!(n > 0, "closed before answering");
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        anyhow::ensure!(head.len() < 16 * 1024, "an answer head over 16 KiB");
    };
    let status = std::str::from_utf8(&head[..end])
        .ok()
        .and_then(|h| h.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .context("no status line")?;
    Ok((stream, status, head[end..].to_vec()))
}

/// Finds frames and their status in the stream's bytes, across reads: keeps the tail of the
/// last read that may hold the start of a frame cut in two.
#[derive(Default)]
struct Scanner {
    carry: Vec<u8>,
}

impl Scanner {
    fn feed(&mut self, bytes: &[u8], result: &mut FanResult) {
        self.carry.extend_from_slice(bytes);
        let mut used = 0;
        while let Some(at) = find(&self.carry[used..], b"data: ") {
            let start = used + at;
            let Some(len) = find(&self.carry[start..], b"\n\n") else {
                break;
            };
            let frame = &self.carry[start..start + len];
            result.frames += 1;
            for name in ["WAITING", "ACTIVE", "EXPIRED", "SOLD_OUT"] {
                let quoted = format!("\"status\":\"{name}\"");
                if find(frame, quoted.as_bytes()).is_some() {
                    result.last = Some(name.to_owned());
                    if name == "ACTIVE" && result.active_at_ms.is_none() {
                        result.active_at_ms = Some(unix_ms());
                    }
                }
            }
            used = start + len + 2;
        }
        // Keep what may be the start of an unfinished frame (nothing if no frame started).
        let keep_from = find(&self.carry[used..], b"data: ")
            .map_or(self.carry.len().saturating_sub(5).max(used), |at| used + at);
        self.carry.drain(..keep_from);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fan_line_round_trips() {
        let fan = Fan {
            addr: "127.0.0.1:8081".parse().unwrap(),
            source: "127.0.0.3".parse().unwrap(),
            session: "s3ss10n".into(),
            token: "7.abc".into(),
        };
        assert_eq!(Fan::parse(&fan.line()).unwrap(), fan);
        assert!(Fan::parse("127.0.0.1:8081 127.0.0.3").is_err());
    }

    #[test]
    fn frames_cut_anywhere_are_counted_once_and_active_is_seen() {
        let body = "2b\r\ndata: {\"status\":\"WAITING\",\"position\":2}\n\n\r\n\
                    2a\r\ndata: {\"status\":\"ACTIVE\",\"position\":null}\n\n\r\n0\r\n\r\n";
        for cut in 1..body.len() {
            let mut scan = Scanner::default();
            let mut result = FanResult::default();
            scan.feed(&body.as_bytes()[..cut], &mut result);
            scan.feed(&body.as_bytes()[cut..], &mut result);
            assert_eq!(result.frames, 2, "cut at {cut}");
            assert_eq!(result.last.as_deref(), Some("ACTIVE"));
            assert!(result.active_at_ms.is_some());
        }
    }
}
