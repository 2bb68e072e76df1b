//! Accounts: what a valid username and password are, password hashing (argon2id), and
//! signing up, logging in and the operator's admin account (DESIGN §2 step 1).

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use chrono::{DateTime, Utc};
use common::ErrorCode;
use common::auth::{Role, Session, SessionStore};
use common::error::Code;
use rand::RngCore;
use sea_orm::{ConnectionTrait, DbErr};

use crate::domain::throttle::LoginThrottle;
use crate::error::{Catalogued, UsersCode};
use crate::store::users::{self, UserRow};

/// A username or password outside the contract's rules (400, naming the field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {reason}")]
pub struct InvalidCredential {
    pub field: &'static str,
    pub reason: &'static str,
}

/// A password of the right length that is too easy to guess (400 `WEAK_PASSWORD`); the
/// reason is written for the person choosing it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `password`: {0}")]
pub struct WeakPassword(pub &'static str);

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error(transparent)]
    Invalid(#[from] InvalidCredential),
    #[error(transparent)]
    Weak(#[from] WeakPassword),
    #[error("username `{0}` is taken")]
    UsernameTaken(String),
    #[error("wrong username or password")]
    BadCredentials,
    #[error("password hashing: {0}")]
    Hashing(String),
    #[error("database: {0}")]
    Database(#[from] DbErr),
    #[error("session store: {0}")]
    Sessions(#[from] redis::RedisError),
    /// Every password-hashing slot is busy: a crowd is logging in. Try again in a second.
    #[error("too many log-ins and sign-ups at once; try again in a second")]
    Busy,
    /// Too many failed log-ins for this username: wait `retry_after` seconds. Decided before
    /// the password is looked at.
    #[error(
        "too many failed log-ins for this username; try again in {retry_after} s (Retry-After)"
    )]
    Throttled { retry_after: u64 },
}

impl AccountError {
    fn catalogued(&self) -> Catalogued {
        match self {
            Self::Invalid(_) => Code::InvalidRequest.into(),
            Self::Weak(_) => UsersCode::WeakPassword.into(),
            Self::Throttled { .. } => UsersCode::Throttled.into(),
            Self::UsernameTaken(_) => UsersCode::UsernameTaken.into(),
            Self::BadCredentials => UsersCode::BadCredentials.into(),
            Self::Hashing(_) => Code::Internal.into(),
            Self::Database(e) => common::error::db_code(e).into(),
            Self::Sessions(_) => Code::DependencyUnavailable.into(),
            Self::Busy => UsersCode::Busy.into(),
        }
    }
}

impl ErrorCode for AccountError {
    fn status(&self) -> actix_web::http::StatusCode {
        self.catalogued().status()
    }
    fn code(&self) -> &'static str {
        self.catalogued().code()
    }
    /// `Busy` is written for the client: it says what to do.
    fn detail_is_public(&self) -> bool {
        matches!(self, Self::Busy) || !self.status().is_server_error()
    }
    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::Sessions(e) => e.retry_after(),
            Self::Busy => Some(1),
            Self::Throttled { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}

/// 3..=32 characters of `[a-z0-9_]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Result<Self, InvalidCredential> {
        let invalid = |reason| InvalidCredential {
            field: "username",
            reason,
        };
        let len = raw.chars().count();
        if !(3..=32).contains(&len) {
            return Err(invalid("must be 3 to 32 characters"));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(invalid(
                "may contain only lowercase letters, digits and underscores",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// 8..=128 characters. Never printed.
pub struct Password(String);

impl Password {
    pub fn parse(raw: &str) -> Result<Self, InvalidCredential> {
        let len = raw.chars().count();
        if !(8..=128).contains(&len) {
            return Err(InvalidCredential {
                field: "password",
                reason: "must be 8 to 128 characters",
            });
        }
        Ok(Self(raw.to_owned()))
    }

    /// The password policy beyond length (NIST SP 800-63B: no composition rules, but no
    /// password an attacker tries first): not only whitespace, not the username (ignoring
    /// case and surrounding spaces), and not a common password. "Common" is what zxcvbn's
    /// embedded lists say: the whole password is one entry of its common-passwords list (in
    /// any case, reversed or with l33t substitutions, e.g. `P@ssw0rd`), or is nothing but a
    /// keyboard walk (`qwertyuiop`), a sequence (`12345678`, `abcdefgh`) or a short
    /// repetition (`aaaaaaaa`, `abcabcabc`).
    pub fn check_policy(&self, username: &str) -> Result<(), WeakPassword> {
        if self.0.chars().all(char::is_whitespace) {
            return Err(WeakPassword("must not be only whitespace"));
        }
        if self.0.trim().to_lowercase() == username.trim().to_lowercase() {
            return Err(WeakPassword("must not be the same as the username"));
        }
        if is_common(&self.0) {
            return Err(WeakPassword(
                "is one of the most commonly used passwords (or a keyboard pattern, sequence or repetition); choose one that is harder to guess",
            ));
        }
        Ok(())
    }

    /// An argon2id PHC string with a random salt. CPU-heavy: call off the async workers.
    pub fn hash(&self) -> Result<String, AccountError> {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        let salt =
            SaltString::encode_b64(&bytes).map_err(|e| AccountError::Hashing(e.to_string()))?;
        Argon2::default()
            .hash_password(self.0.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| AccountError::Hashing(e.to_string()))
    }
}

/// Whether zxcvbn explains `password` as one single guessable thing (see
/// [`Password::check_policy`]).
fn is_common(password: &str) -> bool {
    use zxcvbn::matching::patterns::MatchPattern;
    let entropy = zxcvbn::zxcvbn(password, &[]);
    let [only] = entropy.sequence() else {
        return false;
    };
    match &only.pattern {
        // zxcvbn does not export the type of `dictionary_name` (its module is private), so
        // the list is told by name; the tests below fail if that name ever changes.
        MatchPattern::Dictionary(d) => format!("{:?}", d.dictionary_name) == "Passwords",
        MatchPattern::Spatial(_) | MatchPattern::Sequence(_) => true,
        MatchPattern::Repeat(r) => r.base_token.chars().count() <= 3,
        _ => false,
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

/// Checks `password` against a stored PHC hash. CPU-heavy: call off the async workers.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A real hash of nothing in particular: verified against when the username is unknown, so
/// a login takes as long whether or not the account exists.
pub static DECOY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    Password("decoy-password-for-timing".into())
        .hash()
        .expect("hashing a constant works")
});

/// Hashing costs tens of milliseconds of CPU: keep it off the async workers.
/// Makes every allocation glibc's malloc is given its own mapping, returned to the system
/// when freed (it is given only blocks of 1 MiB or more: `common::alloc`; the threshold set
/// here is 128 KiB). glibc otherwise raises that threshold after the first large free, so
/// each argon2 hash's 19 MiB then comes from the heap and stays resident: a 500-log-in storm
/// grew users-api to 1.1–1.5 GiB with only 4 hashes at a time, and to 112 MiB with this.
/// Call once at start, before the first hash.
pub fn return_hash_memory_at_once() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a setting of the allocator, which takes its own locks.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// How many argon2 hashes run at once in this process. Each takes ~19 MiB for its duration:
/// unbounded, a crowd logging in at once multiplies that until the process is killed for
/// memory. A request that finds every slot taken waits up to `wait`, then is answered 503
/// with `Retry-After` (nothing was spent on it). Clones share the slots.
#[derive(Clone, Debug)]
pub struct HashGate {
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    wait: std::time::Duration,
}

impl HashGate {
    pub fn new(slots: usize, wait: std::time::Duration) -> Self {
        Self {
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(slots)),
            wait,
        }
    }

    /// Takes every free slot and keeps them until the guard drops (tests: a full gate).
    pub fn fill(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let free = self.slots.available_permits() as u32;
        self.slots.clone().try_acquire_many_owned(free).ok()
    }

    /// Runs `f` (a hash or a verification) on a blocking thread once a slot is free.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AccountError> {
        let permit = tokio::time::timeout(self.wait, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| AccountError::Busy)?
            .map_err(|_| AccountError::Busy)?;
        let out = tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| AccountError::Hashing(e.to_string()));
        drop(permit);
        out
    }
}

/// An account as the rest of the service sees it (no password hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub role: Role,
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        Self {
            role: row.role(),
            id: row.id,
            username: row.username,
        }
    }
}

