//! Redis access: multiplexed connections — to a single server (`ConnectionManager`) or to a
//! Redis Cluster (the cluster client, which routes each command to its slot's master) — a
//! key prefix so tests and tenants never collide, and Lua scripts loaded once (`EVALSHA`,
//! falling back to `EVAL`).
//!
//! A process has one connection for its background tasks, and a service whose requests are
//! Redis alone (users-api) one more for each HTTP worker thread ([`http_worker_thread`]). A
//! multiplexed connection is driven by a task of the runtime that opened it, so a request on
//! an actix worker (a runtime of its own) that uses the background connection hands every
//! command to another thread and is woken back: two thread wake-ups per round trip.
//!
//! On a cluster a script's keys, and a pipeline's, must share one slot: keys that go
//! together carry one hash tag (`{c<id>}`); keys that do not are written by separate
//! commands.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
use redis::{
    Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, ServerErrorKind, Value,
};

use crate::config::{RedisConfig, SecretUrl};

/// How long one attempt to connect to a server (or a cluster node) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one reply may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Retries of a command whose connection broke (or, on a cluster, that met a failover).
const RETRIES: u32 = 2;
/// The longest pause between those retries.
const MAX_RETRY_DELAY: Duration = Duration::from_millis(500);
/// The shortest pause between a cluster's retries (the client's own default, 1.28 s, would
/// spend a reply's whole budget on one wait).
const MIN_CLUSTER_RETRY_DELAY: Duration = Duration::from_millis(50);

/// A connection handle: a clone of a multiplexed connection of the process (see the module's
/// doc), to a single server or to a cluster. Every command, script and pipeline of the
/// crate's callers runs through it as through any `redis::aio::ConnectionLike`.
#[derive(Clone)]
pub struct RedisConn {
    link: Link,
    /// The store's count of commands that failed for want of a connection.
    breaks: Arc<AtomicU64>,
}

#[derive(Clone)]
enum Link {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Whether `e` says that the connection failed, rather than the command.
fn lost_connection(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error()
}

/// `command`, counting in `breaks` a failure of its connection.
fn noted<'a, T: Send + 'a>(
    breaks: &Arc<AtomicU64>,
    command: RedisFuture<'a, T>,
) -> RedisFuture<'a, T> {
    let breaks = breaks.clone();
    Box::pin(async move {
        let result = command.await;
        if let Err(e) = &result
            && lost_connection(e)
        {
            breaks.fetch_add(1, Ordering::Relaxed);
        }
        result
    })
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let command = match &mut self.link {
            Link::Single(conn) => conn.req_packed_command(cmd),
            Link::Cluster(conn) => conn.req_packed_command(cmd),
        };
        noted(&self.breaks, command)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let command = match &mut self.link {
            Link::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Link::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        };
        noted(&self.breaks, command)
    }

    fn get_db(&self) -> i64 {
        match &self.link {
            Link::Single(conn) => conn.get_db(),
            Link::Cluster(conn) => conn.get_db(),
        }
    }
}

/// Opens a connection like the store's first (lazily: nothing is sent until a command).
type Opener = Arc<dyn Fn() -> RedisResult<Link> + Send + Sync>;

/// Store handles get an id each, so that a thread's own connections are told apart; the
/// threads' connections get one each too, for the store's list of them.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The HTTP threads' connections of one store, by connection id: readiness asks each of them.
type Registry = Arc<Mutex<HashMap<u64, RedisConn>>>;

/// A thread's own connection, listed in its store's [`Registry`] until the thread ends or
/// the connection is replaced.
struct OwnConn {
    conn: RedisConn,
    id: u64,
    registry: Registry,
    /// The store's count of connection failures when it was opened.
    opened_after: u64,
}

