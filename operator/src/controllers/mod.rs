//! One module per controller: pure decisions, reconcile (IO), status.
pub mod colonyserver;
