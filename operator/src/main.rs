//! herdwatch operator.
fn main() {}
