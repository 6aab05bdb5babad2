//! Scenario runner.
fn main() {}
