//! Allocation census (cargo feature `alloc-census`, for `bench/memory.sh` with `CENSUS=1` only): a global
//! allocator over the node's own one (jemalloc) that counts live heap blocks by requested size, so a benchmark can diff two
//! readings and say which blocks each idle connection keeps, byte for byte.
//!
//! Counting is a pair of relaxed atomic adds per allocation and per free; sizes are kept exactly up to
//! [`EXACT_LIMIT`] bytes (8-byte steps) and summed above. A reading also carries jemalloc's own counters
//! (bytes handed out in size classes, in active pages, resident, metadata), so what the process's RSS holds
//! beyond the blocks asked for can be named: size-class rounding, slab slack and the allocator's metadata.
//!
//! `TIDINGS_ALLOC_TRACE=size[,size…]` also records where a few blocks of those exact sizes were allocated
//! (one backtrace every [`TRACE_STRIDE`] blocks of a size, at most [`TRACE_SAMPLES`] each), to name the code
//! behind a size. Readings are written on SIGUSR2 to the file named by `TIDINGS_ALLOC_CENSUS`, one JSON object
//! a line.
//!
//! `TIDINGS_ALLOC_LIVE=n` samples one allocation in every `n` (any size) with its backtrace and forgets the
//! sample when the block is freed, so a reading lists the call sites of the blocks still live, grouped by their
//! first frames in this crate and its dependencies: which code keeps the memory, not only how big it is.

use std::alloc::{GlobalAlloc, Layout};

use std::cell::Cell;
use std::io::Write as _;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Mutex;
use tikv_jemallocator::Jemalloc;

/// Sizes up to this many bytes are counted exactly (in 8-byte steps); larger ones share one bucket.
pub const EXACT_LIMIT: usize = 64 * 1024;
/// One sampled backtrace per this many allocations of a traced size.
pub const TRACE_STRIDE: usize = 997;
/// Most backtraces kept per traced size.
pub const TRACE_SAMPLES: usize = 4;
const BUCKETS: usize = EXACT_LIMIT / 8 + 2;
const MAX_TRACED: usize = 8;

static BLOCKS: [AtomicI64; BUCKETS] = [const { AtomicI64::new(0) }; BUCKETS];
static BYTES: [AtomicI64; BUCKETS] = [const { AtomicI64::new(0) }; BUCKETS];
static TRACED: [AtomicUsize; MAX_TRACED] = [const { AtomicUsize::new(0) }; MAX_TRACED];
static TRACE_SEEN: [AtomicUsize; MAX_TRACED] = [const { AtomicUsize::new(0) }; MAX_TRACED];
static TRACES: Mutex<Vec<(usize, String)>> = Mutex::new(Vec::new());
/// One sample in this many allocations is kept while live (0: off).
static LIVE_EVERY: AtomicUsize = AtomicUsize::new(0);
static LIVE_SEEN: AtomicUsize = AtomicUsize::new(0);
/// Live samples: block address → (requested size, backtrace).
static LIVE: Mutex<Option<std::collections::HashMap<usize, (usize, std::backtrace::Backtrace)>>> =
    Mutex::new(None);

thread_local! {
    /// Set while this thread records a backtrace, whose own allocations must not be traced again.
    static TRACING: Cell<bool> = const { Cell::new(false) };
}

/// The counting allocator; install it with `#[global_allocator]`.
pub struct CensusAlloc;

fn bucket(size: usize) -> usize {
    if size > EXACT_LIMIT {
        BUCKETS - 1
    } else {
        size.div_ceil(8)
    }
}

fn count(size: usize, sign: i64) {
    let b = bucket(size);
    BLOCKS[b].fetch_add(sign, Ordering::Relaxed);
    BYTES[b].fetch_add(sign * size as i64, Ordering::Relaxed);
    if sign > 0 {
        trace(size);
    }
}

fn trace(size: usize) {
    for (slot, traced) in TRACED.iter().enumerate() {
        let wanted = traced.load(Ordering::Relaxed);
        if wanted == 0 {
            return;
        }
        if wanted != size {
            continue;
        }
        let seen = TRACE_SEEN[slot].fetch_add(1, Ordering::Relaxed);
        if seen % TRACE_STRIDE != TRACE_STRIDE - 1 || seen / TRACE_STRIDE >= TRACE_SAMPLES {
            return;
        }
        let _ = TRACING.try_with(|flag| {
            if flag.replace(true) {
                return;
            }
            let text = std::backtrace::Backtrace::force_capture().to_string();
            if let Ok(mut traces) = TRACES.lock() {
                traces.push((size, text));
            }
            flag.set(false);
        });
        return;
    }
}

