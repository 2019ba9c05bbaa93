//! The ColonyServer controller.
