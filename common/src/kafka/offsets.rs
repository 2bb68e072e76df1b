//! Which offsets a consumer may commit: per partition the offsets in flight and the highest
//! completed. A partition is committed only up to its lowest message still in flight, so a
//! crash at any point redelivers rather than loses.

use rdkafka::consumer::{CommitMode, Consumer};

use super::consumer::GroupConsumer;

/// A message fully dealt with (handled, or parked in the DLQ).
pub(super) struct Done {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

pub(super) fn worker_for(key: Option<&str>, workers: usize) -> usize {
    // FNV-1a: stable, and cheap for short keys.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.unwrap_or("").bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % workers.max(1) as u64) as usize
}

/// Per partition: offsets in flight and the highest completed; what may be committed is the
/// lowest offset still in flight (or one past the highest completed).
#[derive(Default)]
pub(super) struct OffsetBook {
    partitions: std::collections::HashMap<(String, i32), PartitionOffsets>,
}

#[derive(Default)]
struct PartitionOffsets {
    in_flight: std::collections::BTreeSet<i64>,
    highest_done: Option<i64>,
    committed: Option<i64>,
}

impl PartitionOffsets {
    fn committable(&self) -> Option<i64> {
        match self.in_flight.first() {
            Some(&lowest) => Some(lowest),
            None => self.highest_done.map(|o| o + 1),
        }
    }
}

impl OffsetBook {
    pub fn start(&mut self, topic: &str, partition: i32, offset: i64) {
        self.partitions
            .entry((topic.to_owned(), partition))
            .or_default()
            .in_flight
            .insert(offset);
    }

    pub fn complete(&mut self, done: &Done) {
        if let Some(p) = self
            .partitions
            .get_mut(&(done.topic.clone(), done.partition))
        {
            p.in_flight.remove(&done.offset);
            p.highest_done = Some(p.highest_done.map_or(done.offset, |h| h.max(done.offset)));
        }
    }

    pub fn commit(&mut self, consumer: &GroupConsumer, mode: CommitMode) {
        let mut list = rdkafka::TopicPartitionList::new();
        let mut advanced = Vec::new();
        for ((topic, partition), p) in &self.partitions {
            if let Some(next) = p.committable()
                && p.committed.is_none_or(|c| next > c)
            {
                let _ = list.add_partition_offset(topic, *partition, rdkafka::Offset::Offset(next));
                advanced.push(((topic.clone(), *partition), next));
            }
        }
        if advanced.is_empty() {
            return;
        }
        let watch = consumer.context();
        if matches!(mode, CommitMode::Async) && !watch.begin_commit() {
            return;
        }
        match consumer.commit(&list, mode) {
            Ok(()) => {
                for (k, next) in advanced {
                    if let Some(p) = self.partitions.get_mut(&k) {
                        p.committed = Some(next);
                    }
                }
            }
            Err(e) => {
                watch.end_commit();
                tracing::warn!(error = %e, "offset commit failed; events may be redelivered")
            }
        }
    }
}
