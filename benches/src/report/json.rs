//! The JSON report of a run: the figures of the Markdown report, built as typed values and
//! written by `serde_json`. Every key of the document is a field name in this file, in the
//! order it is written. Floats are written at full precision; one that is not finite (a
//! median or percentile of no samples, a ratio to nothing) is written as `null`.

use serde::Serialize;

use super::{Amplification, FlushSamples, Row, Run, flush_ratio, mb_per_s, percentile};

#[derive(Debug, Serialize)]
struct Document<'a> {
    date: &'a str,
    loadavg_start: &'a str,
    loadavg_end: &'a str,
    blocks_per_workload: u64,
    rounds: usize,
    file_store: &'a str,
    workloads: Vec<Workload>,
    flush_latency_us: FlushLatency,
    flush_latency_written_us: FlushLatency,
    device_writes_per_unique_write: DeviceWrites,
}

/// Medians over rounds for one store kind, thread count and workload.
#[derive(Debug, Serialize)]
struct Workload {
    store: &'static str,
    threads: usize,
    workload: &'static str,
    engine_mb_per_s: f64,
    engine_blocks_per_s: f64,
    raw_mb_per_s: f64,
    raw_blocks_per_s: f64,
    engine_to_raw: f64,
    /// `null` for reads.
    device_writes_per_write: Option<f64>,
    store_flushes_per_1k_writes: Option<f64>,
}

/// Write + flush latencies in microseconds, every round pooled.
#[derive(Debug, Serialize)]
struct FlushLatency {
    samples: usize,
    engine_p50: f64,
    engine_p99: f64,
    raw_fdatasync_p50: f64,
    raw_fdatasync_p99: f64,
    p50_ratio: f64,
    store_flushes: u64,
    meta_writes: u64,
}

#[derive(Debug, Serialize)]
struct DeviceWrites {
    seq_stats: f64,
    seq_counted: f64,
    random_stats: f64,
    random_counted: f64,
    with_close_counted: f64,
    flushes_with_close: u64,
}

impl Run {
    pub(crate) fn json(&self) -> String {
        let document = Document {
            date: &self.date,
            loadavg_start: &self.load_start,
            loadavg_end: &self.load_end,
            blocks_per_workload: self.blocks,
            rounds: self.rounds,
            file_store: &self.file_engine,
            workloads: self.rows().iter().map(Workload::new).collect(),
            flush_latency_us: FlushLatency::new(&self.flush),
            flush_latency_written_us: FlushLatency::new(&self.flush_written),
            device_writes_per_unique_write: DeviceWrites::new(&self.amplification),
        };
        let mut text =
            serde_json::to_string_pretty(&document).expect("plain fields always serialize");
        text.push('\n');
        text
    }
}

impl Workload {
    fn new(r: &Row) -> Self {
        Self {
            store: r.kind.name(),
            threads: r.threads,
            workload: r.pattern.name(),
            engine_mb_per_s: mb_per_s(r.engine_blocks_per_s),
            engine_blocks_per_s: r.engine_blocks_per_s,
            raw_mb_per_s: mb_per_s(r.raw_blocks_per_s),
            raw_blocks_per_s: r.raw_blocks_per_s,
            engine_to_raw: r.ratio,
            device_writes_per_write: r.device_writes,
            store_flushes_per_1k_writes: r.flushes_per_k,
        }
    }
}

impl FlushLatency {
    fn new(f: &FlushSamples) -> Self {
        Self {
            samples: f.engine_us.len(),
            engine_p50: percentile(&f.engine_us, 50),
            engine_p99: percentile(&f.engine_us, 99),
            raw_fdatasync_p50: percentile(&f.raw_us, 50),
            raw_fdatasync_p99: percentile(&f.raw_us, 99),
            p50_ratio: flush_ratio(f, 50),
            store_flushes: f.store_flushes,
            meta_writes: f.meta_writes,
        }
    }
}

