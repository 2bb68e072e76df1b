//! Catalogue rules: what an admin may create, which concert a request names, and the opaque
//! cursors of the public lists.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use common::ApiError;
use common::error::ErrorCode;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, TransactionTrait};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::{Catalogued, ConcertCode};
use crate::store::audit::{self, AuditEntry};
use crate::store::catalogue::{self, Concert, NewSchedule, Schedule};

#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("concert {0} does not exist")]
    ConcertNotFound(i64),
    #[error(transparent)]
    Store(#[from] DbErr),
}

impl CatalogueError {
    fn catalogued(&self) -> Catalogued {
        match self {
            Self::ConcertNotFound(_) => ConcertCode::ConcertNotFound.into(),
            Self::Store(e) => common::error::db_code(e).into(),
        }
    }
}

impl ErrorCode for CatalogueError {
    fn status(&self) -> actix_web::http::StatusCode {
        self.catalogued().status()
    }
    fn code(&self) -> &'static str {
        self.catalogued().code()
    }
}

/// Concert `id`, which must exist.
pub async fn concert<C: ConnectionTrait>(db: &C, id: i64) -> Result<Concert, CatalogueError> {
    catalogue::find_concert(db, id)
        .await?
        .ok_or(CatalogueError::ConcertNotFound(id))
}

/// Who makes an admin change (the session's user).
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub id: i64,
    pub username: &'a str,
}

fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// Creates a concert; the change is audited in the same transaction.
pub async fn create_concert(
    db: &DatabaseConnection,
    actor: Actor<'_>,
    new: &NewConcert,
) -> Result<Concert, CatalogueError> {
    let txn = db.begin().await?;
    let created =
        catalogue::insert_concert(&txn, &new.title, &new.performer, new.max_tickets_per_user)
            .await?;
    let entry = AuditEntry {
        actor_id: actor.id,
        actor_username: actor.username,
        action: "concert.create",
        target: format!("concert:{}", created.id),
        before: None,
        after: Some(json(&created)),
    };
    audit::record(&txn, &entry).await?;
    txn.commit().await?;
    audit::log(&entry);
    Ok(created)
}

/// Adds a schedule, with its seats, to an existing concert; the change is audited in the
/// same transaction.
pub async fn add_schedule(
    db: &DatabaseConnection,
    actor: Actor<'_>,
    new: &NewSchedule,
) -> Result<Schedule, CatalogueError> {
    let txn = db.begin().await?;
    concert(&txn, new.concert_id).await?;
    let schedule = catalogue::insert_schedule(&txn, new).await?;
    let entry = AuditEntry {
        actor_id: actor.id,
        actor_username: actor.username,
        action: "schedule.create",
        target: format!("schedule:{}", schedule.id),
        before: None,
        after: Some(json(&schedule)),
    };
    audit::record(&txn, &entry).await?;
    txn.commit().await?;
    audit::log(&entry);
    Ok(schedule)
}

/// Changes concert `id`'s settings; the change is audited (before → after) in the same
/// transaction. Holds already made are never touched: a lower limit only refuses new holds.
pub async fn update_concert(
    db: &DatabaseConnection,
    actor: Actor<'_>,
    id: i64,
    change: &ConcertChange,
) -> Result<Concert, CatalogueError> {
    let txn = db.begin().await?;
    let before = catalogue::lock_concert(&txn, id)
        .await?
        .ok_or(CatalogueError::ConcertNotFound(id))?;
    let after = catalogue::set_max_tickets_per_user(&txn, id, change.max_tickets_per_user)
        .await?
        .ok_or(CatalogueError::ConcertNotFound(id))?;
    let entry = AuditEntry {
        actor_id: actor.id,
        actor_username: actor.username,
        action: "concert.update",
        target: format!("concert:{id}"),
        before: Some(json(&before)),
        after: Some(json(&after)),
    };
    audit::record(&txn, &entry).await?;
    txn.commit().await?;
    audit::log(&entry);
    Ok(after)
}

/// The per-buyer limit when a new concert does not say.
pub const DEFAULT_MAX_TICKETS_PER_USER: i32 = 4;

