//! Accounts: what a valid username and password are, and password hashing (argon2id).

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use common::ApiError;
use rand::RngCore;

/// 3..=32 characters of `[a-z0-9_]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let len = raw.chars().count();
        if !(3..=32).contains(&len) {
            return Err(ApiError::invalid_field(
                "username",
                "must be 3 to 32 characters",
            ));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(ApiError::invalid_field(
                "username",
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
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let len = raw.chars().count();
        if !(8..=128).contains(&len) {
            return Err(ApiError::invalid_field(
                "password",
                "must be 8 to 128 characters",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// An argon2id PHC string with a random salt. CPU-heavy: call off the async workers.
    pub fn hash(&self) -> Result<String, ApiError> {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        let salt =
            SaltString::encode_b64(&bytes).map_err(|e| ApiError::internal(format!("salt: {e}")))?;
        Argon2::default()
            .hash_password(self.0.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| ApiError::internal(format!("password hashing: {e}")))
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

/// Creates the admin account or resets its password (operator command).
pub async fn create_admin(
    config: &crate::Config,
    username: &str,
    password: &str,
) -> Result<crate::store::users::UserRow, String> {
    let username = Username::parse(username)
        .map_err(|e| e.detail().replace("field `username`", "--username"))?;
    let password = Password::parse(password)
        .map_err(|e| e.detail().replace("field `password`", "ADMIN_PASSWORD"))?;
    let hash = password.hash().map_err(|e| e.to_string())?;
    let db = common::startup::open_database::<crate::store::migration::Migrator>(
        crate::startup::SERVICE,
        &config.database,
    )
    .await
    .map_err(|e| e.to_string())?;
    crate::store::users::upsert_admin(&db, username.as_str(), &hash)
        .await
        .map_err(|e| e.to_string())
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
            assert!(err.detail().contains("username"), "{bad}: {}", err.detail());
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
    fn hashes_are_argon2id_salted_and_verify() {
        let p = Password::parse("correct horse").unwrap();
        let (a, b) = (p.hash().unwrap(), p.hash().unwrap());
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "salted");
        assert!(verify_password("correct horse", &a));
        assert!(!verify_password("wrong horse", &a));
        assert!(!verify_password("x", "not a hash"));
    }
}
