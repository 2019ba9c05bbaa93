//! What the controllers share: context, errors, conditions, metrics, the admin server,
//! leader election and logging.
pub mod admin;
pub mod conditions;
pub mod context;
pub mod error;
pub mod http;
pub mod leader;
pub mod memory;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;
pub mod versions;

pub use context::{Context, Settings, apply_status, error_policy, field_manager, fresh, object_key};
pub use error::{Error, Result};
pub use shutdown::Shutdown;
