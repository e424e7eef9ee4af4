//! A global allocator that refuses any single allocation above a cap, so that a length field taken on trust
//! fails the fuzz run instead of passing unnoticed.
//!
//! libFuzzer's own `-malloc_limit_mb` works only with a sanitizer's malloc hooks, which the stable toolchain
//! cannot link; this allocator is the substitute. The decoders are given the server's default limits (1 MB
//! messages and bodies), so the default cap of 8 MiB leaves room for buffer growth but not for a length
//! that was never checked. `TIDINGS_FUZZ_MAX_ALLOC_MB` overrides it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The cap when `TIDINGS_FUZZ_MAX_ALLOC_MB` is not set.
pub const DEFAULT_MAX_ALLOC_MB: usize = 8;

/// 0 until the first allocation reads the environment.
static CAP: AtomicUsize = AtomicUsize::new(0);

/// [`System`], aborting the process on an allocation larger than the cap (after printing its size and a
/// backtrace); libFuzzer reports the abort as a crash and saves the input.
pub struct CappedAlloc;

impl CappedAlloc {
    fn check(size: usize) {
        let cap = match CAP.load(Ordering::Relaxed) {
            0 => init_cap(),
            cap => cap,
        };
        if size > cap {
            over_cap(size, cap);
        }
    }
}

/// Reads the cap from the environment without allocating (the allocator cannot call itself).
fn init_cap() -> usize {
    // Until the environment is read, allocations of any size are allowed (the cap is a usize::MAX guard).
    CAP.store(usize::MAX, Ordering::Relaxed);
    let mb = std::env::var_os("TIDINGS_FUZZ_MAX_ALLOC_MB")
        .and_then(|v| v.to_str().and_then(|s| s.parse::<usize>().ok()))
        .filter(|&mb| mb > 0)
        .unwrap_or(DEFAULT_MAX_ALLOC_MB);
    let cap = mb.saturating_mul(1024 * 1024);
    CAP.store(cap, Ordering::Relaxed);
    cap
}

#[cold]
fn over_cap(size: usize, cap: usize) -> ! {
    // Further allocations (the message, the backtrace) are small; lift the cap so they cannot recurse here.
    CAP.store(usize::MAX, Ordering::Relaxed);
    eprintln!(
        "==tidings-fuzz== allocation of {size} bytes exceeds the cap of {cap} bytes \
         (TIDINGS_FUZZ_MAX_ALLOC_MB)\n{}",
        std::backtrace::Backtrace::force_capture()
    );
    std::process::abort();
}

// SAFETY: every method forwards to `System` unchanged after a size check that never touches the heap
// (except on the way to abort).
unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::check(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::check(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::check(new_size);
        System.realloc(ptr, layout, new_size)
    }
}
