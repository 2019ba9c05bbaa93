//! The ColonyServer controller: runs the server (Deployment, Service), probes its health and
//! SLOs, and flips the direct-processing fallback ConfigMap.
pub mod builders;
pub mod fallback;
pub mod health;
pub mod monitor;
mod reconcile;
pub mod status;

pub use reconcile::start;

pub const NAME: &str = "colonyserver";