/// Keeps a backtrace for one allocation in every `TIDINGS_ALLOC_LIVE`.
fn live_sample(ptr: *mut u8, size: usize) {
    let every = LIVE_EVERY.load(Ordering::Relaxed);
    if every == 0
        || !LIVE_SEEN
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(every)
    {
        return;
    }
    let _ = TRACING.try_with(|flag| {
        if flag.replace(true) {
            return;
        }
        let trace = std::backtrace::Backtrace::force_capture();
        if let Ok(mut live) = LIVE.lock() {
            live.get_or_insert_with(Default::default)
                .insert(ptr as usize, (size, trace));
        }
        flag.set(false);
    });
}

/// Drops the sample of a freed block, if it had one.
fn live_forget(ptr: *mut u8) {
    if LIVE_EVERY.load(Ordering::Relaxed) == 0 {
        return;
    }
    let _ = TRACING.try_with(|flag| {
        if flag.replace(true) {
            return;
        }
        // Taken out under the lock, dropped after it: dropping frees, and freeing comes back here.
        let removed = LIVE
            .lock()
            .ok()
            .and_then(|mut live| live.as_mut().and_then(|l| l.remove(&(ptr as usize))));
        drop(removed);
        flag.set(false);
    });
}

/// The live samples grouped by call site: the first frames outside the allocator and the standard library.
fn live_sites() -> Vec<serde_json::Value> {
    let every = LIVE_EVERY.load(Ordering::Relaxed);
    if every == 0 {
        return Vec::new();
    }
    // Resolving allocates and frees: this thread must not come back into the lock it holds.
    let was_tracing = TRACING.try_with(|flag| flag.replace(true)).unwrap_or(true);
    let samples: Vec<(usize, String)> = match LIVE.lock() {
        Ok(live) => live
            .iter()
            .flat_map(|l| l.values())
            .map(|(size, trace)| (*size, trace.to_string()))
            .collect(),
        Err(_) => Vec::new(),
    };
    let _ = TRACING.try_with(|flag| flag.set(was_tracing));
    let mut sites: std::collections::HashMap<(String, usize), usize> = Default::default();
    for (size, text) in samples {
        *sites.entry((call_site(&text), size)).or_default() += 1;
    }
    let mut sites: Vec<_> = sites.into_iter().collect();
    sites.sort_by_key(|((_, size), n)| std::cmp::Reverse(size * n));
    sites
        .into_iter()
        .map(|((site, size), n)| {
            serde_json::json!({"size": size, "blocks": n * every, "bytes": n * every * size, "site": site})
        })
        .collect()
}

/// The first few frame names of a backtrace that are not the allocator's, the standard library's or Rust's
/// allocation plumbing.
fn call_site(text: &str) -> String {
    const SKIP: [&str; 11] = [
        "hashbrown::",
        "<hashbrown::",
        "tidings::alloc_census",
        "std::",
        "alloc::",
        "<alloc::",
        "core::",
        "<core::",
        "__rustc",
        "<std::",
        "<tidings::alloc_census",
    ];
    text.lines()
        .filter_map(|line| {
            let (num, name) = line.trim_start().split_once(": ")?;
            num.parse::<usize>().ok()?;
            Some(name.trim())
        })
        .filter(|name| !SKIP.iter().any(|skip| name.starts_with(skip)))
        .take(6)
        .collect::<Vec<_>>()
        .join(" < ")
}

