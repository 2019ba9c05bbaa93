//! The controller runtime: what the four controllers share. How a controller runs (its
//! watch and reconcile task, the caches it reads, the context, errors, conditions, leader
//! election, the shutdown signal, metrics, the admin server, outbound HTTP, logging) and what
//! they do alike (converge the objects the operator owns, roll back a failed image, deliver
//! webhooks, read the one view of MaintenanceWindows).
pub mod admin;
pub mod api_time;
pub mod conditions;
pub mod context;
pub mod controller;
pub mod error;
pub mod http;
pub mod leader;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod owned;
pub mod rollout;
pub mod shutdown;
pub mod summary;
pub mod telemetry;
#[cfg(test)]
pub mod testing;
pub mod transport;
pub mod versions;
pub mod watch;
pub mod windows;

pub use context::{Context, Settings, apply_status, error_policy, field_manager, fresh, object_key};
pub use error::{Error, Result};
pub use shutdown::Shutdown;
