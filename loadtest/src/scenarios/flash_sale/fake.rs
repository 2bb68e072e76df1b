//! A scripted platform for the fan's tests: a bare HTTP/1.1 server on a local port whose
//! answers each test writes, faults included (a 502, a connection closed unanswered); and the
//! sale, fan and reservation those tests start from.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::Sale;
use crate::fixture::User;
use crate::http::Http;
use crate::stats::Recorder;

/// One request as the fake platform saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    /// When its head had arrived.
    pub at: Instant,
}

/// The answer to a request: status and body, or `None` to close the connection unanswered.
type Script = dyn Fn(&Seen, usize) -> Option<(u16, Value)> + Send + Sync;

/// The scripted platform and the requests it has seen.
pub struct Fake {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    /// `script(request, how many requests to the same method and path came before)`.
    pub async fn start(
        script: impl Fn(&Seen, usize) -> Option<(u16, Value)> + Send + Sync + 'static,
    ) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(serve(stream, script.clone(), log.clone()));
            }
        });
        Fake { base, seen }
    }

    pub fn seen(&self, method: &str, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.method == method && s.path == path)
            .cloned()
            .collect()
    }
}

async fn serve(stream: tokio::net::TcpStream, script: Arc<Script>, log: Arc<Mutex<Vec<Seen>>>) {
    let mut stream = BufReader::new(stream);
    loop {
        let mut head = String::new();
        if stream.read_line(&mut head).await.unwrap_or(0) == 0 {
            return;
        }
        let mut parts = head.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_owned(),
            parts.next().unwrap_or("").to_owned(),
        );
        let mut headers = HashMap::new();
        loop {
            let mut line = String::new();
            stream.read_line(&mut line).await.unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await.unwrap();
        let seen = Seen {
            method,
            path,
            headers,
            at: Instant::now(),
        };
        let before = {
            let mut log = log.lock().unwrap();
            let n = log
                .iter()
                .filter(|s| s.method == seen.method && s.path == seen.path)
                .count();
            log.push(seen.clone());
            n
        };
        let Some((status, body)) = script(&seen, before) else {
            return;
        };
        let body = body.to_string();
        // A 429 says when to come back, as the gateway's do.
        let retry_after = if status == 429 {
            "retry-after: 1\r\n"
        } else {
            ""
        };
        let answer = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{retry_after}content-length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.get_mut().write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// The concert of every scripted sale.
const CONCERT: i64 = 3;

/// A sale of one seat at `fake`, polling every 10 ms.
pub fn sale(fake: &Fake, confirm_timeout: Duration) -> Sale {
    Sale::new(
        Arc::new(Http::new(&fake.base, 4).unwrap()),
        Arc::new(Recorder::default()),
        CONCERT,
        1,
        Duration::from_millis(10),
        confirm_timeout,
        Duration::from_secs(600),
    )
}

/// A signed-in fan with a queue pass.
pub fn fan() -> User {
    User {
        id: 1,
        username: "fan1".into(),
        session: "s".into(),
        pass: Some("p".into()),
    }
}

/// Reservation `id` of the concert, HELD, as the platform lists it.
pub fn held(id: i64) -> Value {
    json!({"id": id, "concert_id": CONCERT, "status": "HELD"})
}
