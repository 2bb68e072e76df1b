//! Sign-up, log-in, log-out and `me` (API.md, users-api).

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use common::ApiError;
use common::auth::{AuthUser, Role};
use common::http::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::account::{self, LogIn, LoggedIn, User};
use crate::domain::throttle::client_address;
use crate::routes::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/users", web::post().to(sign_up))
        .route("/api/users/me", web::get().to(me))
        .route("/api/sessions", web::post().to(log_in))
        .route("/api/sessions", web::delete().to(log_out));
}

/// For signing up the constraints are checked (400 naming the field); logging in with
/// anything else is 401 `BAD_CREDENTIALS`, since no such account can exist.
#[derive(Deserialize, ToSchema)]
pub struct Credentials {
    /// 3 to 32 of `[a-z0-9_]`.
    #[schema(min_length = 3, max_length = 32, pattern = "^[a-z0-9_]{3,32}$")]
    username: String,
    /// 8 to 128 characters (Unicode scalar values), none of them NUL. On sign-up also: not
    /// only whitespace, not the username, not a common password (400 `WEAK_PASSWORD`).
    #[schema(min_length = 8, max_length = 128, pattern = "^[^\\u0000]*$")]
    password: String,
}

/// `User` of API.md.
#[derive(Serialize, ToSchema)]
#[schema(as = User)]
pub struct UserView {
    id: i64,
    #[schema(pattern = "^[a-z0-9_]{3,32}$")]
    username: String,
    role: Role,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            username: u.username,
            role: u.role,
        }
    }
}

#[derive(Serialize, ToSchema)]
#[schema(as = Session)]
pub struct SessionView {
    /// The bearer token for `Authorization: Bearer`.
    token: String,
    /// When the session lapses unless used; each use extends it (never past
    /// `absolute_expires_at`).
    expires_at: DateTime<Utc>,
    /// When the session ends however much it is used (`SESSION_MAX_LIFETIME_SECS` after
    /// log-in).
    absolute_expires_at: DateTime<Utc>,
    user: UserView,
}

impl From<LoggedIn> for SessionView {
    fn from(s: LoggedIn) -> Self {
        Self {
            token: s.token,
            expires_at: s.expires_at,
            absolute_expires_at: s.absolute_expires_at,
            user: s.user.into(),
        }
    }
}

#[utoipa::path(post, path = "/api/users", request_body = Credentials,
    responses(
        (status = 201, description = "the new account, with role USER", body = UserView),
        (status = 400, description = "`INVALID_REQUEST`: a malformed body, or a username or password outside its constraints; the detail names the field. `WEAK_PASSWORD`: the password is only whitespace, the username, or a common password (a list entry, keyboard pattern, sequence or repetition); the detail names `password` and says which"),
        (status = 409, description = "`USERNAME_TAKEN`: someone already has this username"),
        (status = 429, description = "`RATE_LIMITED` (the gateway): too many sign-ups from one address"),
        (status = 503, description = "`LOGIN_BUSY`: every password-hashing slot is busy (a crowd is signing up or logging in); retry after `Retry-After`",
            headers(("Retry-After" = u64, description = "seconds"))),
    ))]
pub async fn sign_up(
    state: web::Data<AppState>,
    body: Json<Credentials>,
) -> Result<HttpResponse, ApiError> {
    let Credentials { username, password } = body.into_inner();
    let user = account::sign_up(&state.db, &state.hashing, &username, &password).await?;
    Ok(HttpResponse::Created().json(UserView::from(user)))
}

#[utoipa::path(post, path = "/api/sessions", request_body = Credentials,
    responses(
        (status = 201, description = "a new session", body = SessionView),
        (status = 400, description = "`INVALID_REQUEST`: a malformed body (a missing field, a wrong type, a NUL character)"),
        (status = 401, description = "`BAD_CREDENTIALS`: unknown username or wrong password (which is not said)"),
        (status = 429, description = "`LOGIN_THROTTLED`: too many failed log-ins for this username from this address (after `LOGIN_FREE_FAILURES`, each attempt waits 1 s, 2 s, 4 s … since the last failure), or for this username from anywhere while this address never logged in to it; refused before the password is checked. `RATE_LIMITED` (the gateway): too many log-ins from one address"),
        (status = 503, description = "`LOGIN_BUSY`: every password-hashing slot is busy (a log-in crowd); retry after `Retry-After`",
            headers(("Retry-After" = u64, description = "seconds"))),
    ))]
pub async fn log_in(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Json<Credentials>,
) -> Result<HttpResponse, ApiError> {
    let Credentials { username, password } = body.into_inner();
    let address = client_address(&req);
    let ctx = LogIn {
        gate: &state.hashing,
        sessions: &state.sessions,
        throttle: &state.throttle,
        address: &address,
    };
    let session = account::log_in(&state.db, ctx, &username, &password).await?;
    Ok(HttpResponse::Created().json(SessionView::from(session)))
}

/// `?all=true|false` of log-out.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogOutQuery {
    /// `true`: end every session of the caller (every device), not just this one. Default
    /// `false`.
    #[param(value_type = Option<bool>)]
    all: Option<String>,
}

impl LogOutQuery {
    fn all(&self) -> Result<bool, ApiError> {
        match self.all.as_deref() {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(_) => Err(ApiError::invalid_field("all", "must be true or false")),
        }
    }
}

#[utoipa::path(delete, path = "/api/sessions", security(("bearer" = [])), params(LogOutQuery),
    responses(
        (status = 204, description = "logged out: the token (with `all=true`: every session of the caller) stops working in every service at once"),
        (status = 400, description = "`INVALID_REQUEST`: `all` is neither `true` nor `false`; the detail names `all`"),
        (status = 401, description = "`UNAUTHENTICATED`: no valid session"),
        (status = 429, description = "`RATE_LIMITED` (the gateway): too many requests from one address"),
    ))]
pub async fn log_out(
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<LogOutQuery>,
) -> Result<HttpResponse, ApiError> {
    if query.all()? {
        state.sessions.end_all(user.id).await?;
    } else {
        state.sessions.end(user.id, &user.token).await?;
    }
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/api/users/me", security(("bearer" = [])),
    responses(
        (status = 200, description = "the session's account", body = UserView),
        (status = 401, description = "`UNAUTHENTICATED`: no valid session"),
    ))]
pub async fn me(user: AuthUser) -> HttpResponse {
    HttpResponse::Ok().json(UserView {
        id: user.id,
        username: user.username,
        role: user.role,
    })
}
