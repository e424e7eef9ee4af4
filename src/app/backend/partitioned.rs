//! A cluster whose rooms are spread over several independent Redis groups (partitions, see
//! [`crate::cluster::partition`]): each partition numbers, keeps and publishes its own rooms' events with the
//! single-Redis script, so no key is touched by every publish. Positions inside the node are packed
//! (partition, sequence); a client's offset is the node's vector of positions.

use std::sync::Arc;

use futures_util::future::{BoxFuture, FutureExt};

use super::{EventLog, MissedError, RedisFeed, RedisLog, RoomFeed, Unavailable};
use crate::app::{ClusterBackend, PublishError, Receipt};
use crate::cluster::broker::ClusterPublished;
use crate::cluster::partition::{encode_offset, pack, partition_of, unpack, OffsetVector};
use crate::history::{HistoryError, HistoryPage, ReadLimit};
use crate::hub::{Event, EventPackets, RoomKey};
use crate::recovery::Membership;

/// Sequencing and history over several partitions.
pub struct PartitionedLog {
    parts: Vec<RedisLog>,
}

/// The rooms of one publish that one partition numbers.
struct Share {
    partition: usize,
    rooms: Vec<String>,
    /// Rooms of the publish numbered by lower partitions.
    except: Vec<String>,
}

impl PartitionedLog {
    /// A log over `parts`, partition `i` being `parts[i]`.
    pub fn new(parts: Vec<Arc<ClusterBackend>>) -> PartitionedLog {
        PartitionedLog {
            parts: parts.into_iter().map(RedisLog::new).collect(),
        }
    }

    fn part(&self, room: &RoomKey) -> (usize, &RedisLog) {
        let partition = partition_of(room, self.parts.len());
        (partition, &self.parts[partition])
    }

    /// How `event`'s rooms split over the partitions, lowest partition first.
    fn shares(&self, event: &Event<'_>) -> Vec<Share> {
        let mut shares: Vec<Share> = Vec::new();
        for room in event.rooms {
            let partition = partition_of(&RoomKey::new(event.nsp, room), self.parts.len());
            match shares.iter_mut().find(|s| s.partition == partition) {
                Some(share) => share.rooms.push(room.clone()),
                None => shares.push(Share {
                    partition,
                    rooms: vec![room.clone()],
                    except: Vec::new(),
                }),
            }
        }
        shares.sort_by_key(|s| s.partition);
        let mut lower: Vec<String> = Vec::new();
        for share in &mut shares {
            share.except = lower.clone();
            lower.extend(share.rooms.iter().cloned());
        }
        shares
    }

    /// Publishes `events` (each with its claim, when it has one) partition by partition, each partition's
    /// share in one script call: one answer per event, the receipt of its lowest partition (`None` when every
    /// partition found its claim taken).
    async fn publish_all(
        &self,
        events: &[(&Event<'_>, Option<&str>)],
        claim_ttl_ms: u64,
    ) -> Result<Vec<Option<Receipt>>, PublishError> {
        let split: Vec<Vec<Share>> = events.iter().map(|(e, _)| self.shares(e)).collect();
        let mut answers: Vec<Option<Receipt>> = vec![None; events.len()];
        for (partition, part) in self.parts.iter().enumerate() {
            let mut subs = Vec::new();
            for (index, ((event, claim), shares)) in events.iter().zip(&split).enumerate() {
                if let Some(share) = shares.iter().find(|s| s.partition == partition) {
                    let sub = Event {
                        rooms: &share.rooms,
                        ..**event
                    };
                    let claim = claim.map(|c| part.cluster().keys.ingest_seen(c));
                    subs.push((index, sub, claim, share.except.as_slice()));
                }
            }
            if subs.is_empty() {
                continue;
            }
            let batch: Vec<(&Event<'_>, Option<&str>, &[String])> = subs
                .iter()
                .map(|(_, sub, claim, except)| (sub, claim.as_deref(), *except))
                .collect();
            let published = part
                .cluster()
                .broker
                .publish_batch_except(&batch, claim_ttl_ms)
                .await
                .map_err(|e| PublishError::Unavailable(e.to_string()))?;
            for ((index, ..), published) in subs.iter().zip(published) {
                let Some(ClusterPublished { seq, receivers }) = published else {
                    continue;
                };
                let answer = &mut answers[*index];
                match answer {
                    Some(receipt) => receipt.recipients += receivers,
                    None => {
                        *answer = Some(Receipt {
                            seq,
                            recipients: receivers,
                        })
                    }
                }
            }
        }
        Ok(answers)
    }
}

impl EventLog for PartitionedLog {
    fn publish<'a>(&'a self, event: &'a Event<'a>) -> BoxFuture<'a, Result<Receipt, PublishError>> {
        async move {
            let answers = self.publish_all(&[(event, None)], 0).await?;
            Ok(answers.into_iter().flatten().next().unwrap_or(Receipt {
                seq: 0,
                recipients: 0,
            }))
        }
        .boxed()
    }

    fn page(
        &self,
        room: RoomKey,
        epoch: Option<u64>,
        since: u64,
        limit: ReadLimit,
    ) -> BoxFuture<'static, Result<HistoryPage, Unavailable>> {
        self.part(&room).1.page(room.clone(), epoch, since, limit)
    }

    fn epoch<'a>(&'a self, room: &'a RoomKey) -> BoxFuture<'a, Result<u64, Unavailable>> {
        self.part(room).1.epoch(room)
    }