impl DeviceWrites {
    fn new(a: &Amplification) -> Self {
        Self {
            seq_stats: a.seq_stats,
            seq_counted: a.seq_counted,
            random_stats: a.random_stats,
            random_counted: a.random_counted,
            with_close_counted: a.with_close_counted,
            flushes_with_close: a.flushes_with_close,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::super::{Sample, StoreKind};
    use super::*;
    use crate::workload::Pattern;

    fn sample(pattern: Pattern, engine_s: f64) -> Sample {
        Sample {
            kind: StoreKind::Memory,
            threads: 1,
            pattern,
            engine_s,
            raw_s: 0.5,
            device_writes: pattern.is_write().then_some(1.25),
            flushes_per_k: pattern.is_write().then_some(2.0),
        }
    }

    fn run(date: &str) -> Run {
        Run {
            date: date.to_owned(),
            load_start: "0.10 0.20 0.30".to_owned(),
            load_end: "1.00 0.50 0.25".to_owned(),
            blocks: 1000,
            rounds: 1,
            file_engine: "io_uring".to_owned(),
            samples: vec![
                sample(Pattern::UniqueSeq, 1.0),
                sample(Pattern::ReadSeq, 0.25),
            ],
            flush: FlushSamples {
                engine_us: vec![30.0, 10.0],
                raw_us: vec![20.0, 20.0],
                store_flushes: 2,
                meta_writes: 3,
            },
            // No samples: every percentile is NaN.
            flush_written: FlushSamples::default(),
            amplification: Amplification {
                seq_stats: 1.0,
                seq_counted: 1.5,
                random_stats: f64::INFINITY,
                random_counted: 1.0,
                with_close_counted: 1.0,
                flushes_with_close: 7,
            },
        }
    }

    fn parse(run: &Run) -> Value {
        serde_json::from_str(&run.json()).expect("the report is JSON")
    }

    /// Asserts that `value` is an object with exactly the keys `expected`, in any order.
    fn assert_keys(value: &Value, expected: &[&str]) {
        let object = value.as_object().expect("an object");
        let found: Vec<&str> = object.keys().map(String::as_str).collect();
        let mut expected = expected.to_vec();
        expected.sort_unstable();
        assert_eq!(found, expected);
    }

    #[test]
    fn document_parses_with_every_key() {
        let doc = parse(&run("today"));
        let top = [
            "date",
            "loadavg_start",
            "loadavg_end",
            "blocks_per_workload",
            "rounds",
            "file_store",
            "workloads",
            "flush_latency_us",
            "flush_latency_written_us",
            "device_writes_per_unique_write",
        ];
        assert_keys(&doc, &top);
        let workload = [
            "store",
            "threads",
            "workload",
            "engine_mb_per_s",
            "engine_blocks_per_s",
            "raw_mb_per_s",
            "raw_blocks_per_s",
            "engine_to_raw",
            "device_writes_per_write",
            "store_flushes_per_1k_writes",
        ];
        let workloads = doc["workloads"].as_array().expect("an array");
        assert_eq!(workloads.len(), 2);
        for w in workloads {
            assert_keys(w, &workload);
        }
        let flush = [
            "samples",
            "engine_p50",
            "engine_p99",
            "raw_fdatasync_p50",
            "raw_fdatasync_p99",
            "p50_ratio",
            "store_flushes",
            "meta_writes",
        ];
        assert_keys(&doc["flush_latency_us"], &flush);
        assert_keys(&doc["flush_latency_written_us"], &flush);
        let amplification = [
            "seq_stats",
            "seq_counted",
            "random_stats",
            "random_counted",
            "with_close_counted",
            "flushes_with_close",
        ];
        let writes = &doc["device_writes_per_unique_write"];
        assert_keys(writes, &amplification);
    }

    #[test]
    fn figures_keep_their_types_and_non_finite_ones_are_null() {
        let doc = parse(&run("today"));
        assert_eq!(doc["blocks_per_workload"], 1000);
        assert_eq!(doc["rounds"], 1);
        assert_eq!(doc["file_store"], "io_uring");
        let write = &doc["workloads"][0];
        assert_eq!(write["store"], "memory");
        assert_eq!(write["threads"], 1);
        assert_eq!(write["workload"], "unique-seq");
        assert_eq!(write["engine_blocks_per_s"], 1000.0);
        assert_eq!(write["engine_mb_per_s"], 4.096);
        assert_eq!(write["raw_blocks_per_s"], 2000.0);
        assert_eq!(write["engine_to_raw"], 0.5);
        assert_eq!(write["device_writes_per_write"], 1.25);
        assert_eq!(write["store_flushes_per_1k_writes"], 2.0);
        let read = &doc["workloads"][1];
        assert_eq!(read["workload"], "read-seq");
        assert_eq!(read["engine_to_raw"], 2.0);
        assert!(read["device_writes_per_write"].is_null());
        assert!(read["store_flushes_per_1k_writes"].is_null());
        let sparse = &doc["flush_latency_us"];
        assert_eq!(sparse["samples"], 2);
        assert_eq!(sparse["engine_p50"], 10.0);
        assert_eq!(sparse["engine_p99"], 30.0);
        assert_eq!(sparse["p50_ratio"], 0.5);
        assert_eq!(sparse["meta_writes"], 3);
        let written = &doc["flush_latency_written_us"];
        assert_eq!(written["samples"], 0);
        assert!(written["engine_p50"].is_null() && written["p50_ratio"].is_null());
        let writes = &doc["device_writes_per_unique_write"];
        assert!(writes["random_stats"].is_null());
        assert_eq!(writes["seq_counted"], 1.5);
        assert_eq!(writes["flushes_with_close"], 7);
    }

    #[test]
    fn json_strings_are_escaped() {
        let date = "a\"b\\c\n";
        let text = run(date).json();
        assert!(text.contains(r#""date": "a\"b\\c\n","#), "{text}");
        assert_eq!(parse(&run(date))["date"], date);
    }
}
