//! Progress of a publish or a fetch on a terminal: bytes, rows and rate, drawn on standard
//! error while the daemon works. The daemon reports its figures under an id the CLI picks
//! (`GET /v1/progress/{id}`); the CLI polls them a few times a second. Nothing is drawn, and
//! nothing polled, when standard error is not a terminal.

use std::future::Future;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mesh_node::progress::ProgressView;

use crate::client::Client;

/// Time between two polls of the daemon.
const POLL: Duration = Duration::from_millis(150);

/// What is being watched: the label and how the figures read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A publish: input bytes read (of a known total) and rows ingested.
    Publish,
    /// A fetch: stream bytes received (total unknown) and rows.
    Fetch,
}

/// A fresh progress id when standard error is a terminal, else `None` (no progress asked of
/// the daemon, none drawn).
pub(crate) fn id_for_terminal() -> Option<String> {
    std::io::stderr()
        .is_terminal()
        .then(|| hex::encode(rand::random::<[u8; 16]>()))
}

/// Awaits `work`; meanwhile, when `id` is set, polls the daemon's figures for it and draws
/// them on standard error under `label`. On success the bar is left showing the final
/// figures, which `last` reads from the result (the daemon forgets an operation once it
/// answered); on failure it is cleared, so the error stands alone.
pub(crate) async fn watch<T>(
    client: &Client,
    id: Option<&str>,
    kind: Kind,
    label: &str,
    work: impl Future<Output = anyhow::Result<T>>,
    last: impl FnOnce(&T) -> Option<ProgressView>,
) -> anyhow::Result<T> {
    let Some(id) = id else {
        return work.await;
    };
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    let template = match kind {
        Kind::Publish => {
            "{spinner} {prefix} {msg} [{bar:24}] {binary_bytes}/{binary_total_bytes} read, {binary_bytes_per_sec}, {elapsed}"
        }
        Kind::Fetch => {
            "{spinner} {prefix} {msg} {binary_bytes} received, {binary_bytes_per_sec}, {elapsed}"
        }
    };
    bar.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .progress_chars("=> "),
    );
    bar.set_prefix(crate::output::clean(label).into_owned());
    bar.set_message("0 rows");
    bar.enable_steady_tick(Duration::from_millis(100));
    let path = format!("/v1/progress/{id}");
    let mut ticks = tokio::time::interval(POLL);
    tokio::pin!(work);
    let result = loop {
        tokio::select! {
            result = &mut work => break result,
            _ = ticks.tick() => {
                // Not there yet (or already gone): nothing to show this time.
                if let Ok(view) = client.get::<ProgressView>(&path).await {
                    show(&bar, &view);
                }
            }
        }
    };
    match &result {
        Ok(value) => {
            if let Some(view) = last(value) {
                show(&bar, &view);
            }
            bar.finish();
        }
        Err(_) => bar.finish_and_clear(),
    }
    result
}

/// Puts the daemon's figures on the bar.
fn show(bar: &ProgressBar, view: &ProgressView) {
    if let Some(total) = view.total_bytes
        && bar.length() != Some(total)
    {
        bar.set_length(total);
    }
    bar.set_position(view.bytes);
    bar.set_message(format!("{} rows", view.rows));
}
