//! The facts of every schedule this process has looked up. Schedules never change once
//! created (no endpoint edits them), so every hold and seat map after the first skips the
//! lookup.

use std::collections::HashMap;
use std::sync::RwLock;

use sea_orm::{DatabaseConnection, DbErr};

use crate::store::catalogue::{self, ScheduleFacts};

const MAX_CACHED_SCHEDULES: usize = 100_000;

pub struct KnownSchedules {
    db: DatabaseConnection,
    facts: RwLock<HashMap<i64, ScheduleFacts>>,
}

impl KnownSchedules {
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            db,
            facts: RwLock::new(HashMap::new()),
        }
    }

    /// The facts of schedule `id` (from memory after the first lookup); `None` if it does not
    /// exist (not remembered: it may be created later).
    pub async fn get(&self, id: i64) -> Result<Option<ScheduleFacts>, DbErr> {
        if let Some(facts) = self.facts.read().ok().and_then(|m| m.get(&id).cloned()) {
            return Ok(Some(facts));
        }
        let facts = catalogue::schedule_facts(&self.db, id).await?;
        if let (Some(f), Ok(mut map)) = (&facts, self.facts.write()) {
            if map.len() >= MAX_CACHED_SCHEDULES {
                map.clear();
            }
            map.insert(id, f.clone());
        }
        Ok(facts)
    }
}
