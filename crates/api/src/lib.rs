//! herdwatch's custom resources.
