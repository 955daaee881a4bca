//! herdwatch node agent.
fn main() {}
