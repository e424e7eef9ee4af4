//! Per-address admission of new sessions: how many sessions one client address may hold at once, and how
//! many handshakes per second it may make (a token bucket), so one source cannot fill the session table.
//!
//! IPv4 addresses count one by one; IPv6 addresses count by their /64 prefix, the block one subscriber
//! usually gets (anyone holding a /64 can use 2^64 addresses).
//!
//! The table holds an entry per address with sessions or with an unfilled bucket, and no more: an entry goes
//! when its last session closes with its bucket full, or at the next sweep once its bucket has refilled. The
//! number of entries is capped; at the cap every entry without sessions is dropped at once (their rate state is
//! forgotten, the lesser evil), so a flood from ever new addresses cannot grow it without bound.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::client_addr::{canonical, mask};

const SHARDS: usize = 16;
/// How often entries whose bucket refilled are swept out.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Fewest entries the table may hold, whatever the session limit.
const MIN_CAPACITY: usize = 4096;

/// The per-address limits; a zero turns that limit off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AddressLimits {
    /// Most concurrent sessions per client address (`limits.max_sessions_per_ip`).
    pub max_sessions: u32,
    /// Sustained handshakes per second per client address (`limits.handshakes_per_sec_per_ip`).
    pub handshakes_per_sec: u32,
    /// Handshakes an address may make at once before the rate applies (`limits.handshake_burst_per_ip`).
    pub handshake_burst: u32,
}

impl AddressLimits {
    /// True when neither limit applies.
    pub fn is_off(&self) -> bool {
        self.max_sessions == 0 && self.handshakes_per_sec == 0
    }
}

/// Why an address may not open a session now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The address holds `max_sessions` sessions already.
    #[error("too many sessions from this address")]
    Sessions,
    /// The address used up its handshake bucket.
    #[error("too many handshakes from this address")]
    Handshakes,
    /// The table is at its cap with a session on every entry (cannot happen while the cap exceeds the node's
    /// session limit; kept so the bound holds whatever the config).
    #[error("too many client addresses")]
    TableFull,
}

impl Refusal {
    /// The `reason` label of `tidings_connections_refused_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Sessions => "max_sessions_per_ip",
            Refusal::Handshakes => "handshakes_per_sec_per_ip",
            Refusal::TableFull => "address_table_full",
        }
    }
}

/// What is known of one address.
struct Entry {
    sessions: u32,
    tokens: f64,
    refilled: Instant,
}

impl Entry {
    fn refill(&mut self, limits: &AddressLimits, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(limits.handshakes_per_sec))
            .min(f64::from(limits.handshake_burst));
        self.refilled = now;
    }

    /// True when forgetting the entry loses nothing: no session, and a full bucket.
    fn is_idle(&mut self, limits: &AddressLimits, now: Instant) -> bool {
        if self.sessions > 0 {
            return false;
        }
        self.refill(limits, now);
        self.tokens >= f64::from(limits.handshake_burst)
    }
}

/// The per-address table of one Engine.IO endpoint.
pub struct AddressTable {
    limits: AddressLimits,
    shards: Box<[Mutex<HashMap<IpAddr, Entry>>]>,
    entries: AtomicUsize,
    capacity: usize,
    /// Milliseconds since [`AddressTable::base`] at the last sweep.
    last_sweep_ms: AtomicU64,
    base: Instant,
}

/// One admitted session's place in its address's count; given back when dropped, unless
/// [`AddressSlot::into_key`] hands it to the session.
pub struct AddressSlot {
    /// `None` once handed over.
    table: Option<Arc<AddressTable>>,
    key: IpAddr,
}

impl AddressSlot {
    /// The address the place counts under, for a holder that gives it back with [`AddressTable::release`]
    /// (a session keeps these 17 bytes rather than the slot's 32).
    pub fn into_key(mut self) -> IpAddr {
        self.table = None;
        self.key
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if let Some(table) = &self.table {
            table.release(self.key);
        }
    }
}

impl std::fmt::Debug for AddressSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AddressSlot({})", self.key)
    }
}

/// The key an address counts under: itself for IPv4, its /64 for IPv6.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        v4 @ IpAddr::V4(_) => v4,
        v6 => mask(v6, 64),
    }
}

impl AddressTable {
    /// A table for `limits` on an endpoint of at most `max_sessions` sessions.
    pub fn new(limits: AddressLimits, max_sessions: usize) -> Arc<AddressTable> {
        Arc::new(AddressTable {
            limits,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            entries: AtomicUsize::new(0),
            capacity: max_sessions.saturating_mul(2).max(MIN_CAPACITY),
            last_sweep_ms: AtomicU64::new(0),
            base: Instant::now(),
        })
    }

    /// Addresses in the table now.
    pub fn len(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    /// True when the table holds no address.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, key: &IpAddr) -> &Mutex<HashMap<IpAddr, Entry>> {
        use std::hash::BuildHasher;
        static HASHER: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
        let hash = HASHER.get_or_init(Default::default).hash_one(key);
        &self.shards[hash as usize % SHARDS]
    }

