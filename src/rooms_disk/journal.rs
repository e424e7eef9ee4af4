//! The journal of `rooms.db`: what the history and session stores hand to the writer thread, and how the
//! writer applies it. Senders never block (an unbounded queue: appends run under the hub's ordering lock);
//! the writer takes what waits, applies it in one transaction and commits once.
//!
//! Evictions are folded per room within a batch and applied after its appends, so a flood that evicts one
//! event per append costs one delete per room per commit. A batch that fails leaves its events in memory only:
//! the next batch raises the eviction mark of each room it touched past them, so that after a restart a
//! client positioned before the gap is told its history is incomplete instead of silently missing events.

use std::collections::{HashMap, VecDeque};
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

use super::codec;
use super::schema;
use crate::history::{Evictions, JournalError};
use crate::hub::{EventPackets, RoomKey};
use crate::sqlite::commit::Work;

/// Jobs applied in one transaction at most.
pub const MAX_BATCH: usize = 4096;

/// Failed ranges of sequences remembered to answer [`Job::Sync`] exactly; older ones answer "failed".
const LOST_RANGES: usize = 1024;

/// A session as stored.
#[derive(Debug, Clone)]
pub struct SessionRow {
    /// Private id.
    pub pid: String,
    /// Socket id.
    pub sid: String,
    /// Namespace.
    pub nsp: String,
    /// User.
    pub sub: String,
    /// Rooms, encoded by [`codec::encode_rooms`].
    pub rooms: String,
    /// Its socket is connected.
    pub live: bool,
    /// Wall-clock expiry (ms since the Unix epoch); meaningful when parked.
    pub expires_ms: u64,
}

/// A change waiting for the writer.
pub enum Job {
    /// A stream was created with this epoch.
    Stream { room: RoomKey, epoch: u64 },
    /// An event was appended to a stream.
    Append {
        room: RoomKey,
        epoch: u64,
        seq: u64,
        at_ms: u64,
        packets: EventPackets,
    },
    /// Events of a stream up to `through` were evicted.
    Evicted { room: RoomKey, through: u64 },
    /// An empty stream was dropped.
    Dropped { room: RoomKey },
    /// A session was saved (parked or live).
    Session(SessionRow),
    /// A session was taken or forgotten.
    Forget(String),
    /// Parked sessions expired by then are dropped.
    SweepSessions { now_ms: u64 },
    /// Answers once everything queued before it is committed (or failed).
    Sync {
        seq: u64,
        reply: oneshot::Sender<Result<(), JournalError>>,
    },
    /// Marks a clean close after everything queued before it, then ends the writer.
    Close {
        reply: oneshot::Sender<Result<(), JournalError>>,
    },
}

/// The answer once the journal is closed (the store shut down, or its writer is gone).
pub fn closed() -> JournalError {
    JournalError("closed".into())
}

/// The senders' side of the journal.
pub struct Journal {
    queue: mpsc::UnboundedSender<Job>,
}

impl Journal {
    /// A journal and the queue its writer reads.
    pub fn new() -> (Journal, mpsc::UnboundedReceiver<Job>) {
        let (queue, jobs) = mpsc::unbounded_channel();
        (Journal { queue }, jobs)
    }

    /// Queues a job; never blocks. A closed journal counts the job as an error.
    pub fn send(&self, job: Job) {
        if self.queue.send(job).is_err() {
            metrics::counter!("tidings_history_journal_errors_total").increment(1);
        }
    }

    /// Resolves once everything queued before this call is committed.
    pub async fn sync(&self, seq: u64) -> Result<(), JournalError> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Sync { seq, reply });
        answer.await.unwrap_or(Err(closed()))
    }
}

impl Evictions for Journal {
    fn evicted(&self, room: &RoomKey, through: u64) {
        self.send(Job::Evicted {
            room: room.clone(),
            through,
        });
    }

    fn dropped(&self, room: &RoomKey) {
        self.send(Job::Dropped { room: room.clone() });
    }
}

/// The writer thread's side: applies jobs to `rooms.db`.
pub struct Writer {
    /// Stream ids and epochs known to be committed (cleared when a batch fails: its ids were rolled back).
    streams: HashMap<RoomKey, (i64, u64)>,
    /// The last event whose packets were written: a multi-room event's appends follow one another.
    last_event: u64,
    /// Per room, the epoch and highest sequence of appends lost in failed batches, written as eviction marks.
    lost: HashMap<RoomKey, (u64, u64)>,
    /// Ranges of sequences appended in failed batches, newest last.
    lost_ranges: VecDeque<(u64, u64)>,
    /// Highest sequence of a range forgotten from `lost_ranges`.
    forgotten_through: u64,
    /// What the last failed batch failed with.
    last_failure: String,
    tune: fn(&Connection) -> rusqlite::Result<()>,
}

