//! The four controllers, one folder each: pure decisions, reconcile (IO), status. What they
//! share is the runtime (`crate::runtime`).
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::task::JoinHandle;

use crate::runtime::windows;
use crate::runtime::{Context, Shutdown};

pub mod colonyserver;
pub mod financebee;
pub mod keyrotation;
pub mod maintenancewindow;

/// The controllers in the order [`start_all`] returns their tasks.
pub const NAMES: [&str; 4] = [colonyserver::NAME, financebee::NAME, keyrotation::NAME, maintenancewindow::NAME];

/// Starts every controller; returns their tasks and their cache-synced signals.
/// `windows` fills the view of MaintenanceWindows in `ctx`; the MaintenanceWindow controller
/// starts last, so that every other controller subscribed to the view's events before its
/// watch begins.
pub fn start_all(
    ctx: Arc<Context>,
    windows: windows::WindowFeed,
    shutdown: Shutdown,
) -> (Vec<JoinHandle<()>>, Vec<BoxFuture<'static, ()>>) {
    let all = [
        colonyserver::start(ctx.clone(), shutdown.clone()),
        financebee::start(ctx.clone(), shutdown.clone()),
        keyrotation::start(ctx.clone(), shutdown.clone()),
        maintenancewindow::start(ctx, windows, shutdown),
    ];
    all.into_iter().map(|s| (s.handle, s.synced)).unzip()
}