/// A session just opened: its bearer token, when it lapses unless used, when it ends
/// however much it is used, and whose it is.
#[derive(Debug, Clone)]
pub struct LoggedIn {
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub absolute_expires_at: DateTime<Utc>,
    pub user: User,
}

/// Creates a `USER` account. Two concurrent sign-ups with one name: the unique index lets
/// exactly one through, the other is `UsernameTaken`.
pub async fn sign_up<C: ConnectionTrait>(
    db: &C,
    gate: &HashGate,
    username: &str,
    password: &str,
) -> Result<User, AccountError> {
    let username = Username::parse(username)?;
    let password = Password::parse(password)?;
    // The policy's pattern matching takes up to ~15 ms of CPU on a long password: it runs
    // where hashing does, off the async workers and within the same bounded slots.
    let name = username.as_str().to_owned();
    let hash = gate
        .run(move || {
            password.check_policy(&name)?;
            password.hash()
        })
        .await??;
    users::insert(db, username.as_str(), &hash, Role::User)
        .await?
        .map(User::from)
        .ok_or_else(|| AccountError::UsernameTaken(username.as_str().to_owned()))
}

/// What log-in works with besides the database.
pub struct LogIn<'a> {
    pub gate: &'a HashGate,
    pub sessions: &'a SessionStore,
    pub throttle: &'a LoginThrottle,
    /// The client's address ([`crate::domain::throttle::client_address`]).
    pub address: &'a str,
}

