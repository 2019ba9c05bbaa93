//! What the controllers share: context, errors, metrics, admin server, leader election.
