//! Log output of the programs built on the daemon (the `meshnode` binary, the simulations).

use tracing_subscriber::EnvFilter;

/// Sends `tracing` events to standard error, filtered by the directives in the environment
/// variable `env_var` (`RUST_LOG` syntax) or, when it is unset or invalid, by `default`.
pub fn init(env_var: &str, default: &str) {
    let filter = EnvFilter::try_from_env(env_var).unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