/// Asks the throttle first (a throttled attempt costs no hash and says nothing about the
/// password), checks the password (against a decoy hash for an unknown name, so both cost
/// the same), counts a failure or clears the backoff, and opens a session; its expiry is
/// stated by the store's clock.
pub async fn log_in<C: ConnectionTrait>(
    db: &C,
    ctx: LogIn<'_>,
    username: &str,
    password: &str,
) -> Result<LoggedIn, AccountError> {
    let LogIn {
        gate,
        sessions,
        throttle,
        address,
    } = ctx;
    // Oversized input cannot match a stored account; refuse it before spending CPU on it.
    if username.len() > 64 || password.len() > 512 {
        return Err(AccountError::BadCredentials);
    }
    if let Some(retry_after) = throttle.check(username, address).await? {
        return Err(AccountError::Throttled { retry_after });
    }
    let row = users::find_by_username(db, username).await?;
    let hash = row
        .as_ref()
        .map_or_else(|| DECOY_HASH.clone(), |u| u.password_hash.clone());
    let password = password.to_owned();
    let matches = gate.run(move || verify_password(&password, &hash)).await?;
    let Some(user) = row.filter(|_| matches).map(User::from) else {
        // The answer is 401 either way; a lost count only weakens the backoff, and Redis
        // just answered the check, so this is a blip, not a way around it.
        if let Err(e) = throttle.failed(username, address).await {
            tracing::warn!(error = %e, "could not count a failed log-in");
        }
        return Err(AccountError::BadCredentials);
    };
    let opened = sessions
        .open(&Session {
            user_id: user.id,
            username: user.username.clone(),
            role: user.role,
        })
        .await?;
    // The session is open: a failure to clear the backoff or remember the address must not
    // turn a good log-in into an error.
    if let Err(e) = throttle.succeeded(username, address).await {
        tracing::warn!(error = %e, "could not record a successful log-in's address");
    }
    Ok(LoggedIn {
        token: opened.token,
        expires_at: opened.expires_at,
        absolute_expires_at: opened.absolute_expires_at,
        user,
    })
}

