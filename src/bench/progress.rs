//! The live progress of a load: a bar on a terminal, else a plain line every 5 seconds.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::load::Recorder;

/// The progress bar on a terminal, else a plain line every 5 seconds.
pub(super) struct Progress {
    ticker: tokio::task::JoinHandle<()>,
    bar: indicatif::ProgressBar,
}

impl Progress {
    pub(super) fn start(plugin: &str, total: Option<u64>, recorder: Arc<Recorder>) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let bar = match (terminal, total) {
            (false, _) => indicatif::ProgressBar::hidden(),
            (true, Some(total)) => indicatif::ProgressBar::new(total),
            (true, None) => indicatif::ProgressBar::new_spinner(),
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} ADDs {msg}",
            )
            .expect("a valid template"),
        );
        bar.set_prefix(plugin.to_string());
        let plugin = plugin.to_string();
        let ticker = {
            let bar = bar.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                let mut last_line = Instant::now();
                let mut window = std::collections::VecDeque::from([(Instant::now(), 0u64)]);
                loop {
                    tick.tick().await;
                    let adds = recorder.adds.load(Ordering::Relaxed);
                    let dels = recorder.dels.load(Ordering::Relaxed);
                    window.push_back((Instant::now(), adds));
                    while window.len() > 8 {
                        window.pop_front();
                    }
                    let (then, before) = window[0];
                    let rate = (adds - before) as f64 / then.elapsed().as_secs_f64().max(0.001);
                    bar.set_position(adds);
                    bar.set_message(format!("{rate:.0} ADD/s, {dels} DELs"));
                    if !terminal && last_line.elapsed() >= Duration::from_secs(5) {
                        last_line = Instant::now();
                        eprintln!(
                            "{plugin}: {:.0} s, {adds} ADDs, {dels} DELs, {rate:.0} ADD/s",
                            started.elapsed().as_secs_f64()
                        );
                    }
                }
            })
        };
        Progress { ticker, bar }
    }

    pub(super) fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}
