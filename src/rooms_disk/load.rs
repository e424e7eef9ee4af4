//! Reading `rooms.db` back on open: streams with their epochs and eviction marks, their events in sequence
//! order into the memory history (whose limits apply again), and the sessions a client may still resume.
//! Then the file is marked as in use, so that a crash from here on is told apart from a clean close.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};

use super::codec;
use super::wall_ms;
use crate::engineio::session::Sid;
use crate::history::MemoryHistory;
use crate::hub::{EventPackets, RoomKey};
use crate::recovery::{MemorySessionStore, SessionRecord, SessionStore};

/// How far past the last committed sequence the node resumes after a crash. Events may have been delivered
/// live (their offsets are in clients' hands) and not committed when the process died; their numbers must
/// never be given to different events. No node assigns 2³² sequences between two commits.
pub const CRASH_GAP: u64 = 1 << 32;

/// What was read back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Loaded {
    /// The sequence the hub continues from.
    pub resume_seq: u64,
    /// The previous run ended with a clean close.
    pub clean: bool,
    /// Streams restored.
    pub streams: usize,
    /// Events read (before the limits applied again).
    pub events: usize,
    /// Sessions that may be resumed.
    pub sessions: usize,
    /// Stored values that could not be read back and were skipped.
    pub unreadable: usize,
}

/// Restores `conn`'s contents into `history` and `sessions`; sessions whose sockets were connected when the
/// process ended become resumable for `max_disconnection` from now.
pub fn load(
    conn: &Connection,
    history: &MemoryHistory,
    sessions: &MemorySessionStore,
    max_disconnection: Duration,
) -> rusqlite::Result<Loaded> {
    let (last_seq, clean_through): (i64, Option<i64>) = conn.query_row(
        "SELECT last_seq, clean_through FROM progress WHERE id = 1",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    let last_seq = last_seq as u64;
    let clean = clean_through == Some(last_seq as i64);
    let mut loaded = Loaded {
        resume_seq: if clean {
            last_seq
        } else {
            last_seq + CRASH_GAP
        },
        clean,
        ..Loaded::default()
    };
    let streams = load_streams(conn, history)?;
    loaded.streams = streams.len();
    load_events(conn, history, &streams, &mut loaded)?;
    let now_ms = wall_ms();
    let revived_until = now_ms + max_disconnection.as_millis() as u64;
    load_sessions(conn, sessions, now_ms, revived_until, &mut loaded)?;
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let marked = conn
        .execute(
            "UPDATE progress SET last_seq = ?1, clean_through = NULL WHERE id = 1",
            [loaded.resume_seq as i64],
        )
        .and_then(|_| {
            conn.execute(
                "UPDATE sessions SET live = 0, expires_ms = ?1 WHERE live = 1",
                [revived_until as i64],
            )
        })
        .and_then(|_| {
            conn.execute(
                "DELETE FROM sessions WHERE expires_ms <= ?1",
                params![now_ms as i64],
            )
        });
    match marked {
        Ok(_) => conn.execute_batch("COMMIT")?,
        Err(error) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(error);
        }
    }
    Ok(loaded)
}

/// Stream id → (room, eviction mark).
fn load_streams(
    conn: &Connection,
    history: &MemoryHistory,
) -> rusqlite::Result<HashMap<i64, (RoomKey, u64)>> {
    let mut streams = HashMap::new();
    let mut rows = conn.prepare("SELECT id, room, epoch, evicted_through FROM streams")?;
    let rows = rows.query_map([], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, i64>(2)?,
            row.get::<_, i64>(3)?,
        ))
    })?;
    for row in rows {
        let (id, key, epoch, evicted_through) = row?;
        let (nsp, room) = key.split_once('\0').unwrap_or(("/", &key));
        let room = RoomKey::new(nsp, room);
        history.restore_stream(&room, epoch as u64, evicted_through as u64);
        streams.insert(id, (room, evicted_through as u64));
    }
    Ok(streams)
}

/// Events in sequence order, each decoded once however many streams hold it.
fn load_events(
    conn: &Connection,
    history: &MemoryHistory,
    streams: &HashMap<i64, (RoomKey, u64)>,
    loaded: &mut Loaded,
) -> rusqlite::Result<()> {
    let mut rows = conn.prepare(
        "SELECT s.stream, s.seq, e.at_ms, e.packets FROM slots s JOIN events e ON e.seq = s.seq
         ORDER BY s.seq, s.stream",
    )?;
    let mut rows = rows.query([])?;
    let mut current: Option<(u64, Option<EventPackets>)> = None;
    while let Some(row) = rows.next()? {
        let (stream, seq, at_ms): (i64, i64, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
        let seq = seq as u64;
        let Some((room, evicted_through)) = streams.get(&stream) else {
            continue;
        };
        if seq <= *evicted_through {
            continue;
        }
        if current.as_ref().is_none_or(|(held, _)| *held != seq) {
            let packets = codec::decode_packets(row.get(3)?).ok();
            if packets.is_none() {
                loaded.unreadable += 1;
                tracing::warn!(seq, "unreadable stored event skipped");
            }
            current = Some((seq, packets));
            loaded.events += 1;
        }
        if let Some((_, Some(packets))) = &current {
            history.insert(room, seq, at_ms as u64, packets);
        }
    }
    Ok(())
}

fn load_sessions(
    conn: &Connection,
    sessions: &MemorySessionStore,
    now_ms: u64,
    revived_until: u64,
    loaded: &mut Loaded,
) -> rusqlite::Result<()> {
    let mut rows =
        conn.prepare("SELECT pid, sid, nsp, sub, rooms, live, expires_ms FROM sessions")?;
    let rows = rows.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, String>(3)?,
            row.get::<_, String>(4)?,
            row.get::<_, bool>(5)?,
            row.get::<_, i64>(6)?,
        ))
    })?;
    let now = Instant::now();
    for row in rows {
        let (pid, sid, nsp, sub, rooms, live, expires_ms) = row?;
        let expires_ms = if live {
            revived_until
        } else {
            expires_ms as u64
        };
        if expires_ms <= now_ms {
            continue;
        }
        let (Some(pid), Some(sid), Ok(rooms)) = (
            Sid::parse(&pid),
            Sid::parse(&sid),
            codec::decode_rooms(&nsp, &rooms),
        ) else {
            loaded.unreadable += 1;
            continue;
        };
        sessions.park(SessionRecord {
            pid,
            sid,
            nsp: nsp.into(),
            sub,
            rooms,
            expires_at: now + Duration::from_millis(expires_ms - now_ms),
        });
        loaded.sessions += 1;
    }
    Ok(())
}
