//! What a run measured, as the summary prints it and `--json` writes it.

use std::collections::BTreeMap;

use serde::Serialize;

use super::history::{Ledger, Overlap, Shared};

/// Latency of one verb over a run, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    pub count: usize,
    pub median_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// The nearest-rank percentiles of `samples` (milliseconds).
    pub fn of(samples: &[f64]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank =
            |q: f64| sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
        Latency {
            count: sorted.len(),
            median_ms: rank(0.5),
            p95_ms: rank(0.95),
            p99_ms: rank(0.99),
            max_ms: sorted[sorted.len() - 1],
        }
    }
}

/// A failed call, counted by its CNI error code, with the first message seen.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Failures {
    pub count: u64,
    pub example: String,
}

/// The figures of one IPAM (ipledger or host-local) under the load.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Figures {
    pub plugin: String,
    /// Seconds to attach every flow's first `hold` pods, and how many ADDs that took.
    pub fill_seconds: f64,
    pub fill_adds: usize,
    /// Seconds of the churn, and its operations (each a detach and an attach).
    pub churn_seconds: f64,
    pub churn_operations: usize,
    /// ADDs per second over fill and churn.
    pub adds_per_second: f64,
    /// ADDs per second during the fill, where nothing is detached.
    pub fill_adds_per_second: f64,
    /// ADDs and DELs per second over fill and churn.
    pub operations_per_second: f64,
    pub add: Latency,
    pub del: Latency,
    /// Pods deleted without a DEL (the controller's GC must release their addresses).
    pub vanished: u64,
    /// Failed calls by CNI error code (`"11"`: try again later).
    pub errors: BTreeMap<String, Failures>,
    /// What the API saw of the load (ipledger only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiFigures>,
}

/// The API requests of the load and what they cost.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiFigures {
    /// Where the counts come from: `server` (the emulator's request log) or `agents`
    /// (the agents' own counters, against a cluster).
    pub source: String,
    /// IPBlock creates, updates and deletes, refused ones included.
    pub ledger_writes: u64,
    /// Ledger writes refused with 409 Conflict (each one re-read and retried).
    pub conflicts: u64,
    pub writes_per_add: f64,
    /// Ledger writes per ADD or DEL.
    pub writes_per_operation: f64,
    pub conflicts_per_operation: f64,
}

/// Resident memory, in KiB.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Memory {
    /// Agent processes measured and simulated nodes per process.
    pub agent_processes: usize,
    pub nodes_per_process: usize,
    /// The largest agent process's peak (VmHWM).
    pub agent_peak_kib: u64,
    /// The mean of the agent processes' peaks.
    pub agent_mean_peak_kib: u64,
    /// The controller process's peak, when the bench ran it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller_peak_kib: Option<u64>,
}

/// How the run ended for the ledger and the pool status.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Convergence {
    /// Seconds from the last vanished pod's deletion until the API's records were the
    /// live attachments exactly; `None` when they never were within the timeout.
    pub gc_seconds: Option<f64>,
    /// Seconds from then until the pool's status showed that count.
    pub status_seconds: Option<f64>,
    /// Live attachments at the end, and the API objects holding them.
    pub live: usize,
    pub blocks: usize,
    pub pods: usize,
}

/// The two verdicts: nothing held twice, nothing leaked.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdicts {
    /// From the recorded history: two live attachments with one address at once.
    pub overlaps: Vec<Overlap>,
    /// From the API at the end: one address in two records.
    pub shared: Vec<Shared>,
    /// From the API at the end, after GC: records of attachments that are not live, and
    /// live attachments without a record.
    pub ledger: Ledger,
}

impl Verdicts {
    /// Zero duplicates.
    pub fn no_duplicates(&self) -> bool {
        self.overlaps.is_empty() && self.shared.is_empty() && self.ledger.lost.is_empty()
    }

    /// Zero leaks.
    pub fn no_leaks(&self) -> bool {
        self.ledger.leaked.is_empty()
    }

    pub fn passed(&self) -> bool {
        self.no_duplicates() && self.no_leaks()
    }
}

/// The whole report of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub settings: serde_json::Value,
    pub ipledger: Figures,
    pub memory: Memory,
    pub convergence: Convergence,
    pub verdicts: Verdicts,
    /// host-local through the same driver in the same run, with `--compare host-local`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_local: Option<Figures>,
    /// ipledger's figure over host-local's, for each figure compared.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ratios: BTreeMap<String, f64>,
    pub passed: bool,
}

impl Report {
    /// Fills `ratios` from the two figures.
    pub fn compare(&mut self) {
        let Some(theirs) = &self.host_local else {
            return;
        };
        let ours = &self.ipledger;
        let mut ratio = |name: &str, a: f64, b: f64| {
            if b > 0.0 {
                self.ratios.insert(name.into(), a / b);
            }
        };
        ratio(
            "addsPerSecond",
            ours.adds_per_second,
            theirs.adds_per_second,
        );
        ratio("addMedian", ours.add.median_ms, theirs.add.median_ms);
        ratio("addP99", ours.add.p99_ms, theirs.add.p99_ms);
        ratio("delMedian", ours.del.median_ms, theirs.del.median_ms);
        ratio("delP99", ours.del.p99_ms, theirs.del.p99_ms);
    }

