//! Sign-up, log-in, log-out and `me` (API.md, users-api).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use common::ApiError;
use common::auth::{AuthUser, Role, Session, SessionStore};
use common::http::Json;
use sea_orm::DatabaseConnection;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::account::{DECOY_HASH, Password, Username, verify_password};
use crate::store::users::{self, UserRow};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/users", web::post().to(sign_up))
        .route("/api/users/me", web::get().to(me))
        .route("/api/sessions", web::post().to(log_in))
        .route("/api/sessions", web::delete().to(log_out));
}

#[derive(Deserialize, ToSchema)]
pub struct Credentials {
    username: String,
    password: String,
}

#[derive(Serialize, ToSchema)]
pub struct UserView {
    id: i64,
    username: String,
    role: Role,
}

impl From<&UserRow> for UserView {
    fn from(u: &UserRow) -> Self {
        Self {
            id: u.id,
            username: u.username.clone(),
            role: u.role(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SessionView {
    token: String,
    expires_at: DateTime<Utc>,
    user: UserView,
}

/// Hashing costs tens of milliseconds of CPU: keep it off the async workers.
async fn off_worker<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    web::block(f).await.map_err(ApiError::internal)
}

#[utoipa::path(post, path = "/api/users", request_body = Credentials,
    responses((status = 201, body = UserView), (status = 400), (status = 409, description = "USERNAME_TAKEN")))]
pub async fn sign_up(
    db: web::Data<DatabaseConnection>,
    body: Json<Credentials>,
) -> Result<HttpResponse, ApiError> {
    let Credentials { username, password } = body.into_inner();
    let username = Username::parse(&username)?;
    let password = Password::parse(&password)?;
    let hash = off_worker(move || password.hash()).await??;
    let user = users::insert(db.get_ref(), username.as_str(), &hash, Role::User)
        .await?
        .ok_or_else(|| {
            ApiError::conflict(
                "USERNAME_TAKEN",
                format!("username `{}` is taken", username.as_str()),
            )
        })?;
    Ok(HttpResponse::Created().json(UserView::from(&user)))
}

#[utoipa::path(post, path = "/api/sessions", request_body = Credentials,
    responses((status = 201, body = SessionView), (status = 401, description = "BAD_CREDENTIALS")))]
pub async fn log_in(
    db: web::Data<DatabaseConnection>,
    sessions: web::Data<SessionStore>,
    body: Json<Credentials>,
) -> Result<HttpResponse, ApiError> {
    let Credentials { username, password } = body.into_inner();
    let bad = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "BAD_CREDENTIALS",
            "wrong username or password",
        )
    };
    // Oversized input cannot match a stored account; refuse it before spending CPU on it.
    if username.len() > 64 || password.len() > 512 {
        return Err(bad());
    }
    let user = users::find_by_username(db.get_ref(), &username).await?;
    let hash = user
        .as_ref()
        .map_or_else(|| DECOY_HASH.clone(), |u| u.password_hash.clone());
    let matches = off_worker(move || verify_password(&password, &hash)).await?;
    let user = user.filter(|_| matches).ok_or_else(bad)?;
    let session = Session {
        user_id: user.id,
        username: user.username.clone(),
        role: user.role(),
    };
    let (token, expires_at) = sessions.create(&session).await?;
    Ok(HttpResponse::Created().json(SessionView {
        token,
        expires_at,
        user: UserView::from(&user),
    }))
}

#[utoipa::path(delete, path = "/api/sessions", responses((status = 204), (status = 401)))]
pub async fn log_out(
    user: AuthUser,
    sessions: web::Data<SessionStore>,
) -> Result<HttpResponse, ApiError> {
    sessions.delete(&user.token).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/api/users/me", responses((status = 200, body = UserView), (status = 401)))]
pub async fn me(user: AuthUser) -> HttpResponse {
    HttpResponse::Ok().json(UserView {
        id: user.id,
        username: user.username,
        role: user.role,
    })
}
