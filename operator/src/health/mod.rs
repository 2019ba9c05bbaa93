//! HTTP health probing and SLO evaluation of ColonyOS servers.
