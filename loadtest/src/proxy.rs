//! `loadtest proxy`: a TCP fault proxy in front of one dependency (PostgreSQL, Redis, Kafka,
//! a service), driven over a small control port. The chaos runner (`bench/chaos.sh`) and the
//! test suite (`e2e`'s `faults` tests, through `e2e::proxy::FaultProxy`) put it between the
//! platform and a dependency to make that dependency unreachable or slow while the platform
//! is under load, without touching the dependency itself.
//!
//! ```text
//! loadtest proxy --listen 127.0.0.1:16379 --upstream 127.0.0.1:6379 --control 127.0.0.1:16380
//! ```
//!
//! The control port speaks lines, one command a line; every command is answered by one line,
//! `ok <state>` or `error <why>`, where the state is
//! `forwarding|cut delay_ms=N open=N accepted=N refused=N`:
//!
//! - `cut`: resets every open proxied connection (both sides, with `SO_LINGER` 0 so the peers
//!   see a reset, not an orderly end) and refuses new ones (accepted and reset at once) until
//!   `heal`: the dependency looks unreachable. Answered once the open connections are gone.
//! - `heal`: new connections are forwarded again.
//! - `delay MS`: every chunk forwarded, in either direction, is written MS milliseconds after
//!   it was read, in order. Each direction has a queue between its reader and its writer, so
//!   the reader never sleeps: this is latency, not a bandwidth limit. `delay 0` removes it.
//! - `status`: the state, changing nothing.
//!
//! From bash, without nc:
//!
//! ```text
//! exec 3<>/dev/tcp/127.0.0.1/16380; echo cut >&3; read -r answer <&3; echo "$answer"
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// The longest `delay` accepted (ten minutes): beyond that it is a typo.
const MAX_DELAY_MS: u64 = 600_000;
/// The longest control line read; a longer one is answered `error` and its connection closed.
const MAX_LINE: u64 = 1024;
/// Chunks queued per direction before the reader waits for the writer (back-pressure).
const QUEUE_CHUNKS: usize = 1024;
/// How long `cut` waits for the open connections to be reset before it answers.
const CUT_SETTLE: Duration = Duration::from_secs(2);

/// What the proxy's connections and its control port share.
struct Shared {
    upstream: String,
    cut: AtomicBool,
    delay_ms: AtomicU64,
    open: AtomicUsize,
    accepted: AtomicU64,
    refused: AtomicU64,
    /// Bumped by every `cut`: each open connection watches it and resets itself.
    cuts: watch::Sender<u64>,
}

impl Shared {
    fn state(&self) -> String {
        format!(
            "{} delay_ms={} open={} accepted={} refused={}",
            if self.cut.load(Ordering::SeqCst) {
                "cut"
            } else {
                "forwarding"
            },
            self.delay_ms.load(Ordering::SeqCst),
            self.open.load(Ordering::SeqCst),
            self.accepted.load(Ordering::SeqCst),
            self.refused.load(Ordering::SeqCst),
        )
    }