// SAFETY: every call goes to `Jemalloc` (the node's allocator) with the caller's layout; the counting touches only atomics and, when
// tracing, a thread-local flag that keeps the backtrace's own allocations from recursing into tracing.
unsafe impl GlobalAlloc for CensusAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let ptr = unsafe { Jemalloc.alloc(layout) };
        if !ptr.is_null() {
            count(layout.size(), 1);
            live_sample(ptr, layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let ptr = unsafe { Jemalloc.alloc_zeroed(layout) };
        if !ptr.is_null() {
            count(layout.size(), 1);
            live_sample(ptr, layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(layout.size(), -1);
        live_forget(ptr);
        // SAFETY: forwarded as is.
        unsafe { Jemalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let new = unsafe { Jemalloc.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            count(layout.size(), -1);
            live_forget(ptr);
            count(new_size, 1);
            live_sample(new, new_size);
        }
        new
    }
}

/// Reads `TIDINGS_ALLOC_TRACE` (call once at start, before the load).
pub fn init() {
    init_live();
    let Ok(spec) = std::env::var("TIDINGS_ALLOC_TRACE") else {
        return;
    };
    let sizes = spec
        .split(',')
        .filter_map(|s| s.trim().parse::<usize>().ok());
    for (slot, size) in TRACED.iter().zip(sizes.filter(|s| *s > 0)) {
        slot.store(size, Ordering::Relaxed);
    }
}

/// Reads `TIDINGS_ALLOC_LIVE` (call once at start, before the load).
fn init_live() {
    if let Some(every) = std::env::var("TIDINGS_ALLOC_LIVE")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        LIVE_EVERY.store(every, Ordering::Relaxed);
    }
}

/// One reading as a JSON object: live blocks and bytes by size, glibc's heap figures, the traces so far.
pub fn reading() -> serde_json::Value {
    let mut sizes = Vec::new();
    let (mut live_blocks, mut live_bytes) = (0i64, 0i64);
    for b in 0..BUCKETS {
        let blocks = BLOCKS[b].load(Ordering::Relaxed);
        let bytes = BYTES[b].load(Ordering::Relaxed);
        live_blocks += blocks;
        live_bytes += bytes;
        if blocks != 0 || bytes != 0 {
            let size = if b == BUCKETS - 1 { 0 } else { b * 8 };
            sizes.push(serde_json::json!([size, blocks, bytes]));
        }
    }
    let traces: Vec<serde_json::Value> = TRACES
        .lock()
        .map(|t| {
            t.iter()
                .map(|(size, text)| serde_json::json!({"size": size, "backtrace": text}))
                .collect()
        })
        .unwrap_or_default();
    serde_json::json!({
        "live_blocks": live_blocks,
        "live_bytes": live_bytes,
        "malloc": malloc_figures(),
        "sizes": sizes,
        "traces": traces,
        "live": live_sites(),
        "live_every": LIVE_EVERY.load(Ordering::Relaxed),
    })
}

/// jemalloc's own counters (after an epoch advance, which refreshes them): bytes handed out in size classes,
/// in active pages, resident, and its metadata.
fn malloc_figures() -> serde_json::Value {
    use tikv_jemalloc_ctl::{epoch, stats};
    if epoch::advance().is_err() {
        return serde_json::Value::Null;
    }
    serde_json::json!({
        "allocator": "jemalloc",
        "allocated": stats::allocated::read().unwrap_or(0),
        "active": stats::active::read().unwrap_or(0),
        "resident": stats::resident::read().unwrap_or(0),
        "metadata": stats::metadata::read().unwrap_or(0),
        "mapped": stats::mapped::read().unwrap_or(0),
    })
}

/// Writes a reading to the file named by `TIDINGS_ALLOC_CENSUS` on every SIGUSR2 (a task on the current
/// tokio runtime).
pub fn spawn_dumper() {
    let Some(path) = std::env::var_os("TIDINGS_ALLOC_CENSUS") else {
        return;
    };
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut signals) = signal(SignalKind::user_defined2()) else {
            tracing::warn!("alloc census: cannot listen for SIGUSR2");
            return;
        };
        while signals.recv().await.is_some() {
            let line = format!("{}\n", reading());
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| f.write_all(line.as_bytes()));
            if let Err(error) = written {
                tracing::warn!(%error, "alloc census: cannot write the reading");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_keep_exact_sizes_and_share_the_large_ones() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1), 1);
        assert_eq!(bucket(8), 1);
        assert_eq!(bucket(9), 2);
        assert_eq!(bucket(EXACT_LIMIT), EXACT_LIMIT / 8);
        assert_eq!(bucket(EXACT_LIMIT + 1), BUCKETS - 1);
    }
}