/// Creates the admin account or resets its password and role (operator command), then ends
/// every session the admin had (a reset password must lock out whoever had the old one).
/// Takes parsed credentials, so the operator hears about a bad one before anything is opened.
pub async fn create_admin<C: ConnectionTrait>(
    db: &C,
    sessions: &SessionStore,
    username: &Username,
    password: &Password,
) -> Result<User, AccountError> {
    let hash = password.hash()?;
    let admin: User = users::upsert_admin(db, username.as_str(), &hash)
        .await?
        .into();
    sessions.end_all(admin.id).await?;
    Ok(admin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_the_contract() {
        for ok in ["abc", "a_b_9", &"x".repeat(32)] {
            assert!(Username::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["ab", "", "Abc", "a-b", "a b", "ünï", &"x".repeat(33)] {
            let err = Username::parse(bad).unwrap_err();
            assert_eq!(err.field, "username", "{bad}");
            assert!(err.to_string().starts_with("field `username`: "), "{err}");
        }
    }

    #[test]
    fn passwords_follow_the_contract_and_never_print() {
        assert!(Password::parse("1234567").is_err());
        assert!(Password::parse(&"p".repeat(129)).is_err());
        let p = Password::parse("correct horse").unwrap();
        assert_eq!(format!("{p:?}"), "Password(***)");
    }

    #[test]
    fn weak_passwords_are_refused_saying_why() {
        let weak = [
            ("password", "common"),
            ("PASSWORD", "common"),
            ("Password1", "common"),
            ("p@ssw0rd", "common"),
            ("drowssap", "common"),
            ("iloveyou", "common"),
            ("sunshine", "common"),
            ("football", "common"),
            ("baseball", "common"),
            ("trustno1", "common"),
            ("12345678", "common"),
            ("123456789", "common"),
            ("87654321", "common"),
            ("abcdefghij", "common"),
            ("qwertyuiop", "common"),
            ("1qaz2wsx3edc", "common"),
            ("aaaaaaaaaa", "common"),
            ("abcabcabcabc", "common"),
            ("        ", "whitespace"),
            ("\t \n \t \n ", "whitespace"),
            ("long_username", "username"),
            ("  Long_UserName ", "username"),
        ];
        for (raw, says) in weak {
            let err = Password::parse(raw)
                .unwrap()
                .check_policy("long_username")
                .unwrap_err();
            assert!(
                err.to_string().starts_with("field `password`: ") && err.0.contains(says),
                "{raw:?}: {err}"
            );
        }
    }

    /// Every password the repository itself uses (tests, fixtures, README, the local stack,
    /// benchmarks) passes, so none of them breaks when the policy is on.
    #[test]
    fn the_repositorys_own_passwords_pass() {
        let mut used = vec![
            "password-123".to_owned(),
            "password-456".to_owned(),
            "wrong-password".to_owned(),
            "first-password".to_owned(),
            "second-password".to_owned(),
            "admin-pass-local".to_owned(),
            "admin-pass-test".to_owned(),
            "loadtest-password".to_owned(),
            "storm-fan-passphrase".to_owned(),
            "fan-password".to_owned(),
            "journey-password".to_owned(),
            "contract-password".to_owned(),
            "alice-password".to_owned(),
            "fan-of-the-band-2026".to_owned(),
            "wrong-guess-123".to_owned(),
            "correct horse".to_owned(),
            "decoy-password-for-timing".to_owned(),
        ];
        used.extend((0..50).map(|i| format!("password-{i}")));
        for raw in &used {
            let p = Password::parse(raw).unwrap();
            assert_eq!(p.check_policy("some_user"), Ok(()), "{raw}");
        }
        assert_eq!(
            Password::parse("storm-fan-passphrase")
                .unwrap()
                .check_policy("storm_fan"),
            Ok(())
        );
    }

    #[test]
    fn hashes_are_argon2id_salted_and_verify() {
        let p = Password::parse("correct horse").unwrap();
        let (a, b) = (p.hash().unwrap(), p.hash().unwrap());
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "salted");
        assert!(verify_password("correct horse", &a));
        assert!(!verify_password("wrong horse", &a));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn errors_map_to_the_contracts_codes() {
        let cases: [(AccountError, Catalogued); 4] = [
            (
                Username::parse("A").unwrap_err().into(),
                Code::InvalidRequest.into(),
            ),
            (
                AccountError::UsernameTaken("ann".into()),
                UsersCode::UsernameTaken.into(),
            ),
            (
                AccountError::BadCredentials,
                UsersCode::BadCredentials.into(),
            ),
            (AccountError::Hashing("x".into()), Code::Internal.into()),
        ];
        for (err, expected) in cases {
            assert_eq!(
                (err.status(), err.code()),
                (expected.status(), expected.code()),
                "{err}"
            );
        }
    }
}