    /// Runs one control command; the answer line without its newline.
    async fn command(&self, line: &str) -> String {
        let line = line.trim();
        let mut words = line.split_whitespace();
        let verb = words.next().map(str::to_ascii_lowercase);
        let arg = words.next();
        if words.next().is_some() {
            return format!("error too many arguments: {line:?}");
        }
        match (verb.as_deref(), arg) {
            (Some("cut"), None) => {
                self.cut.store(true, Ordering::SeqCst);
                self.cuts.send_modify(|n| *n = n.wrapping_add(1));
                let deadline = Instant::now() + CUT_SETTLE;
                while self.open.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            (Some("heal"), None) => self.cut.store(false, Ordering::SeqCst),
            (Some("delay"), Some(ms)) => match ms.parse::<u64>() {
                Ok(ms) if ms <= MAX_DELAY_MS => self.delay_ms.store(ms, Ordering::SeqCst),
                _ => {
                    return format!(
                        "error delay takes milliseconds from 0 to {MAX_DELAY_MS}, not {ms:?}"
                    );
                }
            },
            (Some("delay"), None) => return "error delay needs milliseconds: delay MS".into(),
            (Some("status"), None) => {}
            (Some(v @ ("cut" | "heal" | "status")), Some(_)) => {
                return format!("error {v} takes no argument");
            }
            (None, _) => return "error empty command (cut, heal, delay MS, status)".into(),
            (Some(_), _) => {
                return format!("error unknown command {line:?} (cut, heal, delay MS, status)");
            }
        }
        format!("ok {}", self.state())
    }
}

/// A bound proxy, not yet serving: its addresses are known (bind port 0 in tests).
pub struct Proxy {
    listener: TcpListener,
    control: TcpListener,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Binds the forwarding and control listeners. The upstream (`host:port`) is connected
    /// to afresh for every proxied connection, so it may be down when the proxy starts.
    pub async fn bind(listen: &str, upstream: &str, control: &str) -> io::Result<Self> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("listen on {listen}: {e}")))?;
        let control = TcpListener::bind(control)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("control on {control}: {e}")))?;
        let (cuts, _) = watch::channel(0);
        Ok(Self {
            listener,
            control,
            shared: Arc::new(Shared {
                upstream: upstream.to_owned(),
                cut: AtomicBool::new(false),
                delay_ms: AtomicU64::new(0),
                open: AtomicUsize::new(0),
                accepted: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                cuts,
            }),
        })
    }

    pub fn listen_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn control_addr(&self) -> io::Result<SocketAddr> {
        self.control.local_addr()
    }

    /// Forwards and answers the control port until the process ends.
    pub async fn run(self) {
        let Self {
            listener,
            control,
            shared,
        } = self;
        let control_shared = shared.clone();
        tokio::spawn(async move {
            loop {
                match control.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(serve_control(stream, control_shared.clone()));
                    }
                    Err(e) => pause_after_accept_error("control", &e).await,
                }
            }
        });
        loop {
            let (inbound, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    pause_after_accept_error("proxy", &e).await;
                    continue;
                }
            };
            // Subscribed before the flag is read: a cut from here on is seen by `changed()`.
            let cuts = shared.cuts.subscribe();
            if shared.cut.load(Ordering::SeqCst) {
                shared.refused.fetch_add(1, Ordering::SeqCst);
                reset(&inbound);
                continue;
            }
            shared.accepted.fetch_add(1, Ordering::SeqCst);
            shared.open.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(relay(inbound, shared.clone(), cuts));
        }
    }
}

/// Out of file descriptors, say: wait a little rather than spin.
async fn pause_after_accept_error(what: &str, e: &io::Error) {
    eprintln!("[proxy] {what} accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// `SO_LINGER` 0: dropping the socket sends a reset instead of an orderly end.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

/// Decrements the open count however a relay ends.
struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One proxied connection: both directions until both have ended, or a reset on `cut`, on
/// an error of either side, or when the upstream cannot be reached.
async fn relay(mut inbound: TcpStream, shared: Arc<Shared>, mut cuts: watch::Receiver<u64>) {
    let _open = OpenGuard(shared.clone());
    let outbound = tokio::select! {
        connected = TcpStream::connect(shared.upstream.as_str()) => connected,
        _ = cuts.changed() => {
            reset(&inbound);
            return;
        }
    };
    let Ok(mut outbound) = outbound else {
        reset(&inbound);
        return;
    };
    let _ = outbound.set_nodelay(true);
    let _ = inbound.set_nodelay(true);
    let clean = {
        let (client_read, client_write) = inbound.split();
        let (upstream_read, upstream_write) = outbound.split();
        let both = async {
            tokio::try_join!(
                pipe(client_read, upstream_write, &shared),
                pipe(upstream_read, client_write, &shared),
            )
            .is_ok()
        };
        tokio::select! {
            clean = both => clean,
            _ = cuts.changed() => false,
        }
    };
    if !clean {
        reset(&inbound);
        reset(&outbound);
    }
}

/// One direction: a reader that queues each chunk with the instant it is due, and a writer
/// that writes each when due, in order. Ends when the reader's side ended and everything
/// queued was written (then the writer's side is shut down: the end passes through); an
/// error of either side is an error of the connection.
async fn pipe<R, W>(mut from: R, mut to: W, shared: &Shared) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::channel::<(Instant, Bytes)>(QUEUE_CHUNKS);
    let read = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, io::Error>(());
            }
            let due =
                Instant::now() + Duration::from_millis(shared.delay_ms.load(Ordering::SeqCst));
            if tx
                .send((due, Bytes::copy_from_slice(&buf[..n])))
                .await
                .is_err()
            {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the other side stopped taking data",
                ));
            }
        }
    };
    let write = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            to.write_all(&chunk).await?;
        }
        to.shutdown().await
    };
    tokio::try_join!(read, write).map(|_| ())
}