impl Writer {
    /// A writer; `tune` is applied to every connection it opens again after a failure.
    pub fn new(tune: fn(&Connection) -> rusqlite::Result<()>) -> Writer {
        Writer {
            streams: HashMap::new(),
            last_event: 0,
            lost: HashMap::new(),
            lost_ranges: VecDeque::new(),
            forgotten_through: 0,
            last_failure: String::new(),
            tune,
        }
    }

    /// The id of `room`'s stream of `epoch`, creating the row, or resetting a row left from an older epoch.
    fn stream_id(
        &mut self,
        conn: &Connection,
        room: &RoomKey,
        epoch: u64,
    ) -> rusqlite::Result<i64> {
        if let Some(&(id, known)) = self.streams.get(room) {
            if known == epoch {
                return Ok(id);
            }
        }
        let found: Option<(i64, i64)> = conn
            .prepare_cached("SELECT id, epoch FROM streams WHERE room = ?1")?
            .query_row([room.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        let id = match found {
            Some((id, stored)) if stored as u64 == epoch => id,
            Some((id, _)) => {
                self.delete_slots(conn, id, i64::MAX)?;
                conn.prepare_cached(
                    "UPDATE streams SET epoch = ?2, evicted_through = 0 WHERE id = ?1",
                )?
                .execute(params![id, epoch as i64])?;
                id
            }
            None => conn
                .prepare_cached(
                    "INSERT INTO streams (room, epoch, evicted_through) VALUES (?1, ?2, 0) RETURNING id",
                )?
                .query_row(params![room.as_str(), epoch as i64], |row| row.get(0))?,
        };
        self.streams.insert(room.clone(), (id, epoch));
        Ok(id)
    }

    fn append(
        &mut self,
        conn: &Connection,
        room: &RoomKey,
        epoch: u64,
        seq: u64,
        at_ms: u64,
        packets: &EventPackets,
    ) -> rusqlite::Result<()> {
        let stream = self.stream_id(conn, room, epoch)?;
        if seq != self.last_event {
            conn.prepare_cached(
                "INSERT OR IGNORE INTO events (seq, at_ms, packets) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![
                seq as i64,
                at_ms as i64,
                codec::encode_packets(packets)
            ])?;
            self.last_event = seq;
        }
        conn.prepare_cached("INSERT OR IGNORE INTO slots (stream, seq) VALUES (?1, ?2)")?
            .execute(params![stream, seq as i64])?;
        Ok(())
    }

    /// Deletes a stream's events up to `through` and raises its eviction mark.
    fn evict(&mut self, conn: &Connection, room: &RoomKey, through: u64) -> rusqlite::Result<()> {
        let id = match self.streams.get(room) {
            Some(&(id, _)) => Some(id),
            None => conn
                .prepare_cached("SELECT id FROM streams WHERE room = ?1")?
                .query_row([room.as_str()], |row| row.get(0))
                .optional()?,
        };
        let Some(id) = id else {
            return Ok(());
        };
        self.delete_slots(conn, id, through as i64)?;
        conn.prepare_cached(
            "UPDATE streams SET evicted_through = max(evicted_through, ?2) WHERE id = ?1",
        )?
        .execute(params![id, through as i64])?;
        Ok(())
    }

    fn drop_stream(&mut self, conn: &Connection, room: &RoomKey) -> rusqlite::Result<()> {
        self.streams.remove(room);
        let id: Option<i64> = conn
            .prepare_cached("DELETE FROM streams WHERE room = ?1 RETURNING id")?
            .query_row([room.as_str()], |row| row.get(0))
            .optional()?;
        if let Some(id) = id {
            self.delete_slots(conn, id, i64::MAX)?;
        }
        Ok(())
    }

    /// Deletes the slots of stream `id` up to `through`, and the events no stream holds any more.
    fn delete_slots(&mut self, conn: &Connection, id: i64, through: i64) -> rusqlite::Result<()> {
        let seqs: Vec<i64> = conn
            .prepare_cached("DELETE FROM slots WHERE stream = ?1 AND seq <= ?2 RETURNING seq")?
            .query_map(params![id, through], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut orphan = conn.prepare_cached(
            "DELETE FROM events WHERE seq = ?1 AND NOT EXISTS (SELECT 1 FROM slots WHERE seq = ?1)",
        )?;
        for seq in seqs {
            if orphan.execute([seq])? > 0 && seq as u64 == self.last_event {
                // Its remaining rooms' appends (still to come) must write the packets again.
                self.last_event = 0;
            }
        }
        Ok(())
    }

    /// Whether the appends of every sequence up to `seq` still in flight were committed.
    fn verdict(&self, seq: u64) -> Result<(), JournalError> {
        let lost = (seq > 0 && seq <= self.forgotten_through)
            || self
                .lost_ranges
                .iter()
                .any(|&(first, last)| (first..=last).contains(&seq));
        if lost {
            Err(JournalError(self.last_failure.clone()))
        } else {
            Ok(())
        }
    }

    /// Remembers what a failed batch lost.
    fn note_failure(&mut self, batch: &[Job]) {
        self.streams.clear();
        self.last_event = 0;
        let mut range: Option<(u64, u64)> = None;
        for job in batch {
            match job {
                Job::Append {
                    room, epoch, seq, ..
                } => {
                    let mark = self.lost.entry(room.clone()).or_insert((*epoch, 0));
                    *mark = if mark.0 == *epoch {
                        (*epoch, mark.1.max(*seq))
                    } else {
                        (*epoch, *seq)
                    };
                    range = Some(range.map_or((*seq, *seq), |(a, b)| (a.min(*seq), b.max(*seq))));
                }
                Job::Stream { room, epoch } => {
                    self.lost.entry(room.clone()).or_insert((*epoch, 0));
                }
                _ => {}
            }
        }
        if let Some(range) = range {
            self.lost_ranges.push_back(range);
            if self.lost_ranges.len() > LOST_RANGES {
                if let Some((_, last)) = self.lost_ranges.pop_front() {
                    self.forgotten_through = self.forgotten_through.max(last);
                }
            }
        }
    }
}

impl Work for Writer {
    type Job = Job;
    const STORE: &'static str = "rooms";

    fn reopen(&mut self, path: &Path) -> Result<Connection, String> {
        let conn = schema::open_writer(path).map_err(|e| e.to_string())?;
        (self.tune)(&conn).map_err(|e| e.to_string())?;
        Ok(conn)
    }

    fn writes(&self, batch: &[Job]) -> bool {
        !self.lost.is_empty() || batch.iter().any(|job| !matches!(job, Job::Sync { .. }))
    }

    fn apply(&mut self, conn: &Connection, batch: &mut [Job]) -> rusqlite::Result<()> {
        let lost: Vec<(RoomKey, (u64, u64))> =
            self.lost.iter().map(|(r, m)| (r.clone(), *m)).collect();
        for (room, (epoch, through)) in lost {
            self.stream_id(conn, &room, epoch)?;
            self.evict(conn, &room, through)?;
        }
        let mut evictions: HashMap<RoomKey, u64> = HashMap::new();
        let mut last_seq = 0u64;
        let mut closing = false;
        for job in batch.iter() {
            match job {
                Job::Stream { room, epoch } => {
                    self.stream_id(conn, room, *epoch)?;
                }
                Job::Append {
                    room,
                    epoch,
                    seq,
                    at_ms,
                    packets,
                } => {
                    self.append(conn, room, *epoch, *seq, *at_ms, packets)?;
                    last_seq = last_seq.max(*seq);
                }
                Job::Evicted { room, through } => {
                    let mark = evictions.entry(room.clone()).or_default();
                    *mark = (*mark).max(*through);
                }
                Job::Dropped { room } => {
                    evictions.remove(room);
                    self.drop_stream(conn, room)?;
                }
                Job::Session(row) => {
                    conn.prepare_cached(
                        "INSERT OR REPLACE INTO sessions (pid, sid, nsp, sub, rooms, live, expires_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )?
                    .execute(params![
                        row.pid,
                        row.sid,
                        row.nsp,
                        row.sub,
                        row.rooms,
                        row.live,
                        row.expires_ms as i64
                    ])?;
                }
                Job::Forget(pid) => {
                    conn.prepare_cached("DELETE FROM sessions WHERE pid = ?1")?
                        .execute([pid])?;
                }
                Job::SweepSessions { now_ms } => {
                    conn.prepare_cached(
                        "DELETE FROM sessions WHERE live = 0 AND expires_ms <= ?1",
                    )?
                    .execute([*now_ms as i64])?;
                }
                Job::Sync { .. } => {}
                Job::Close { .. } => closing = true,
            }
        }
        for (room, through) in evictions {
            self.evict(conn, &room, through)?;
        }
        if last_seq > 0 {
            conn.prepare_cached("UPDATE progress SET last_seq = max(last_seq, ?1) WHERE id = 1")?
                .execute([last_seq as i64])?;
        }
        if closing {
            conn.execute(
                "UPDATE progress SET clean_through = last_seq WHERE id = 1",
                [],
            )?;
        }
        Ok(())
    }

    fn settle(&mut self, batch: &mut Vec<Job>, failure: Option<&str>) -> bool {
        match failure {
            None => self.lost.clear(),
            Some(error) => {
                metrics::counter!("tidings_history_journal_errors_total").increment(1);
                self.last_failure = error.to_owned();
                self.note_failure(batch);
            }
        }
        let mut keep_running = true;
        for job in batch.drain(..) {
            match job {
                Job::Sync { seq, reply } => {
                    let answer = match failure {
                        Some(error) => Err(JournalError(error.to_owned())),
                        None => self.verdict(seq),
                    };
                    let _ = reply.send(answer);
                }
                Job::Close { reply } => {
                    keep_running = false;
                    let answer = match failure {
                        Some(error) => Err(JournalError(error.to_owned())),
                        None => Ok(()),
                    };
                    let _ = reply.send(answer);
                }
                _ => {}
            }
        }
        keep_running
    }
}