fn max_tickets(v: i64) -> Result<i32, ApiError> {
    i32::try_from(v)
        .ok()
        .filter(|n| (1..=20).contains(n))
        .ok_or_else(|| ApiError::invalid_field("max_tickets_per_user", "must be between 1 and 20"))
}

/// A concert an admin may create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewConcert {
    pub title: String,
    pub performer: String,
    pub max_tickets_per_user: i32,
}

/// `PATCH /api/admin/concerts/{id}`: the settings an admin may change.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ConcertChangeRequest {
    /// Most seats one buyer may hold or own for the concert (HELD + CONFIRMED, over all its
    /// schedules), 1 to 20. Lowering it below what a buyer has refuses that buyer's further
    /// holds and changes none already made.
    #[schema(minimum = 1, maximum = 20)]
    pub max_tickets_per_user: i64,
}

/// A valid [`ConcertChangeRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConcertChange {
    pub max_tickets_per_user: i32,
}

impl ConcertChangeRequest {
    pub fn validate(self) -> Result<ConcertChange, ApiError> {
        Ok(ConcertChange {
            max_tickets_per_user: max_tickets(self.max_tickets_per_user)?,
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewConcertRequest {
    /// 1 to 200 characters once trimmed.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"
    )]
    pub title: String,
    /// 1 to 200 characters once trimmed.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"
    )]
    pub performer: String,
    /// Most seats one buyer may hold or own for the concert, 1 to 20 (default 4).
    #[schema(minimum = 1, maximum = 20, default = 4)]
    pub max_tickets_per_user: Option<i64>,
}

impl NewConcertRequest {
    pub fn validate(self) -> Result<NewConcert, ApiError> {
        let text = |field: &str, v: String| {
            let v = v.trim().to_owned();
            if v.is_empty() || v.chars().count() > 200 {
                Err(ApiError::invalid_field(
                    field,
                    "must be 1 to 200 characters",
                ))
            } else {
                Ok(v)
            }
        };
        Ok(NewConcert {
            title: text("title", self.title)?,
            performer: text("performer", self.performer)?,
            max_tickets_per_user: match self.max_tickets_per_user {
                None => DEFAULT_MAX_TICKETS_PER_USER,
                Some(v) => max_tickets(v)?,
            },
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewScheduleRequest {
    pub starts_at: DateTime<Utc>,
    /// Not after `starts_at`.
    pub booking_opens_at: DateTime<Utc>,
    /// Seats 1 to `seat_count` are created.
    #[schema(minimum = 1, maximum = 1000)]
    pub seat_count: i64,
    /// Each seat's price (KRW).
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub price: i64,
}

impl NewScheduleRequest {
    pub fn validate(self, concert_id: i64) -> Result<NewSchedule, ApiError> {
        let seat_count = i32::try_from(self.seat_count)
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::invalid_field("seat_count", "must be between 1 and 1000"))?;
        if !(1..=10_000_000).contains(&self.price) {
            return Err(ApiError::invalid_field(
                "price",
                "must be between 1 and 10,000,000",
            ));
        }
        if self.booking_opens_at > self.starts_at {
            return Err(ApiError::invalid_field(
                "booking_opens_at",
                "must not be after starts_at",
            ));
        }
        Ok(NewSchedule {
            concert_id,
            starts_at: self.starts_at,
            booking_opens_at: self.booking_opens_at,
            seat_count,
            price: self.price,
        })
    }
}

/// `?limit&cursor` of a list.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    pub available: Option<bool>,
}

pub const DEFAULT_LIMIT: u64 = 20;
pub const MAX_LIMIT: u64 = 100;

impl PageQuery {
    /// The cursor, if one was given: an empty `cursor=` asks for the first page.
    pub fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref().filter(|c| !c.is_empty())
    }

    pub fn limit(&self) -> Result<u64, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT as i64).contains(&n) => Ok(n as u64),
            Some(_) => Err(ApiError::invalid_field(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            )),
        }
    }
}

fn bad_cursor() -> ApiError {
    ApiError::invalid_field("cursor", "is not a cursor this list returned")
}

