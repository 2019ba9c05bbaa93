//! The ColonyServer controller: runs the server (Deployment, Service), probes its health and
//! SLOs, and flips the direct-processing fallback ConfigMap.
pub mod builders;
pub mod fallback;
pub mod health;
pub mod monitor;
pub mod outbox;
mod reconcile;
#[cfg(test)]
mod seams;
pub mod status;

pub use reconcile::start;

pub const NAME: &str = "colonyserver";