    fn missed<'a>(
        &'a self,
        room: &'a RoomKey,
        membership: &'a Membership,
        after: u64,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<(u64, EventPackets)>, MissedError>> {
        async move {
            let (partition, part) = self.part(room);
            let events = part
                .missed_events(room, membership, raw_after(partition, after)?, max)
                .await?;
            Ok(events
                .into_iter()
                .map(|e| (pack(partition, e.seq), e.event.packets(room.nsp(), e.seq)))
                .collect())
        }
        .boxed()
    }

    fn broadcast(&self, room: &RoomKey, event: super::Ephemeral<'_>) -> bool {
        self.part(room).1.broadcast(room, event)
    }

    fn publish_once<'a>(
        &'a self,
        event: &'a Event<'a>,
        claim: &'a str,
        claim_ttl_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Receipt>, PublishError>> {
        async move {
            let answers = self
                .publish_all(&[(event, Some(claim))], claim_ttl_ms)
                .await?;
            Ok(answers.into_iter().next().flatten())
        }
        .boxed()
    }

    fn publish_batch_once<'a>(
        &'a self,
        events: &'a [(Event<'a>, &'a str)],
        claim_ttl_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<Option<Receipt>>, PublishError>> {
        async move {
            let batch: Vec<(&Event<'_>, Option<&str>)> =
                events.iter().map(|(e, c)| (e, Some(*c))).collect();
            self.publish_all(&batch, claim_ttl_ms).await
        }
        .boxed()
    }

    fn claim<'a>(
        &'a self,
        claim: &'a str,
        claim_ttl_ms: u64,
    ) -> BoxFuture<'a, Result<bool, PublishError>> {
        self.parts[0].claim(claim, claim_ttl_ms)
    }

    fn partitions(&self) -> usize {
        self.parts.len()
    }

    fn partition(&self, room: &RoomKey) -> usize {
        partition_of(room, self.parts.len())
    }

    fn replay<'a>(
        &'a self,
        nsp: &'a str,
        rooms: &'a [Membership],
        offsets: Option<&'a OffsetVector>,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<(u64, EventPackets)>, MissedError>> {
        async move {
            let mut missed = Vec::new();
            for membership in rooms {
                let room = &membership.key;
                let (partition, part) = self.part(room);
                let joined = raw_after(partition, membership.joined_seq)?;
                let after = offsets.map_or(0, |o| o.get(partition)).max(joined);
                let events = part.missed_events(room, membership, after, max).await?;
                if events.len() > max {
                    return Ok(events
                        .into_iter()
                        .map(|e| (pack(partition, e.seq), e.event.packets(nsp, e.seq)))
                        .collect());
                }
                for event in events {
                    // A member of a room numbered by a lower partition has this event from there.
                    let elsewhere = event
                        .event
                        .except
                        .iter()
                        .any(|r| rooms.iter().any(|m| m.room() == &**r));
                    if !elsewhere {
                        missed.push((partition, event));
                    }
                }
            }
            // Partition by partition, each in its order; an event in several rooms of one partition once.
            missed.sort_by_key(|(partition, e)| pack(*partition, e.seq));
            missed.dedup_by_key(|(partition, e)| pack(*partition, e.seq));
            // Each replayed event carries the vector of everything before it in the replay, so a client cut
            // off half way resumes exactly where it stopped.
            let mut vector: Vec<u64> = (0..self.parts.len())
                .map(|p| offsets.map_or(0, |o| o.get(p)))
                .collect();
            Ok(missed
                .into_iter()
                .map(|(partition, e)| {
                    vector[partition] = vector[partition].max(e.seq);
                    let packets = e.event.packets_at(nsp, &encode_offset(&vector));
                    (pack(partition, e.seq), packets)
                })
                .collect())
        }
        .boxed()
    }
}

/// The sequence of a packed position that must be in `partition` (a room whose position was taken in another
/// partition moved when the partitions changed: its history is not where the position points).
fn raw_after(partition: usize, position: u64) -> Result<u64, MissedError> {
    match unpack(position) {
        (p, seq) if p == partition || seq == 0 => Ok(seq),
        _ => Err(HistoryError::EpochChanged.into()),
    }
}

/// Room subscriptions of this node, each on its room's partition (that partition's [`RedisFeed`]).
pub struct PartitionedFeed {
    parts: Vec<RedisFeed>,
}

impl PartitionedFeed {
    /// Subscriptions through the subscriber of each of `parts`.
    pub fn new(parts: Vec<Arc<ClusterBackend>>) -> PartitionedFeed {
        PartitionedFeed {
            parts: parts.into_iter().map(RedisFeed::new).collect(),
        }
    }

    fn part(&self, room: &RoomKey) -> (usize, &RedisFeed) {
        let partition = partition_of(room, self.parts.len());
        (partition, &self.parts[partition])
    }
}

impl RoomFeed for PartitionedFeed {
    fn acquire<'a>(&'a self, room: &'a RoomKey) -> BoxFuture<'a, Result<(), Unavailable>> {
        self.part(room).1.acquire(room)
    }

    fn release(&self, room: &RoomKey) {
        self.part(room).1.release(room);
    }

    fn joined_seq(&self, room: &RoomKey, hub_seq: u64) -> u64 {
        let (partition, part) = self.part(room);
        pack(partition, part.joined_seq(room, hub_seq))
    }
}
