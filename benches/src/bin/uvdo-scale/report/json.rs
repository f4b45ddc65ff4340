//! The JSON report of a run: per size its shape, checks and every child's figure; per table
//! row its values and growth per GiB; the floors. Built as typed values and written by
//! `serde_json`; every key of the document is a field name in this file, in the order it is
//! written, except the figures', which are the record's keys (`write.rss_kib`), in key order.
//! Floats are written at full precision; one that is not finite is written as `null`.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Number, Value};

use super::{Floor, ROWS, Row, Run, SizeResult};

#[derive(Debug, Serialize)]
struct Document<'a> {
    date: &'a str,
    smoke: bool,
    loadavg_start: &'a str,
    loadavg_end: &'a str,
    dir: &'a str,
    wall_s: f64,
    sizes: Vec<SizeJson<'a>>,
    rows: Vec<RowJson>,
    floors: Vec<FloorJson>,
}

#[derive(Debug, Serialize)]
struct SizeJson<'a> {
    size_bytes: u64,
    slab_blocks: u64,
    journal_blocks: u64,
    index_bytes: u64,
    wall_s: f64,
    /// The phase that failed, and how; `null` when every phase ran.
    error: Option<&'a str>,
    checks: Vec<String>,
    figures: BTreeMap<&'a str, Value>,
}

/// One row of the table: its value at each size, and its growth per GiB between
/// consecutive sizes; `null` where a size did not measure it.
#[derive(Debug, Serialize)]
struct RowJson {
    figure: &'static str,
    unit: &'static str,
    values: Vec<Option<f64>>,
    growth_per_gib: Vec<Option<f64>>,
}

#[derive(Debug, Serialize)]
struct FloorJson {
    floor: String,
    measured: String,
    derived_from: String,
    verdict: &'static str,
}

impl Run {
    pub(crate) fn json(&self) -> String {
        let document = Document {
            date: &self.date,
            smoke: self.smoke,
            loadavg_start: &self.load_start,
            loadavg_end: &self.load_end,
            dir: &self.dir,
            wall_s: self.wall_s,
            sizes: self.results.iter().map(SizeJson::new).collect(),
            rows: ROWS.iter().map(|row| self.row_json(row)).collect(),
            floors: self.floors().into_iter().map(FloorJson::new).collect(),
        };
        let mut text =
            serde_json::to_string_pretty(&document).expect("string-keyed fields always serialize");
        text.push('\n');
        text
    }

    fn row_json(&self, row: &Row) -> RowJson {
        RowJson {
            figure: row.label,
            unit: row.unit.name(),
            values: self
                .results
                .iter()
                .map(|s| (row.value)(&s.record))
                .collect(),
            growth_per_gib: self.growth(row),
        }
    }
}

impl<'a> SizeJson<'a> {
    fn new(s: &'a SizeResult) -> Self {
        Self {
            size_bytes: s.shape.size_bytes,
            slab_blocks: s.shape.slab_blocks,
            journal_blocks: s.shape.journal_blocks,
            index_bytes: s.shape.index_bytes,
            wall_s: s.wall_s,
            error: s.error.as_deref(),
            checks: s.checks(),
            figures: s
                .record
                .iter()
                .map(|(key, text)| (key, figure_value(text)))
                .collect(),
        }
    }
}

impl FloorJson {
    fn new(f: Floor) -> Self {
        Self {
            verdict: f.verdict(),
            floor: f.what,
            measured: f.measured,
            derived_from: f.derivation,
        }
    }
}

