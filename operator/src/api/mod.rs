//! The custom resources of `colony.zyeute.io/v1alpha1`.
