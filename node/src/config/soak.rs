//! A seeded mutation soak of [`NodeConfig::load`]: the shipped example config with values
//! swapped for hostile ones (zeros, negatives, the largest integers, wrong types, long
//! strings), lines dropped, doubled or cut, bytes inserted. Every mutant either loads into a
//! config whose derived settings can all be computed (and which writes out and reads back as
//! the same config), or is refused with an error that names the file or the key. Never a
//! panic: a careless edit of `meshnode.toml` must not crash the node later either.

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use super::{ConfigError, NodeConfig};

const EXAMPLE: &str = include_str!("../../../configs/node-example.toml");

/// Values that break ranges and types.
const HOSTILE: &[&str] = &[
    "0",
    "1",
    "-1",
    "18446744073709551615",
    "9223372036854775807",
    "4294967295",
    "65535",
    "65536",
    "99999999999999999999999",
    "1e309",
    "nan",
    "-0.0",
    "\"\"",
    "\"x\"",
    "\"0.0.0.0:0\"",
    "\"[::1]:65535\"",
    "\"127.0.0.1:99999\"",
    "[]",
    "[[]]",
    "{}",
    "true",
    "'''\n'''",
];

/// One mutation of `text`.
fn mutate(text: &str, rng: &mut ChaCha8Rng) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let assignments: Vec<usize> = (0..lines.len())
        .filter(|i| {
            let l = lines[*i].trim_start();
            !l.starts_with('#') && l.contains('=')
        })
        .collect();
    if assignments.is_empty() || lines.is_empty() {
        return format!("{text}\n");
    }
    match rng.random_range(0..6) {
        // A value replaced by a hostile one.
        0 | 1 => {
            let at = assignments[rng.random_range(0..assignments.len())];
            let key = lines[at].split('=').next().unwrap_or_default().to_owned();
            let value = if rng.random_range(0..8) == 0 {
                format!("\"{}\"", "y".repeat(rng.random_range(0..100_000)))
            } else {
                HOSTILE[rng.random_range(0..HOSTILE.len())].to_owned()
            };
            lines[at] = format!("{key}= {value}");
        }
        // A line dropped or doubled.
        2 => {
            lines.remove(rng.random_range(0..lines.len()));
        }
        3 => {
            let at = rng.random_range(0..lines.len());
            lines.insert(at, lines[at].clone());
        }
        // A line moved under another table.
        4 => {
            let from = assignments[rng.random_range(0..assignments.len())];
            let line = lines.remove(from);
            let to = rng.random_range(0..=lines.len());
            lines.insert(to, line);
        }
        // A byte inserted, or the file cut short.
        _ => {
            let mut bytes = lines.join("\n").into_bytes();
            if rng.random_range(0..2) == 0 {
                let at = rng.random_range(0..=bytes.len());
                let noise = b"=[]{}\"'\\\n#.\0";
                bytes.insert(at, noise[rng.random_range(0..noise.len())]);
            } else {
                bytes.truncate(rng.random_range(0..=bytes.len()));
            }
            return String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    lines.join("\n")
}

/// Everything the node derives from a loaded config.
fn derive_all(config: &NodeConfig) {
    let own = mesh_protocol::Identity::from_secret_bytes([7; 32]).public_key();
    let mut messages = config.contracts.budget().message_table::<u8>();
    for now_ms in [0, 1_700_000_000_000, u64::MAX] {
        let _ = messages.take(&1, now_ms);
    }
    let _ = config.contracts.retention();
    let _ = config.contracts.poll_intervals();
    let link = config.data_link.link();
    let _ = (link.bdp(), link.stream_window());
    let _ = crate::dataplane::tls::Windows::fetching(link);
    let _ = crate::dataplane::tls::Windows::serving(link);
    let _ = crate::dataplane::DataPlaneConfig::from_node(config);
    let _ = config.catalog_quota(own).share(4096);
    let _ = config.auto_archive().due(u64::MAX);
    let _ = config.disk_reserve();
    let _ = config.sync_interval();
}

#[test]
fn mutants_of_the_example_config_load_sanely_or_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meshnode.toml");
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_c0f1);
    let (mut loaded, mut refused) = (0, 0);
    for round in 0..1500 {
        let mut text = EXAMPLE.to_owned();
        for _ in 0..rng.random_range(1..=3) {
            text = mutate(&text, &mut rng);
        }
        std::fs::write(&path, &text).unwrap();
        match NodeConfig::load(&path) {
            Ok(config) => {
                derive_all(&config);
                let again: NodeConfig = toml::from_str(&config.to_toml())
                    .unwrap_or_else(|e| panic!("round {round}: written back unreadable: {e}"));
                assert_eq!(again, config, "round {round}");
                loaded += 1;
            }
            Err(e) => {
                let message = e.to_string();
                let named = match &e {
                    ConfigError::Invalid { key, .. } => message.contains(key),
                    _ => message.contains(&path.display().to_string()),
                };
                assert!(named, "round {round}: {message}\n{text}");
                refused += 1;
            }
        }
    }
    // Both sides were exercised.
    assert!(
        loaded > 100 && refused > 100,
        "{loaded} loaded, {refused} refused"
    );
}