    /// Takes a handshake token of `ip`'s address and a place in its session count.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<AddressSlot, Refusal> {
        let now = Instant::now();
        self.maybe_sweep(now);
        let key = address_key(ip);
        let limits = &self.limits;
        let mut shard = self.shard(&key).lock();
        if !shard.contains_key(&key) {
            if self.entries.load(Ordering::Acquire) >= self.capacity {
                drop(shard);
                self.sweep(now, true);
                shard = self.shard(&key).lock();
                if self.entries.load(Ordering::Acquire) >= self.capacity {
                    return Err(Refusal::TableFull);
                }
            }
            if let std::collections::hash_map::Entry::Vacant(slot) = shard.entry(key) {
                slot.insert(Entry {
                    sessions: 0,
                    tokens: f64::from(limits.handshake_burst),
                    refilled: now,
                });
                self.entries.fetch_add(1, Ordering::AcqRel);
            }
        }
        let Some(entry) = shard.get_mut(&key) else {
            return Err(Refusal::TableFull);
        };
        if limits.handshakes_per_sec > 0 {
            entry.refill(limits, now);
            if entry.tokens < 1.0 {
                return Err(Refusal::Handshakes);
            }
            entry.tokens -= 1.0;
        }
        if limits.max_sessions > 0 && entry.sessions >= limits.max_sessions {
            return Err(Refusal::Sessions);
        }
        entry.sessions += 1;
        Ok(AddressSlot {
            table: Some(self.clone()),
            key,
        })
    }

    /// Gives back a place taken by [`AddressTable::admit`] and kept as its key ([`AddressSlot::into_key`]).
    pub fn release(&self, key: IpAddr) {
        let mut shard = self.shard(&key).lock();
        let Some(entry) = shard.get_mut(&key) else {
            return;
        };
        entry.sessions = entry.sessions.saturating_sub(1);
        if entry.is_idle(&self.limits, Instant::now()) {
            shard.remove(&key);
            self.entries.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Sweeps once per [`SWEEP_EVERY`], on whichever admission comes first after it.
    fn maybe_sweep(&self, now: Instant) {
        let now_ms = now.saturating_duration_since(self.base).as_millis() as u64;
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) < SWEEP_EVERY.as_millis() as u64
            || self
                .last_sweep_ms
                .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.sweep(now, false);
    }

    /// Drops the entries that hold no session: all of them when `forced`, else those whose bucket refilled.
    fn sweep(&self, now: Instant, forced: bool) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            let before = shard.len();
            shard.retain(|_, entry| {
                if forced {
                    entry.sessions > 0
                } else {
                    !entry.is_idle(&self.limits, now)
                }
            });
            self.entries
                .fetch_sub(before - shard.len(), Ordering::AcqRel);
        }
        metrics::gauge!("tidings_client_addresses").set(self.len() as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn limits(max_sessions: u32, per_sec: u32, burst: u32) -> AddressLimits {
        AddressLimits {
            max_sessions,
            handshakes_per_sec: per_sec,
            handshake_burst: burst,
        }
    }

    #[test]
    fn sessions_per_address_are_capped_and_given_back() {
        let table = AddressTable::new(limits(2, 0, 0), 100);
        let a = table.admit(ip("192.0.2.1")).unwrap();
        let _b = table.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(table.admit(ip("192.0.2.1")).unwrap_err(), Refusal::Sessions);
        // Another address is not affected.
        let _c = table.admit(ip("192.0.2.2")).unwrap();
        drop(a);
        let _d = table.admit(ip("192.0.2.1")).unwrap();
    }

    #[test]
    fn handshakes_per_address_follow_a_token_bucket() {
        let table = AddressTable::new(limits(0, 1, 3), 100);
        let slots: Vec<_> = (0..3)
            .map(|_| table.admit(ip("192.0.2.1")).unwrap())
            .collect();
        assert_eq!(
            table.admit(ip("192.0.2.1")).unwrap_err(),
            Refusal::Handshakes
        );
        // Closing the sessions gives no tokens back: the bucket keeps its state.
        drop(slots);
        assert_eq!(table.len(), 1);
        assert_eq!(
            table.admit(ip("192.0.2.1")).unwrap_err(),
            Refusal::Handshakes
        );
        assert!(table.admit(ip("192.0.2.9")).is_ok());
    }

    #[test]
    fn ipv6_counts_by_64_prefix() {
        let table = AddressTable::new(limits(1, 0, 0), 100);
        let _a = table.admit(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            table.admit(ip("2001:db8:1:2:ffff::9")).unwrap_err(),
            Refusal::Sessions
        );
        assert!(table.admit(ip("2001:db8:1:3::1")).is_ok());
        // IPv4-mapped addresses count as the IPv4 address.
        let _v4 = table.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(
            table.admit(ip("::ffff:192.0.2.1")).unwrap_err(),
            Refusal::Sessions
        );
    }

    #[test]
    fn entries_go_when_idle_and_the_table_stays_bounded() {
        // Without a rate limit an entry goes with its last session.
        let table = AddressTable::new(limits(5, 0, 0), 10);
        drop(table.admit(ip("192.0.2.1")).unwrap());
        assert!(table.is_empty());
        // A flood from ever new addresses, each leaving an unfilled bucket behind, never passes the cap.
        let table = AddressTable::new(limits(5, 1, 10), 10);
        for i in 0..3 * MIN_CAPACITY as u32 {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            drop(table.admit(addr).unwrap());
            assert!(table.len() <= MIN_CAPACITY);
        }
        // Held sessions survive a forced sweep.
        let held = table.admit(ip("198.51.100.1")).unwrap();
        table.sweep(Instant::now(), true);
        assert_eq!(table.len(), 1);
        drop(held);
    }
}
