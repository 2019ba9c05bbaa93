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