    /// The human summary.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let mut line = |text: String| {
            out.push_str(&text);
            out.push('\n');
        };
        line(
            "| plugin | ADD/s | ops/s | ADD median / p95 / p99 / max ms | DEL median / p99 ms | errors |"
                .into(),
        );
        line("|---|---|---|---|---|---|".into());
        for figures in std::iter::once(&self.ipledger).chain(&self.host_local) {
            let errors: u64 = figures.errors.values().map(|f| f.count).sum();
            line(format!(
                "| {} | {:.0} | {:.0} | {:.2} / {:.2} / {:.2} / {:.2} | {:.2} / {:.2} | {errors} |",
                figures.plugin,
                figures.adds_per_second,
                figures.operations_per_second,
                figures.add.median_ms,
                figures.add.p95_ms,
                figures.add.p99_ms,
                figures.add.max_ms,
                figures.del.median_ms,
                figures.del.p99_ms,
            ));
        }
        for (name, ratio) in &self.ratios {
            line(format!("  {name}: ipledger {ratio:.2}× host-local"));
        }
        let ours = &self.ipledger;
        line(format!(
            "fill {:.2} s ({} ADDs, {:.0} ADD/s), churn {:.2} s ({} operations), {} pods vanished without DEL",
            ours.fill_seconds,
            ours.fill_adds,
            ours.fill_adds_per_second,
            ours.churn_seconds,
            ours.churn_operations,
            ours.vanished
        ));
        for (code, failures) in &ours.errors {
            line(format!(
                "  error {code}: {} × ({})",
                failures.count, failures.example
            ));
        }
        if let Some(api) = &ours.api {
            line(format!(
                "API ({}): {} ledger writes, {:.2} per ADD, {:.2} per ADD or DEL; {} conflicts ({:.3} per operation)",
                api.source,
                api.ledger_writes,
                api.writes_per_add,
                api.writes_per_operation,
                api.conflicts,
                api.conflicts_per_operation
            ));
        }
        let memory = &self.memory;
        line(format!(
            "memory: agent peak {} KiB (mean {} KiB over {} processes of {} node(s)){}",
            memory.agent_peak_kib,
            memory.agent_mean_peak_kib,
            memory.agent_processes,
            memory.nodes_per_process,
            memory
                .controller_peak_kib
                .map(|kib| format!(", controller peak {kib} KiB"))
                .unwrap_or_default()
        ));
        let seconds =
            |s: Option<f64>| s.map_or("never (timed out)".into(), |s| format!("{s:.2} s"));
        let convergence = &self.convergence;
        line(format!(
            "converged: ledger = live attachments after {}, pool status after {} more; {} live, {} blocks, {} pods",
            seconds(convergence.gc_seconds),
            seconds(convergence.status_seconds),
            convergence.live,
            convergence.blocks,
            convergence.pods
        ));
        let verdicts = &self.verdicts;
        line(format!(
            "verdict duplicates: {} ({} overlapping in the history, {} addresses in two records, {} live without a record)",
            if verdicts.no_duplicates() {
                "PASS"
            } else {
                "FAIL"
            },
            verdicts.overlaps.len(),
            verdicts.shared.len(),
            verdicts.ledger.lost.len()
        ));
        for overlap in verdicts.overlaps.iter().take(5) {
            line(format!(
                "  {} held by {} and, from {:.3} s, by {}",
                overlap.address, overlap.first, overlap.at_seconds, overlap.second
            ));
        }
        for shared in verdicts.shared.iter().take(5) {
            line(format!(
                "  {} recorded for {}",
                shared.address,
                shared.holders.join(" and ")
            ));
        }
        line(format!(
            "verdict leaks: {} ({} records of attachments that are not live)",
            if verdicts.no_leaks() { "PASS" } else { "FAIL" },
            verdicts.ledger.leaked.len()
        ));
        for leaked in verdicts.ledger.leaked.iter().take(5) {
            line(format!("  {leaked}"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<f64> = (1..=100).map(f64::from).rev().collect();
        let latency = Latency::of(&samples);
        assert_eq!(latency.count, 100);
        assert_eq!(latency.median_ms, 50.0);
        assert_eq!(latency.p95_ms, 95.0);
        assert_eq!(latency.p99_ms, 99.0);
        assert_eq!(latency.max_ms, 100.0);
        assert_eq!(Latency::of(&[7.0]).p99_ms, 7.0);
        assert_eq!(Latency::of(&[]), Latency::default());
    }

    #[test]
    fn ratios_are_ours_over_theirs() {
        let mut report = Report {
            ipledger: Figures {
                adds_per_second: 300.0,
                add: Latency::of(&[4.0]),
                ..Default::default()
            },
            host_local: Some(Figures {
                adds_per_second: 600.0,
                add: Latency::of(&[2.0]),
                ..Default::default()
            }),
            ..Default::default()
        };
        report.compare();
        assert_eq!(report.ratios["addsPerSecond"], 0.5);
        assert_eq!(report.ratios["addMedian"], 2.0);
        assert!(!report.ratios.contains_key("delMedian"));
    }
}