/// One control connection: a command a line, an answer a line.
async fn serve_control(stream: TcpStream, shared: Arc<Shared>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = match (&mut reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(n) => n,
            Err(_) => return,
        };
        if n == 0 {
            return;
        }
        let answer = if line.ends_with(b"\n") || (n as u64) < MAX_LINE {
            shared.command(&String::from_utf8_lossy(&line)).await
        } else {
            // Too long: the rest of the line is read and dropped, a piece at a time.
            loop {
                line.clear();
                match (&mut reader)
                    .take(MAX_LINE)
                    .read_until(b'\n', &mut line)
                    .await
                {
                    Ok(0) | Err(_) => return,
                    Ok(_) if line.ends_with(b"\n") => break,
                    Ok(_) => {}
                }
            }
            format!("error a command is at most {MAX_LINE} bytes")
        };
        if write
            .write_all(format!("{answer}\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on a free port; its address.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    /// A proxy in front of an echo server; (proxy address, control address).
    async fn proxy() -> (SocketAddr, SocketAddr) {
        let upstream = echo_server().await;
        let proxy = Proxy::bind("127.0.0.1:0", &upstream.to_string(), "127.0.0.1:0")
            .await
            .unwrap();
        let addrs = (proxy.listen_addr().unwrap(), proxy.control_addr().unwrap());
        tokio::spawn(proxy.run());
        addrs
    }

    struct Control {
        lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
        write: tokio::net::tcp::OwnedWriteHalf,
    }

    impl Control {
        async fn connect(addr: SocketAddr) -> Self {
            let (read, write) = TcpStream::connect(addr).await.unwrap().into_split();
            Self {
                lines: BufReader::new(read).lines(),
                write,
            }
        }

        async fn send(&mut self, command: &str) -> String {
            self.write
                .write_all(format!("{command}\n").as_bytes())
                .await
                .unwrap();
            self.lines.next_line().await.unwrap().expect("an answer")
        }
    }

    async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> Vec<u8> {
        stream.write_all(message).await.unwrap();
        let mut back = vec![0u8; message.len()];
        stream.read_exact(&mut back).await.unwrap();
        back
    }

    /// Whether the proxy ended `stream` (a reset or an end; either way no echo).
    async fn is_closed(stream: &mut TcpStream) -> bool {
        let _ = stream.write_all(b"anyone?").await;
        let mut buf = [0u8; 16];
        matches!(
            tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn bytes_are_forwarded_both_ways() {
        let (addr, control) = proxy().await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        assert_eq!(round_trip(&mut stream, b"hello").await, b"hello");
        // More than one chunk, both ways at once.
        let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let (mut r, mut w) = stream.into_split();
        let sent = big.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&sent).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.unwrap();
        writer.await.unwrap();
        assert!(back == big, "the echo came back whole and in order");
        // The relay ends just after the last byte reached the client.
        let mut c = Control::connect(control).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = c.send("status").await;
            if status == "ok forwarding delay_ms=0 open=0 accepted=1 refused=0" {
                break;
            }
            assert!(Instant::now() < deadline, "{status}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn cut_resets_open_connections_and_refuses_new_ones_until_heal() {
        let (addr, control) = proxy().await;
        let mut c = Control::connect(control).await;
        let mut open = TcpStream::connect(addr).await.unwrap();
        assert_eq!(round_trip(&mut open, b"before").await, b"before");

        assert_eq!(
            c.send("cut").await,
            "ok cut delay_ms=0 open=0 accepted=1 refused=0"
        );
        assert!(is_closed(&mut open).await, "the open connection was reset");
        let mut refused = TcpStream::connect(addr).await.unwrap();
        assert!(is_closed(&mut refused).await, "a new connection is refused");
        assert_eq!(
            c.send("status").await,
            "ok cut delay_ms=0 open=0 accepted=1 refused=1"
        );

        assert_eq!(
            c.send("heal").await,
            "ok forwarding delay_ms=0 open=0 accepted=1 refused=1"
        );
        let mut again = TcpStream::connect(addr).await.unwrap();
        assert_eq!(round_trip(&mut again, b"after").await, b"after");
        assert_eq!(
            c.send("status").await,
            "ok forwarding delay_ms=0 open=1 accepted=2 refused=1"
        );
    }

    #[tokio::test]
    async fn delay_adds_latency_to_each_direction_and_zero_removes_it() {
        let (addr, control) = proxy().await;
        let mut c = Control::connect(control).await;
        assert_eq!(
            c.send("delay 200").await,
            "ok forwarding delay_ms=200 open=0 accepted=0 refused=0"
        );
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let started = std::time::Instant::now();
        assert_eq!(round_trip(&mut stream, b"ping").await, b"ping");
        // 200 ms there and 200 ms back.
        assert!(started.elapsed() >= Duration::from_millis(400));

        // Ten messages sent back to back come back in order, each at least one delay each
        // way later.
        let started = std::time::Instant::now();
        for i in 0..10u8 {
            stream.write_all(&[i]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut back = [0u8; 10];
        stream.read_exact(&mut back).await.unwrap();
        assert_eq!(back, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert!(started.elapsed() >= Duration::from_millis(400));

        assert!(
            c.send("delay 0")
                .await
                .starts_with("ok forwarding delay_ms=0 ")
        );
        assert_eq!(round_trip(&mut stream, b"fast").await, b"fast");
    }

    #[tokio::test]
    async fn a_bad_command_answers_error_and_the_control_port_goes_on() {
        let (_, control) = proxy().await;
        let mut c = Control::connect(control).await;
        for bad in [
            "",
            "explode",
            "delay",
            "delay -5",
            "delay soon",
            "delay 99999999999999999999",
            "delay 600001",
            "cut now",
            "delay 1 2",
            "\u{0}\u{fffd}",
        ] {
            let answer = c.send(bad).await;
            assert!(answer.starts_with("error "), "{bad:?} answered {answer:?}");
        }
        assert_eq!(
            c.send("  STATUS\r").await,
            "ok forwarding delay_ms=0 open=0 accepted=0 refused=0"
        );
        // Not UTF-8 at all, then an overlong line: each answered with an error.
        c.write.write_all(b"\xff\xfe\n").await.unwrap();
        assert!(
            c.lines
                .next_line()
                .await
                .unwrap()
                .unwrap()
                .starts_with("error ")
        );
        let mut long = vec![b'x'; 5000];
        long.push(b'\n');
        c.write.write_all(&long).await.unwrap();
        let answer = c.lines.next_line().await.unwrap().unwrap();
        assert!(answer.starts_with("error "), "{answer}");
        assert!(c.send("status").await.starts_with("ok forwarding"));
        // A client that hangs up mid-line changes nothing.
        let mut gone = TcpStream::connect(control).await.unwrap();
        gone.write_all(b"cu").await.unwrap();
        drop(gone);
        let mut c = Control::connect(control).await;
        assert!(c.send("status").await.starts_with("ok forwarding"));
    }
}
