//! Returning freed heap to the operating system.
//!
//! A watch's initial list (thousands of Secrets' metadata in a busy cluster) and a burst of
//! reconciles allocate and free tens of MiB. glibc keeps freed memory in its per-thread
//! arenas, so without a trim the resident set stays at the burst's peak for the life of the
//! process. `malloc_trim(0)` hands the free pages back; it takes a few milliseconds, so a
//! periodic call costs nothing measurable at rest.
use std::time::Duration;

/// How often freed heap is returned.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(30);

/// One malloc arena for the whole process, set before any thread starts (glibc only;
/// elsewhere a no-op).
///
/// glibc gives threads their own arenas (up to eight per core) so that they do not contend
/// for one lock. The operator's threads (two runtime workers, the blocking pool's resolver
/// threads) allocate little and seldom at the same time, but every arena keeps its own
/// fragments between the objects that stay (cache entries, metric series), which a trim cannot
/// return. Measured with the bench fleet (1,000 bees, 100 servers), an operator started into
/// it settled at 68-69 MiB resident with the default arenas and at 58-59 MiB with one.
/// A `MALLOC_ARENA_MAX` in the environment still wins: glibc reads it before `main`, and
/// this call leaves it alone.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
            return;
        }
        unsafe extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        /// `M_ARENA_MAX` of glibc's `<malloc.h>`.
        const M_ARENA_MAX: std::ffi::c_int = -8;
        // SAFETY: mallopt takes no pointers; called once, before the runtime's threads exist.
        unsafe {
            mallopt(M_ARENA_MAX, 1);
        }
    }
}

/// Returns the heap that is free back to the operating system (glibc only; elsewhere a no-op).
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim takes no pointers and may be called from any thread at any time.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// Trims every [`TRIM_INTERVAL`] until the future is dropped.
pub async fn trim_periodically() {
    let mut tick = tokio::time::interval(TRIM_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        trim();
    }
}