fn decode(cursor: &str, kind: char) -> Result<Vec<i64>, ApiError> {
    let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad_cursor())?;
    let text = String::from_utf8(raw).map_err(|_| bad_cursor())?;
    let mut parts = text.split(':');
    if parts.next() != Some(&kind.to_string()[..]) {
        return Err(bad_cursor());
    }
    parts.map(|p| p.parse().map_err(|_| bad_cursor())).collect()
}

/// Cursor after a concert id.
pub fn concert_cursor(id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("c:{id}"))
}

pub fn parse_concert_cursor(cursor: &str) -> Result<i64, ApiError> {
    match decode(cursor, 'c')?.as_slice() {
        [id] => Ok(*id),
        _ => Err(bad_cursor()),
    }
}

/// Cursor after a schedule `(starts_at, id)`.
pub fn schedule_cursor(starts_at: DateTime<Utc>, id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("s:{}:{id}", starts_at.timestamp_micros()))
}

pub fn parse_schedule_cursor(cursor: &str) -> Result<(DateTime<Utc>, i64), ApiError> {
    match decode(cursor, 's')?.as_slice() {
        [micros, id] => Ok((
            DateTime::from_timestamp_micros(*micros).ok_or_else(bad_cursor)?,
            *id,
        )),
        _ => Err(bad_cursor()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any instant will do: these rules only compare times.
    fn instant() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        assert_eq!(parse_concert_cursor(&concert_cursor(42)).unwrap(), 42);
        let at = DateTime::from_timestamp_micros(1_800_000_000_123_456).unwrap();
        assert_eq!(
            parse_schedule_cursor(&schedule_cursor(at, 7)).unwrap(),
            (at, 7)
        );
        for bad in ["", "!!", "eA", &schedule_cursor(at, 7)] {
            assert!(parse_concert_cursor(bad).is_err(), "{bad}");
        }
        assert!(parse_schedule_cursor(&concert_cursor(1)).is_err());
    }

    #[test]
    fn schedule_requests_are_checked() {
        let now = instant();
        let r = |seats: i64, price: i64, opens_after: bool| NewScheduleRequest {
            starts_at: now,
            booking_opens_at: if opens_after {
                now + chrono::Duration::seconds(1)
            } else {
                now
            },
            seat_count: seats,
            price,
        };
        assert!(r(50, 1000, false).validate(1).is_ok());
        for (req, field) in [
            (r(0, 1000, false), "seat_count"),
            (r(1001, 1000, false), "seat_count"),
            (r(50, 0, false), "price"),
            (r(50, 10_000_001, false), "price"),
            (r(50, 1000, true), "booking_opens_at"),
        ] {
            assert!(req.validate(1).unwrap_err().detail().contains(field));
        }
    }

    #[test]
    fn the_per_buyer_limit_defaults_to_4_and_is_1_to_20() {
        let c = |limit| NewConcertRequest {
            title: "T".into(),
            performer: "P".into(),
            max_tickets_per_user: limit,
        };
        assert_eq!(c(None).validate().unwrap().max_tickets_per_user, 4);
        assert_eq!(c(Some(20)).validate().unwrap().max_tickets_per_user, 20);
        for bad in [0, 21, -1, i64::MAX] {
            let err = c(Some(bad)).validate().unwrap_err();
            assert!(err.detail().contains("max_tickets_per_user"), "{bad}");
        }
        let p = |limit| ConcertChangeRequest {
            max_tickets_per_user: limit,
        };
        assert_eq!(p(1).validate().unwrap().max_tickets_per_user, 1);
        for bad in [0, 21] {
            assert!(
                p(bad)
                    .validate()
                    .unwrap_err()
                    .detail()
                    .contains("max_tickets_per_user")
            );
        }
    }

    #[test]
    fn limits_default_and_are_bounded() {
        let q = |limit| PageQuery {
            limit,
            cursor: None,
            available: None,
        };
        assert_eq!(q(None).limit().unwrap(), 20);
        assert_eq!(q(Some(100)).limit().unwrap(), 100);
        assert!(q(Some(0)).limit().is_err());
        assert!(q(Some(101)).limit().is_err());
    }
}
