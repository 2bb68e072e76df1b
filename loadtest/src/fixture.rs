//! Setup, never measured: accounts, sessions, concerts, money and queue passes, made as fast as
//! the platform allows so that the measured phase starts from a known state.
//!
//! Accounts are real rows of users-api's database. Hashing 10,000 passwords with argon2 would
//! take minutes of both cores, so one account is signed up through the API and the others get
//! copies of its password hash; sessions are minted with common's own `SessionStore`, exactly
//! as log-in does. Admission for the non-queue scenarios uses users-api's own `WaitingRoom`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use common::auth::{QueueKeys, Role, Session, SessionStore};
use common::config::{Env, RedisConfig};
use common::redis::RedisStore;
use futures_util::{StreamExt, stream};
use serde_json::json;
use sqlx::PgPool;
use users_api::config::QueueConfig;
use users_api::domain::queue::WaitingRoom;

use crate::http::{Auth, Http};

pub const PASSWORD: &str = "loadtest-password";

/// A load-test account: its id and username (its password is [`PASSWORD`]), a live session
/// and, once it has one, its queue pass.
#[derive(Clone)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub session: String,
    pub pass: Option<String>,
}

impl User {
    pub fn auth(&self) -> Auth<'_> {
        Auth {
            session: Some(&self.session),
            pass: self.pass.as_deref(),
            idempotency_key: None,
        }
    }
}

/// The running platform as the load test reaches it: the gateway, the three databases (setup
/// and audit) and Redis (sessions and admission).
pub struct Platform {
    pub http: Arc<Http>,
    pub users_db: PgPool,
    pub concert_db: PgPool,
    pub payment_db: PgPool,
    sessions: SessionStore,
    room: WaitingRoom,
    /// Names this run's accounts and concerts apart from every earlier run's.
    pub run: String,
    hash: tokio::sync::OnceCell<String>,
    admin: Option<String>,
}

fn database_url(var: &str, db: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| format!("postgres://postgres@127.0.0.1:5432/{db}"))
}

async fn pool(var: &str, db: &str) -> anyhow::Result<PgPool> {
    let url = database_url(var, db);
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .with_context(|| format!("connect to {var}"))
}

impl Platform {
    pub async fn connect(gateway: &str, connections: usize) -> anyhow::Result<Self> {
        let redis = RedisStore::connect(&RedisConfig::from_env(&Env::process())?)?;
        // Setup admits its own users at once, whatever the platform's admission pace.
        let queue = QueueConfig::from_env(&Env::from_pairs([
            ("QUEUE_MAX_ACTIVE", "1000000"),
            ("QUEUE_ADMIT_PER_TICK", "100000"),
        ]))?;
        let run = format!("{:x}", rand::random::<u32>());
        Ok(Self {
            http: Arc::new(Http::new(gateway, connections)?),
            users_db: pool("USERS_DATABASE_URL", "ticketing_users").await?,
            concert_db: pool("CONCERT_DATABASE_URL", "ticketing_concert").await?,
            payment_db: pool("PAYMENT_DATABASE_URL", "ticketing_payment").await?,
            sessions: SessionStore::new(redis.clone(), Duration::from_secs(3 * 3600)),
            room: WaitingRoom::new(QueueKeys::new(redis), queue, common::clock::Clock::system()),
            run,
            hash: tokio::sync::OnceCell::new(),
            admin: None,
        })
    }

    /// users-api's waiting room on the platform's Redis, as setup uses it (admits at once).
    pub fn room(&self) -> &WaitingRoom {
        &self.room
    }

