//! The ColonyServer controller.
pub mod fallback;
