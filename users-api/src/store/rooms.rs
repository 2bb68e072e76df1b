//! The `queue_rooms` table: each waiting room's organiser settings (DESIGN §4, §10). It is
//! the source of truth; Redis's `queue:{c<id>}:settings` is the working copy, restored from
//! here when Redis has lost it.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbErr, FromQueryResult, Statement};

/// A room's persisted settings. `None` capacities are the env defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, FromQueryResult)]
pub struct RoomRow {
    pub paused: bool,
    pub max_active: Option<i64>,
    pub admit_per_tick: Option<i64>,
    pub sale_opens_at: Option<DateTime<Utc>>,
    /// The lottery's secret seed and its published SHA-256, lowercase hex.
    pub seed: Option<String>,
    pub commitment: Option<String>,
    /// Written by the draw (batch's admission), never by a PATCH.
    pub drawn_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str =
    "paused, max_active, admit_per_tick, sale_opens_at, seed, commitment, drawn_at";

/// The room's row, if it was ever configured.
pub async fn find<C: ConnectionTrait>(db: &C, concert_id: i64) -> Result<Option<RoomRow>, DbErr> {
    RoomRow::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        format!("SELECT {COLUMNS} FROM queue_rooms WHERE concert_id = $1"),
        [concert_id.into()],
    ))
    .one(db)
    .await
}

/// Locks the room's row for the rest of the transaction `txn`, so changes to one room are
/// serialised; returns it, or `None` if the room had no row (one with the defaults is then
/// inserted, and locked, in its place).
pub async fn lock<C: ConnectionTrait>(
    txn: &C,
    concert_id: i64,
    at: DateTime<Utc>,
) -> Result<Option<RoomRow>, DbErr> {
    // A concurrent insert makes ours do nothing, and then the select finds its row: a
    // second round is only needed if that insert was rolled back in between.
    for _ in 0..3 {
        let row = RoomRow::find_by_statement(Statement::from_sql_and_values(
            txn.get_database_backend(),
            format!("SELECT {COLUMNS} FROM queue_rooms WHERE concert_id = $1 FOR UPDATE"),
            [concert_id.into()],
        ))
        .one(txn)
        .await?;
        if row.is_some() {
            return Ok(row);
        }
        let inserted = txn
            .execute_raw(Statement::from_sql_and_values(
                txn.get_database_backend(),
                "INSERT INTO queue_rooms (concert_id, updated_at) VALUES ($1, $2) \
                 ON CONFLICT (concert_id) DO NOTHING",
                [concert_id.into(), at.into()],
            ))
            .await?;
        if inserted.rows_affected() == 1 {
            return Ok(None);
        }
    }
    Err(DbErr::Custom(format!(
        "queue_rooms row of concert {concert_id} could not be locked"
    )))
}

/// Writes the organiser's settings (all but `drawn_at`) of a row locked by [`lock`].
pub async fn save<C: ConnectionTrait>(
    txn: &C,
    concert_id: i64,
    row: &RoomRow,
    at: DateTime<Utc>,
) -> Result<(), DbErr> {
    txn.execute_raw(Statement::from_sql_and_values(
        txn.get_database_backend(),
        "UPDATE queue_rooms SET paused = $2, max_active = $3, admit_per_tick = $4, \
         sale_opens_at = $5, seed = $6, commitment = $7, updated_at = $8 \
         WHERE concert_id = $1",
        [
            concert_id.into(),
            row.paused.into(),
            row.max_active.into(),
            row.admit_per_tick.into(),
            row.sale_opens_at.into(),
            row.seed.clone().into(),
            row.commitment.clone().into(),
            at.into(),
        ],
    ))
    .await?;
    Ok(())
}

/// Records the draw (once: a second call keeps the first time) and returns the time
/// recorded; `None` if the room has no row. The seed and commitment are kept if the row
/// has them already.
pub async fn mark_drawn<C: ConnectionTrait>(
    db: &C,
    concert_id: i64,
    at: DateTime<Utc>,
    seed: &str,
    commitment: &str,
) -> Result<Option<DateTime<Utc>>, DbErr> {
    #[derive(FromQueryResult)]
    struct Drawn {
        drawn_at: DateTime<Utc>,
    }
    Ok(Drawn::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        "UPDATE queue_rooms SET drawn_at = COALESCE(drawn_at, $2), \
         seed = COALESCE(seed, $3), commitment = COALESCE(commitment, $4) \
         WHERE concert_id = $1 RETURNING drawn_at",
        [concert_id.into(), at.into(), seed.into(), commitment.into()],
    ))
    .one(db)
    .await?
    .map(|d| d.drawn_at))
}

/// Rooms whose lottery is committed but not drawn: they need admission ticks even while
/// nobody is in line (to draw and publish the seed).
pub async fn undrawn<C: ConnectionTrait>(db: &C) -> Result<Vec<i64>, DbErr> {
    #[derive(FromQueryResult)]
    struct Id {
        concert_id: i64,
    }
    Ok(Id::find_by_statement(Statement::from_string(
        db.get_database_backend(),
        "SELECT concert_id FROM queue_rooms \
         WHERE commitment IS NOT NULL AND drawn_at IS NULL ORDER BY concert_id",
    ))
    .all(db)
    .await?
    .into_iter()
    .map(|r| r.concert_id)
    .collect())
}