impl Drop for OwnConn {
    fn drop(&mut self) {
        self.registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

thread_local! {
    /// Whether this thread serves HTTP on a runtime of its own ([`http_worker_thread`]).
    static HTTP_WORKER: Cell<bool> = const { Cell::new(false) };
    /// This thread's connections, by store id.
    static OWN: RefCell<HashMap<u64, OwnConn>> = RefCell::new(HashMap::new());
}

/// Marks the calling thread as an HTTP worker: from now on each store gives it a connection
/// of its own, opened (at its first command) and driven on this thread's runtime. Called by
/// `http::serve` as each actix worker builds its app, when the service asks for it
/// (`Plumbing::redis_per_worker`); the thread's connections end with it.
pub fn http_worker_thread() {
    HTTP_WORKER.with(|w| w.set(true));
}

/// A cheap-to-clone handle: every caller is multiplexed over the connection of its thread
/// (an HTTP worker's own, or the background one).
#[derive(Clone)]
pub struct RedisStore {
    conn: Link,
    open: Opener,
    id: u64,
    /// The HTTP threads' own connections, alive.
    workers: Registry,
    /// Commands that failed for want of a connection, on any connection of the store.
    breaks: Arc<AtomicU64>,
    prefix: Arc<str>,
}

impl RedisStore {
    /// Builds the handle without waiting for Redis: a service whose Redis is down still starts,
    /// reports not-ready, and recovers when Redis returns. Needs a Tokio runtime (the cluster
    /// client connects in a task of its own).
    /// `rediss://user:password@host:port` connects over TLS (rustls) as an ACL user, trusting
    /// the system's roots or, with `REDIS_CA_CERT`, that CA only; `rediss+cluster://` does
    /// the same with every node of the cluster.
    pub fn connect(cfg: &RedisConfig) -> RedisResult<Self> {
        let root_cert = read_ca_cert(cfg)?;
        let open: Opener = match cfg.cluster_seeds() {
            None => {
                let url = cfg.url.expose().to_owned();
                Arc::new(move || connect_single(&url, root_cert.clone()).map(Link::Single))
            }
            Some(Ok(seeds)) => {
                Arc::new(move || connect_cluster(&seeds, root_cert.clone()).map(Link::Cluster))
            }
            Some(Err(reason)) => {
                return Err(RedisError::from((
                    ErrorKind::InvalidClientConfig,
                    "REDIS_URL",
                    reason.to_owned(),
                )));
            }
        };
        Ok(Self {
            conn: open()?,
            open,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            workers: Registry::default(),
            breaks: Arc::default(),
            prefix: Arc::from(cfg.key_prefix.as_str()),
        })
    }

    /// The full key for a logical key such as `session:<hash>`.
    pub fn key(&self, logical: &str) -> String {
        format!("{}{}", self.prefix, logical)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A handle on the background connection.
    fn background(&self) -> RedisConn {
        RedisConn {
            link: self.conn.clone(),
            breaks: self.breaks.clone(),
        }
    }

    /// A connection handle: on an HTTP worker thread its own connection (opened at the
    /// thread's first call), elsewhere the background one.
    ///
    /// A connection learns that its socket died (Redis restarted, a network cut) only when a
    /// command on it fails, and after an outage the first command on each one fails. So when
    /// any command of the store failed for want of a connection since a thread's connection
    /// was opened, the thread opens a new one: once Redis is back, after one failed request
    /// anywhere, every thread talks to it over a fresh connection.
    pub fn conn(&self) -> RedisConn {
        let breaks = self.breaks.load(Ordering::Relaxed);
        if !HTTP_WORKER.with(Cell::get) {
            return self.background();
        }
        OWN.with(|own| {
            let mut own = own.borrow_mut();
            match own.get(&self.id) {
                Some(mine) if mine.opened_after == breaks => return mine.conn.clone(),
                // Dropped: it leaves the registry too.
                Some(_) => drop(own.remove(&self.id)),
                None => {}
            }
            // Opening is lazy and was done once already with the same settings, so it
            // fails only where the first did not (a cluster's task needs a runtime: the
            // worker has one); then the background connection still serves.
            match (self.open)() {
                Ok(link) => {
                    let conn = RedisConn {
                        link,
                        breaks: self.breaks.clone(),
                    };
                    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
                    self.workers
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(id, conn.clone());
                    let mine = OwnConn {
                        conn: conn.clone(),
                        id,
                        registry: self.workers.clone(),
                        opened_after: breaks,
                    };
                    own.insert(self.id, mine);
                    conn
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Redis: no connection of the HTTP worker's own");
                    self.background()
                }
            }
        })
    }

    /// Whether Redis can serve every key now (readiness): one server answers PING; a
    /// cluster says it is `ok` and every master that serves slots answers PING. Asked over
    /// every connection of the process — the background one and each HTTP thread's — so that
    /// after Redis was away none is ready until each has found out and connected again: a
    /// connection learns that its socket died only when a command on it fails, and that
    /// must be the probe's, not a fan's.
    pub async fn ping(&self) -> RedisResult<()> {
        let mut conns = vec![self.background()];
        conns.extend(
            self.workers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .values()
                .cloned(),
        );
        let answers = futures_util::future::join_all(conns.into_iter().map(ping_one)).await;
        answers.into_iter().collect()
    }
}

async fn ping_one(mut conn: RedisConn) -> RedisResult<()> {
    match conn.link.clone() {
        Link::Single(_) => {
            let _: String = redis::cmd("PING").query_async(&mut conn).await?;
            Ok(())
        }
        Link::Cluster(mut cluster) => {
            noted(
                &conn.breaks,
                Box::pin(async move { ping_every_master(&mut cluster).await }),
            )
            .await
        }
    }
}

/// The cluster client's own PING goes only to the masters it holds a connection to, so a
/// master that went away would go unnoticed: the answers are counted against the masters the
/// cluster has (`cluster_size`).
async fn ping_every_master(conn: &mut ClusterConnection) -> RedisResult<()> {
    let info: String = redis::cmd("CLUSTER").arg("INFO").query_async(conn).await?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let state = field("cluster_state").unwrap_or("unknown");
    if state != "ok" {
        return Err(RedisError::from((
            ErrorKind::Server(ServerErrorKind::ClusterDown),
            "the cluster cannot serve every slot",
            format!("cluster_state:{state}"),
        )));
    }
    let masters: usize = field("cluster_size")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let every_master = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
    let answers = conn.route_command(redis::cmd("PING"), every_master).await?;
    let pongs = match answers {
        Value::Map(answers) => answers
            .iter()
            .filter(|(_, a)| matches!(a, Value::SimpleString(s) if s == "PONG"))
            .count(),
        _ => 0,
    };
    if pongs < masters {
        return Err(RedisError::from((
            ErrorKind::ClusterConnectionNotFound,
            "a master of the cluster does not answer",
            format!("{pongs} of {masters} masters answered PING"),
        )));
    }
    Ok(())
}

/// The PEM of `REDIS_CA_CERT`, if set.
fn read_ca_cert(cfg: &RedisConfig) -> RedisResult<Option<Vec<u8>>> {
    let Some(path) = &cfg.ca_cert else {
        return Ok(None);
    };
    std::fs::read(path).map(Some).map_err(|e| {
        RedisError::from((
            ErrorKind::InvalidClientConfig,
            "REDIS_CA_CERT cannot be read",
            format!("{}: {e}", path.display()),
        ))
    })
}

fn tls_roots(root_cert: Vec<u8>) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(root_cert),
    }
}

/// One server, connected lazily (at the first command) and reconnected as needed.
fn connect_single(url: &str, root_cert: Option<Vec<u8>>) -> RedisResult<ConnectionManager> {
    let client = match root_cert {
        Some(root_cert) => redis::Client::build_with_tls(url, tls_roots(root_cert))?,
        None => redis::Client::open(url)?,
    };
    let manager_cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(RETRIES as usize)
        .set_max_delay(MAX_RETRY_DELAY);
    ConnectionManager::new_lazy_with_config(client, manager_cfg)
}

/// A cluster through its seed nodes. The connection is pending: it connects (and learns the
/// slots) in the background, so commands fail as unavailable until a node answers, and a
/// cluster that could not be reached at first is tried again from the seeds.
fn connect_cluster(
    seeds: &[SecretUrl],
    root_cert: Option<Vec<u8>>,
) -> RedisResult<ClusterConnection> {
    let mut builder = ClusterClientBuilder::new(seeds.iter().map(SecretUrl::expose))
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .retries(RETRIES)
        .min_retry_wait(MIN_CLUSTER_RETRY_DELAY.as_millis() as u64)
        .max_retry_wait(MAX_RETRY_DELAY.as_millis() as u64);
    if let Some(root_cert) = root_cert {
        builder = builder.certs(tls_roots(root_cert));
    }
    // The connection's own config replaces the client's timeouts, so it states them again.
    let config = ClusterConfig::new()
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_response_timeout(RESPONSE_TIMEOUT);
    Ok(builder
        .build()?
        .get_pending_async_connection_with_config(config))
}

/// Whether `e` says Redis cannot be reached right now (refused, reset, timed out, still
/// loading its data; on a cluster also CLUSTERDOWN, TRYAGAIN, a master down or failing over,
/// no connection to a slot's node) rather than that a command is wrong: worth waiting out,
/// not giving up on. MOVED and ASK never get here: the cluster client follows them.
pub fn is_unavailable(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(
            e.retry_method(),
            redis::RetryMethod::WaitAndRetry
                | redis::RetryMethod::Reconnect
                | redis::RetryMethod::ReconnectFromInitialConnections
                | redis::RetryMethod::RefreshSlotsAndRetry
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_is_unavailable_and_a_wrong_command_is_not() {
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(is_unavailable(&refused));
        let reset = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(is_unavailable(&reset));
        let wrong = RedisError::from((ErrorKind::UnexpectedReturnType, "not a string"));
        assert!(!is_unavailable(&wrong));
    }

    #[test]
    fn a_cluster_that_cannot_serve_a_slot_is_unavailable_and_a_cross_slot_command_is_not() {
        for kind in [
            ServerErrorKind::ClusterDown,
            ServerErrorKind::TryAgain,
            ServerErrorKind::MasterDown,
        ] {
            let e = RedisError::from((ErrorKind::Server(kind), "cluster"));
            assert!(is_unavailable(&e), "{e}");
        }
        let no_node = RedisError::from((ErrorKind::ClusterConnectionNotFound, "no node"));
        assert!(is_unavailable(&no_node));
        let cross = RedisError::from((ErrorKind::Server(ServerErrorKind::CrossSlot), "keys"));
        assert!(!is_unavailable(&cross));
    }

    #[tokio::test]
    async fn a_cluster_nobody_answers_is_unavailable_not_a_startup_failure() {
        let cfg = RedisConfig::from_env(&crate::config::Env::from_pairs([(
            "REDIS_URL",
            "redis+cluster://127.0.0.1:1,127.0.0.1:2",
        )]))
        .unwrap();
        let store = RedisStore::connect(&cfg).expect("built without connecting");
        let e = store.ping().await.expect_err("nobody answers");
        assert!(is_unavailable(&e), "{e:?}");
    }
}