    /// `n` new accounts (`lt<run>_<i>`), each with a session.
    pub async fn users(&self, n: usize, tag: &str) -> anyhow::Result<Vec<User>> {
        let hash = self.password_hash().await?;
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "INSERT INTO users (username, password_hash) \
             SELECT $1 || g, $2 FROM generate_series(1, $3) g RETURNING id, username",
        )
        .bind(format!("lt{}{tag}_", self.run))
        .bind(&hash)
        .bind(n as i64)
        .fetch_all(&self.users_db)
        .await
        .context("insert load-test accounts")?;
        let sessions = &self.sessions;
        let users: Vec<anyhow::Result<User>> = stream::iter(rows)
            .map(|(id, username)| async move {
                let session = Session {
                    user_id: id,
                    username: username.clone(),
                    role: Role::User,
                };
                let (token, _) = sessions.create(&session).await?;
                Ok(User {
                    id,
                    username,
                    session: token,
                    pass: None,
                })
            })
            .buffer_unordered(64)
            .collect()
            .await;
        users.into_iter().collect()
    }

    /// The argon2 hash of `PASSWORD`, from one account signed up through the API (once a run).
    async fn password_hash(&self) -> anyhow::Result<String> {
        let hash = self
            .hash
            .get_or_try_init(|| async {
                let username = format!("lt{}_template", self.run);
                let reply = self
                    .http
                    .post(
                        "/api/users",
                        Auth::default(),
                        &json!({"username": username, "password": PASSWORD}),
                    )
                    .await;
                if reply.status != 201 {
                    bail!(
                        "sign-up of the template account: {} {}",
                        reply.status,
                        String::from_utf8_lossy(&reply.body)
                    );
                }
                let (hash,): (String,) =
                    sqlx::query_as("SELECT password_hash FROM users WHERE username = $1")
                        .bind(&username)
                        .fetch_one(&self.users_db)
                        .await?;
                Ok(hash)
            })
            .await?;
        Ok(hash.clone())
    }

    /// The username of the run's admin ([`Platform::admin`]); its password is [`PASSWORD`].
    pub fn admin_username(&self) -> String {
        format!("lt{}_admin", self.run)
    }

    /// The run's admin session (an ADMIN made for the run, once).
    pub async fn admin(&mut self) -> anyhow::Result<String> {
        if let Some(a) = &self.admin {
            return Ok(a.clone());
        }
        let hash = self.password_hash().await?;
        let username = self.admin_username();
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO users (username, password_hash, role) VALUES ($1, $2, 'ADMIN') RETURNING id",
        )
        .bind(&username)
        .bind(hash)
        .fetch_one(&self.users_db)
        .await?;
        let (token, _) = self
            .sessions
            .create(&Session {
                user_id: id,
                username,
                role: Role::Admin,
            })
            .await?;
        self.admin = Some(token.clone());
        Ok(token)
    }

    /// Lets each buyer hold and own up to `n` seats of `concert` (1..=20; 4 by default).
    pub async fn limit_per_buyer(&mut self, concert: i64, n: u32) -> anyhow::Result<()> {
        let admin = self.admin().await?;
        let auth = Auth {
            session: Some(&admin),
            ..Auth::default()
        };
        let body = serde_json::to_vec(&json!({ "max_tickets_per_user": n }))?;
        let reply = self
            .http
            .send(
                hyper::Method::PATCH,
                &format!("/api/admin/concerts/{concert}"),
                auth,
                Some(body),
            )
            .await;
        anyhow::ensure!(
            reply.status == 200,
            "limit per buyer: {} {:?}",
            reply.status,
            reply.body
        );
        Ok(())
    }

    /// A concert with `schedules` schedules of `seats` seats, open for booking now.
    pub async fn concert(
        &mut self,
        title: &str,
        schedules: usize,
        seats: u32,
        price: i64,
    ) -> anyhow::Result<(i64, Vec<i64>)> {
        let admin = self.admin().await?;
        let auth = Auth {
            session: Some(&admin),
            ..Auth::default()
        };
        let reply = self
            .http
            .post(
                "/api/admin/concerts",
                auth.clone(),
                &json!({"title": format!("{title} {}", self.run), "performer": "Load Test"}),
            )
            .await;
        let concert = reply.json()["id"]
            .as_i64()
            .ok_or_else(|| anyhow!("create concert: {} {:?}", reply.status, reply.body))?;
        let now = common::clock::Clock::system().now();
        let mut ids = Vec::with_capacity(schedules);
        for day in 0..schedules {
            let body = json!({
                "starts_at": now + chrono::Duration::days(30 + day as i64),
                "booking_opens_at": now - chrono::Duration::minutes(1),
                "seat_count": seats,
                "price": price,
            });
            let reply = self
                .http
                .post(
                    &format!("/api/admin/concerts/{concert}/schedules"),
                    auth.clone(),
                    &body,
                )
                .await;
            ids.push(
                reply.json()["id"]
                    .as_i64()
                    .ok_or_else(|| anyhow!("create schedule: {} {:?}", reply.status, reply.body))?,
            );
        }
        Ok((concert, ids))
    }

    /// An existing concert's schedules, its seats over all of them, and its dearest seat's
    /// price (what each fan is funded with).
    pub async fn existing_concert(&self, concert: i64) -> anyhow::Result<(Vec<i64>, u64, i64)> {
        let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
            "SELECT sc.id, count(se.id), coalesce(max(se.price), 0) FROM schedules sc \
             JOIN seats se ON se.schedule_id = sc.id WHERE sc.concert_id = $1 \
             GROUP BY sc.id ORDER BY sc.id",
        )
        .bind(concert)
        .fetch_all(&self.concert_db)
        .await?;
        if rows.is_empty() {
            anyhow::bail!("concert {concert} has no schedule with seats to sell");
        }
        let seats = rows.iter().map(|r| r.1 as u64).sum();
        let price = rows.iter().map(|r| r.2).max().unwrap_or(0);
        Ok((rows.into_iter().map(|r| r.0).collect(), seats, price))
    }

    /// Charges every wallet with `amount` through the API.
    pub async fn fund(&self, users: &[User], amount: i64) -> anyhow::Result<()> {
        let http = &self.http;
        let failures = stream::iter(users)
            .map(|u| async move {
                let key = format!("fund-{}", u.id);
                let auth = Auth {
                    session: Some(&u.session),
                    pass: None,
                    idempotency_key: Some(&key),
                };
                http.post("/api/wallet/charges", auth, &json!({"amount": amount}))
                    .await
                    .status
            })
            .buffer_unordered(64)
            .filter(|s| std::future::ready(*s != 201))
            .count()
            .await;
        if failures > 0 {
            bail!("{failures} wallet charges failed during setup");
        }
        Ok(())
    }

    /// Every user joins `concert`'s line through the API; with `admit`, all are admitted at once.
    pub async fn join(&self, users: &mut [User], concert: i64, admit: bool) -> anyhow::Result<()> {
        let http = &self.http;
        let passes: Vec<Option<String>> = stream::iter(users.iter())
            .map(|u| async move {
                let reply = http
                    .post(
                        "/api/queue/tokens",
                        u.auth(),
                        &json!({"concert_id": concert}),
                    )
                    .await;
                reply.json()["token"].as_str().map(str::to_owned)
            })
            .buffered(64)
            .collect()
            .await;
        for (u, p) in users.iter_mut().zip(passes) {
            u.pass = Some(p.ok_or_else(|| anyhow!("a setup join failed"))?);
        }
        // batch may admit some of them first; admit until nobody is left waiting.
        while admit
            && self
                .room
                .admit(concert, common::clock::Clock::system().now())
                .await?
                .admitted
                > 0
        {}
        Ok(())
    }
}
