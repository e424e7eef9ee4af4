//! Shared pieces of the fuzz targets: the allocation cap every target installs, a tokio runtime, and the
//! embedded-mode application and node the async targets drive.
//!
//! The targets live in `fuzz_targets/`; `scripts/fuzz.sh` builds them with coverage instrumentation and runs
//! each from its seed corpus in `corpus/<target>/`.

pub mod alloc_cap;
pub mod node;

pub use alloc_cap::CappedAlloc;

/// Installs [`CappedAlloc`] as the global allocator of a fuzz target binary.
///
/// Every target calls this once at its top level, so that an allocation past the cap aborts the run (and
/// libFuzzer saves the input) whichever decoder asked for it.
#[macro_export]
macro_rules! cap_allocations {
    () => {
        #[global_allocator]
        static ALLOCATOR: $crate::CappedAlloc = $crate::CappedAlloc;
    };
}
