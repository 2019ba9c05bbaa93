//! The process-wide stop signal every controller and background task listens to.
use tokio::sync::watch;

/// A clonable shutdown signal.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// The signal raised when `true` is sent on the channel of `rx`.
    pub fn new(rx: watch::Receiver<bool>) -> Self {
        Self(rx)
    }

    /// Whether shutdown has been asked for.
    pub fn requested(&self) -> bool {
        *self.0.borrow()
    }

    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}
