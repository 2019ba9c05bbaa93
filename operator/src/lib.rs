//! colony-operator: the Colony OS runbook as Kubernetes controllers.
pub mod api;
pub mod colonyos;
pub mod controllers;
pub mod duration;
pub mod operator;
pub mod runtime;
pub mod schedule;