/// A child's figure as a JSON number where its text is one (an integer stays an integer),
/// otherwise as a string (`recovering`, `io_uring ...`, `inf`).
fn figure_value(text: &str) -> Value {
    text.parse::<Number>()
        .map_or_else(|_| Value::from(text), Value::Number)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{result, run};
    use super::*;

    /// Asserts that `value` is an object with exactly the keys `expected`, in any order.
    fn assert_keys(value: &Value, expected: &[&str]) {
        let object = value.as_object().expect("an object");
        let found: Vec<&str> = object.keys().map(String::as_str).collect();
        let mut expected = expected.to_vec();
        expected.sort_unstable();
        assert_eq!(found, expected);
    }

    fn two_sizes() -> Run {
        let mut failed = result(4 << 30, &[("write.rss_kib", 2048.0)]);
        failed.error = Some("reopen: child exited with 1".to_owned());
        failed.record.put("write.data_blocks_used", 5);
        failed.record.put("write.store", "io_uring (\"sparse\")");
        run(vec![result(1 << 30, &[("write.rss_kib", 1024.0)]), failed])
    }

    fn parse(run: &Run) -> Value {
        serde_json::from_str(&run.json()).expect("the report is JSON")
    }

    #[test]
    fn document_parses_with_every_key() {
        let doc = parse(&two_sizes());
        let top = [
            "date",
            "smoke",
            "loadavg_start",
            "loadavg_end",
            "dir",
            "wall_s",
            "sizes",
            "rows",
            "floors",
        ];
        assert_keys(&doc, &top);
        let size = [
            "size_bytes",
            "slab_blocks",
            "journal_blocks",
            "index_bytes",
            "wall_s",
            "error",
            "checks",
            "figures",
        ];
        let sizes = doc["sizes"].as_array().expect("an array");
        assert_eq!(sizes.len(), 2);
        for s in sizes {
            assert_keys(s, &size);
        }
        let figures = ["write.data_blocks_used", "write.rss_kib", "write.store"];
        assert_keys(&sizes[1]["figures"], &figures);
        let rows = doc["rows"].as_array().expect("an array");
        assert_eq!(rows.len(), ROWS.len());
        for row in rows {
            assert_keys(row, &["figure", "unit", "values", "growth_per_gib"]);
            assert_eq!(row["values"].as_array().map(Vec::len), Some(2));
            assert_eq!(row["growth_per_gib"].as_array().map(Vec::len), Some(1));
        }
        let floors = doc["floors"].as_array().expect("an array");
        assert_eq!(floors.len(), 3);
        for floor in floors {
            assert_keys(floor, &["floor", "measured", "derived_from", "verdict"]);
        }
    }

    #[test]
    fn figures_keep_their_types_and_missing_ones_are_null() {
        let doc = parse(&two_sizes());
        assert_eq!(doc["smoke"], false);
        assert_eq!(doc["wall_s"], 3.0);
        let (first, failed) = (&doc["sizes"][0], &doc["sizes"][1]);
        assert_eq!(first["size_bytes"], 1_u64 << 30);
        assert_eq!(first["journal_blocks"], 32768);
        assert!(first["error"].is_null());
        assert_eq!(first["checks"], json!([]));
        assert_eq!(first["figures"]["write.rss_kib"], 1024.0);
        assert_eq!(failed["error"], "reopen: child exited with 1");
        let lost = "write.data_blocks_used = 5, expected 1048576";
        assert_eq!(failed["checks"], json!([lost]));
        assert_eq!(failed["figures"]["write.data_blocks_used"], json!(5));
        assert_eq!(failed["figures"]["write.store"], "io_uring (\"sparse\")");
        let rss = &doc["rows"][0];
        assert_eq!(rss["figure"], "VmRSS after writing + flush");
        assert_eq!(rss["unit"], "MiB");
        assert_eq!(rss["values"], json!([1.0, 2.0]));
        assert_eq!(rss["growth_per_gib"], json!([1.0 / 3.0]));
        let clean_open = &doc["rows"][10];
        assert_eq!(clean_open["figure"], "clean open");
        assert_eq!(clean_open["values"], json!([null, null]));
        assert_eq!(clean_open["growth_per_gib"], json!([null]));
        assert_eq!(doc["floors"][0]["verdict"], "not measured");
    }

    #[test]
    fn figures_are_numbers_only_where_their_text_is_a_json_number() {
        assert_eq!(figure_value("5471000"), json!(5_471_000_u64));
        assert!(figure_value("5471000").is_u64());
        assert_eq!(figure_value("-0.25"), json!(-0.25));
        assert_eq!(figure_value("1e3"), json!(1000.0));
        for text in [
            "recovering",
            "inf",
            "NaN",
            "+1",
            ".5",
            "1.",
            " 1",
            "1 s",
            "",
        ] {
            assert_eq!(figure_value(text), json!(text), "{text:?}");
        }
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut r = run(Vec::new());
        r.dir = "a\"b\\c\n".to_owned();
        let text = r.json();
        assert!(text.contains(r#""dir": "a\"b\\c\n","#), "{text}");
        assert_eq!(parse(&r)["dir"], r.dir.as_str());
    }
}
