//! The statuses of reservations and seats, and their one mapping to the text the database
//! stores (DESIGN §4). JSON uses the same words (serde's upper-snake names, checked below).

use std::fmt;

use sea_orm::{ColIdx, DbErr, QueryResult, TryGetError, TryGetable};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where a reservation is in its life (DESIGN §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReservationStatus {
    Held,
    Confirmed,
    Expired,
    Cancelled,
    Rejected,
}

impl ReservationStatus {
    pub const ALL: [Self; 5] = [
        Self::Held,
        Self::Confirmed,
        Self::Expired,
        Self::Cancelled,
        Self::Rejected,
    ];

    /// The text in `reservations.status`.
    pub const fn as_sql(self) -> &'static str {
        match self {
            Self::Held => "HELD",
            Self::Confirmed => "CONFIRMED",
            Self::Expired => "EXPIRED",
            Self::Cancelled => "CANCELLED",
            Self::Rejected => "REJECTED",
        }
    }
}

/// What a buyer sees of a seat (a seat of a dead hold reads AVAILABLE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SeatStatus {
    Available,
    Held,
    Sold,
}

impl SeatStatus {
    pub const ALL: [Self; 3] = [Self::Available, Self::Held, Self::Sold];

    /// The text in `seats.status`.
    pub const fn as_sql(self) -> &'static str {
        match self {
            Self::Available => "AVAILABLE",
            Self::Held => "HELD",
            Self::Sold => "SOLD",
        }
    }
}

/// Reading a status column, and printing a status, both go through `as_sql`.
macro_rules! sql_text {
    ($status:ident) => {
        impl $status {
            /// The status stored as `text`, if it is one.
            pub fn from_sql(text: &str) -> Option<Self> {
                Self::ALL.into_iter().find(|s| s.as_sql() == text)
            }
        }

        impl fmt::Display for $status {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_sql())
            }
        }

        impl TryGetable for $status {
            fn try_get_by<I: ColIdx>(res: &QueryResult, index: I) -> Result<Self, TryGetError> {
                let text = String::try_get_by(res, index)?;
                Self::from_sql(&text).ok_or_else(|| {
                    TryGetError::DbErr(DbErr::Type(format!(
                        concat!("not a ", stringify!($status), ": {:?}"),
                        text
                    )))
                })
            }
        }
    };
}

sql_text!(ReservationStatus);
sql_text!(SeatStatus);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_sql_use_the_same_words() {
        for s in ReservationStatus::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_sql());
            assert_eq!(ReservationStatus::from_sql(s.as_sql()), Some(s));
        }
        for s in SeatStatus::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_sql());
            assert_eq!(SeatStatus::from_sql(s.as_sql()), Some(s));
        }
        assert_eq!(ReservationStatus::from_sql("held"), None);
    }
}
