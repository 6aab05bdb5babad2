//! The [`Probe`]: runtime and actor lag sampled while the timeline runs.

use std::time::Duration;

use mesh_node::NodeHandle;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How often [`Probe`] samples.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// Measures, while the timeline runs, how late the runtime fires a timer (CPU saturation of
/// the whole process) and how long node actors take to answer `status` (queueing in front
/// of one actor), round-robin over the nodes up at t = 0.
#[derive(Debug)]
pub(super) struct Probe {
    /// Turns true to stop.
    stop: watch::Sender<bool>,
    /// Timer lags and `status` round trips, ms.
    task: JoinHandle<(Vec<f64>, Vec<f64>)>,
}

impl Probe {
    pub(super) fn start(nodes: Vec<NodeHandle>) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let (mut timer, mut actor) = (Vec::new(), Vec::new());
            for i in 0.. {
                let asleep = Instant::now();
                tokio::select! {
                    _ = tokio::time::sleep(PROBE_INTERVAL) => {}
                    _ = stopped.changed() => break,
                }
                let late = asleep.elapsed().saturating_sub(PROBE_INTERVAL);
                timer.push(late.as_secs_f64() * 1000.0);
                if nodes.is_empty() {
                    continue;
                }
                let asked = Instant::now();
                if nodes[i % nodes.len()].status().await.is_ok() {
                    actor.push(asked.elapsed().as_secs_f64() * 1000.0);
                }
            }
            (timer, actor)
        });
        Self { stop, task }
    }

    pub(super) async fn finish(self) -> (Vec<f64>, Vec<f64>) {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}
