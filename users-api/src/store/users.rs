//! The `users` table.

use common::auth::Role;
use sea_orm::{ConnectionTrait, DbErr, FromQueryResult, Statement};

#[derive(Debug, Clone, FromQueryResult)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub role: String,
}

impl UserRow {
    /// The `role` column read back through the one mapping, `Role::as_str`.
    pub fn role(&self) -> Role {
        if self.role == Role::Admin.as_str() {
            Role::Admin
        } else {
            Role::User
        }
    }
}

/// Inserts a new user; `None` if the username is taken. The unique index decides, so two
/// concurrent sign-ups with one name cannot both succeed.
pub async fn insert<C: ConnectionTrait>(
    db: &C,
    username: &str,
    password_hash: &str,
    role: Role,
) -> Result<Option<UserRow>, DbErr> {
    UserRow::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        "INSERT INTO users (username, password_hash, role) VALUES ($1, $2, $3) \
         ON CONFLICT (username) DO NOTHING \
         RETURNING id, username, password_hash, role",
        [username.into(), password_hash.into(), role.as_str().into()],
    ))
    .one(db)
    .await
}

/// Creates the admin or resets its password and role (`users-api create-admin`).
pub async fn upsert_admin<C: ConnectionTrait>(
    db: &C,
    username: &str,
    password_hash: &str,
) -> Result<UserRow, DbErr> {
    UserRow::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        "INSERT INTO users (username, password_hash, role) VALUES ($1, $2, $3) \
         ON CONFLICT (username) DO UPDATE SET password_hash = EXCLUDED.password_hash, role = EXCLUDED.role \
         RETURNING id, username, password_hash, role",
        [
            username.into(),
            password_hash.into(),
            Role::Admin.as_str().into(),
        ],
    ))
    .one(db)
    .await?
    .ok_or_else(|| DbErr::RecordNotInserted)
}

pub async fn find_by_username<C: ConnectionTrait>(
    db: &C,
    username: &str,
) -> Result<Option<UserRow>, DbErr> {
    UserRow::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        "SELECT id, username, password_hash, role FROM users WHERE username = $1",
        [username.into()],
    ))
    .one(db)
    .await
}
