//! `leadstream-aggregator`.
fn main() {}
