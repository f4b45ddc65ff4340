//! The figures of a run, per size and as growth per GiB between sizes, with the SPEC section
//! 10 floors evaluated; printed as Markdown and written as JSON (`json`). A floor that fails
//! is reported, never an error.

mod json;

use std::fmt::Write as _;

use crate::growth::{self, Point};
use crate::record::Record;
use crate::shape::{BLOCK_BYTES, Shape};

const MIB: f64 = 1_048_576.0;
const GIB: f64 = 1_073_741_824.0;
/// SPEC section 10: journal replay after a crash, at most this many seconds per GiB of journal.
const REPLAY_S_PER_JOURNAL_GIB_MAX: f64 = 2.0;
/// SPEC section 10: force rebuild, at most this many seconds per TiB of mapped logical space.
const REBUILD_S_PER_TIB_MAX: f64 = 6.0;

/// Everything measured for one size.
#[derive(Debug)]
pub(crate) struct SizeResult {
    pub(crate) shape: Shape,
    /// Every child's figures, under its phase's name (`write.rss_kib`).
    pub(crate) record: Record,
    /// The phase that failed, and how; later phases did not run.
    pub(crate) error: Option<String>,
    pub(crate) wall_s: f64,
}

impl SizeResult {
    fn gib(&self) -> f64 {
        to_f64(self.shape.size_bytes) / GIB
    }

    fn label(&self) -> String {
        size_label(self.shape.size_bytes)
    }

    /// What does not add up: figures that say data went missing or the journal was not full.
    fn checks(&self) -> Vec<String> {
        let r = &self.record;
        let blocks = to_f64(self.shape.logical_blocks());
        let mut problems = Vec::new();
        for key in [
            "write.logical_blocks_used",
            "write.data_blocks_used",
            "recover.logical_blocks_used",
            "recover.data_blocks_used",
            "rebuild.logical_blocks_used",
            "rebuild.data_blocks_used",
        ] {
            if let Some(found) = r.number(key).filter(|&v| v != blocks) {
                problems.push(format!("{key} = {found}, expected {blocks}"));
            }
        }
        if let Some(found) = r.number("reopen.fill_checkpoints").filter(|&v| v > 0.0) {
            problems.push(format!(
                "{found} checkpoint(s) while filling the journal: it was emptied on the way"
            ));
        }
        problems
    }
}

/// A run: every size, and the conditions it ran in.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) date: String,
    pub(crate) load_start: String,
    pub(crate) load_end: String,
    pub(crate) dir: String,
    pub(crate) smoke: bool,
    pub(crate) results: Vec<SizeResult>,
    pub(crate) wall_s: f64,
}

/// How a figure is shown.
#[derive(Clone, Copy, Debug)]
enum Unit {
    Mib,
    Gib,
    Seconds,
    Count,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Self::Mib => "MiB",
            Self::Gib => "GiB",
            Self::Seconds => "s",
            Self::Count => "",
        }
    }

    fn show(self, value: f64) -> String {
        match self {
            Self::Mib => format!("{value:.1}"),
            Self::Gib => format!("{value:.2}"),
            Self::Seconds => format!("{value:.3}"),
            Self::Count => format!("{value:.0}"),
        }
    }
}

/// One line of the table: a figure of each size.
struct Row {
    label: &'static str,
    unit: Unit,
    value: fn(&Record) -> Option<f64>,
}

fn kib_as_mib(r: &Record, key: &str) -> Option<f64> {
    Some(r.number(key)? / 1024.0)
}

fn bytes_as_mib(r: &Record, key: &str) -> Option<f64> {
    Some(r.number(key)? / MIB)
}

/// The memory the cached block map pages hold after writing, by the engine's account, in MiB.
fn held_pages_mib(r: &Record) -> Option<f64> {
    bytes_as_mib(r, "write.block_map_cache_bytes")
}

/// The three structures whose size is known after writing, in MiB.
fn accounted_mib(r: &Record) -> Option<f64> {
    Some(
        bytes_as_mib(r, "write.index_memory_bytes")?
            + held_pages_mib(r)?
            + bytes_as_mib(r, "write.ref_count_bytes")?,
    )
}

const ROWS: &[Row] = &[
    Row {
        label: "VmRSS after writing + flush",
        unit: Unit::Mib,
        value: |r| kib_as_mib(r, "write.rss_kib"),
    },
    Row {
        label: "VmHWM (peak) while writing",
        unit: Unit::Mib,
        value: |r| kib_as_mib(r, "write.hwm_kib"),
    },
    Row {
        label: "VmRSS of the child before format",
        unit: Unit::Mib,
        value: |r| kib_as_mib(r, "write.base_rss_kib"),
    },
    Row {
        label: "engine: dedupe index memory (stats)",
        unit: Unit::Mib,
        value: |r| bytes_as_mib(r, "write.index_memory_bytes"),
    },
    Row {
        label: "engine: block map cache, pages held x 4 KiB (stats)",
        unit: Unit::Mib,
        value: |r| Some(r.number("write.block_map_pages_cached")? * to_f64(BLOCK_BYTES) / MIB),
    },
    Row {
        label: "engine: block map cache, bytes the pages hold (stats)",
        unit: Unit::Mib,
        value: held_pages_mib,
    },
    Row {
        label: "derived: reference counts, 1 B per slab data block (layout)",
        unit: Unit::Mib,
        value: |r| bytes_as_mib(r, "write.ref_count_bytes"),
    },
    Row {
        label: "VmRSS - before format - index, cached pages, counts",
        unit: Unit::Mib,
        value: |r| {
            let grown = kib_as_mib(r, "write.rss_kib")? - kib_as_mib(r, "write.base_rss_kib")?;
            Some(grown - accounted_mib(r)?)
        },
    },
    Row {
        label: "write the size in unique blocks + flush",
        unit: Unit::Seconds,
        value: |r| r.number("write.write_s"),
    },
    Row {
        label: "clean close after writing",
        unit: Unit::Seconds,
        value: |r| r.number("write.close_s"),
    },
    Row {
        label: "clean open",
        unit: Unit::Seconds,
        value: |r| r.number("reopen.open_s"),
    },
    Row {
        label: "VmRSS after clean open",
        unit: Unit::Mib,
        value: |r| kib_as_mib(r, "reopen.open_rss_kib"),
    },
    Row {
        label: "overwrites to fill the journal",
        unit: Unit::Count,
        value: |r| r.number("reopen.fill_writes"),
    },
    Row {
        label: "journal blocks replayed after the crash",
        unit: Unit::Count,
        value: |r| r.number("recover.journal_blocks_replayed"),
    },
    Row {
        label: "journal entries replayed",
        unit: Unit::Count,
        value: |r| r.number("recover.entries_replayed"),
    },
    Row {
        label: "writeback of the crashed process's dirty data (before recovery, not in it)",
        unit: Unit::Seconds,
        value: |r| r.number("recover.crash_writeback_s"),
    },
    Row {
        label: "recovery: open until usable",
        unit: Unit::Seconds,
        value: |r| r.number("recover.open_s"),
    },
    Row {
        label: "recovery: open until fully recovered",
        unit: Unit::Seconds,
        value: |r| r.number("recover.recovered_s"),
    },
    Row {
        label: "VmRSS when fully recovered",
        unit: Unit::Mib,
        value: |r| kib_as_mib(r, "recover.rss_kib"),
    },
    Row {
        label: "VmHWM (peak) of recovery",
        unit: Unit::Mib,
        value: |r| kib_as_mib(r, "recover.hwm_kib"),
    },
    Row {
        label: "clean close after recovery",
        unit: Unit::Seconds,
        value: |r| r.number("recover.close_s"),
    },
    Row {
        label: "force rebuild (median of 3)",
        unit: Unit::Seconds,
        value: |r| r.number("rebuild.rebuild_s"),
    },
    Row {
        label: "- before the first phase (super block, journal region scan)",
        unit: Unit::Seconds,
        value: |r| r.number("rebuild.setup_s"),
    },
    Row {
        label: "- walking block map (interior pages)",
        unit: Unit::Seconds,
        value: |r| r.number("rebuild.phase.walking_block_map_s"),
    },
    Row {
        label: "- counting references (leaf pages)",
        unit: Unit::Seconds,
        value: |r| r.number("rebuild.phase.counting_references_s"),
    },
    Row {
        label: "- writing reference counts",
        unit: Unit::Seconds,
        value: |r| r.number("rebuild.phase.writing_reference_counts_s"),
    },
    Row {
        label: "mapped logical space after rebuild",
        unit: Unit::Gib,
        value: |r| Some(r.number("rebuild.mapped_bytes")? / GIB),
    },
    Row {
        label: "VmHWM (peak) of force rebuild",
        unit: Unit::Mib,
        value: |r| kib_as_mib(r, "rebuild.hwm_kib"),
    },
];

/// A SPEC floor, evaluated.
struct Floor {
    what: String,
    measured: String,
    derivation: String,
    holds: Option<bool>,
}

impl Floor {
    fn verdict(&self) -> &'static str {
        match self.holds {
            Some(true) => "holds",
            Some(false) => "FAILS",
            None => "not measured",
        }
    }
}

impl Run {
    fn points(&self, x: fn(&SizeResult) -> Option<f64>, row: &Row) -> Vec<Option<Point>> {
        self.results
            .iter()
            .map(|s| Some((x(s)?, (row.value)(&s.record)?)))
            .collect()
    }

    /// Growth per GiB written between consecutive sizes, for one row.
    fn growth(&self, row: &Row) -> Vec<Option<f64>> {
        let points = self.points(|s| Some(s.gib()), row);
        points
            .windows(2)
            .map(|w| growth::slope(w[0]?, w[1]?))
            .collect()
    }

    pub(crate) fn markdown(&self) -> String {
        let mut out = String::new();
        self.header_markdown(&mut out);
        self.table_markdown(&mut out);
        self.floors_markdown(&mut out);
        self.notes_markdown(&mut out);
        out
    }

    fn header_markdown(&self, out: &mut String) {
        let kind = if self.smoke { " (smoke)" } else { "" };
        let _ = writeln!(out, "#### uvdo-scale{kind}, {}\n", self.date);
        let sizes: Vec<String> = self.results.iter().map(SizeResult::label).collect();
        let _ = write!(out, "Sizes: {}. ", sizes.join(", "));
        if let Some(first) = self.results.first() {
            let s = first.shape;
            let journal_mib = to_f64(s.journal_blocks * BLOCK_BYTES) / MIB;
            let _ = write!(
                out,
                "Volume per size: logical = the size; slabs of {} (data area 1.5x the size + 21376 \
                 blocks, whole slabs); recovery journal {} blocks ({journal_mib:.2} MiB); dense index \
                 {}; block map cache 128 MiB (default); async policy. ",
                size_label(s.slab_blocks * BLOCK_BYTES),
                s.journal_blocks,
                size_label(s.index_bytes),
            );
        }
        let store = self
            .results
            .iter()
            .find_map(|s| s.record.text("write.store"))
            .unwrap_or("unknown");
        let _ = writeln!(
            out,
            "Store: a sparse file in `{}` ({store}), deleted afterwards. Load \
             (/proc/loadavg) at start: {}; at end: {}. Wall time {:.1} s.\n",
            self.dir, self.load_start, self.load_end, self.wall_s
        );
    }

    fn table_markdown(&self, out: &mut String) {
        let _ = write!(out, "| figure | unit |");
        for s in &self.results {
            let _ = write!(out, " {} |", s.label());
        }
        for w in self.results.windows(2) {
            let _ = write!(out, " per GiB, {} to {} |", w[0].label(), w[1].label());
        }
        out.push_str("\n|---|---|");
        let columns = self.results.len() + self.results.len().saturating_sub(1);
        out.push_str(&"---:|".repeat(columns));
        out.push('\n');
        for row in ROWS {
            let _ = write!(out, "| {} | {} |", row.label, row.unit.name());
            for s in &self.results {
                let value = (row.value)(&s.record);
                let _ = write!(
                    out,
                    " {} |",
                    value.map_or("-".to_owned(), |v| row.unit.show(v))
                );
            }
            for slope in self.growth(row) {
                let _ = write!(
                    out,
                    " {} |",
                    slope.map_or("-".to_owned(), |v| show_slope(row, v))
                );
            }
            out.push('\n');
        }
    }

    fn floors(&self) -> Vec<Floor> {
        vec![
            self.replay_floor("recover.open_s", "open until usable"),
            self.replay_floor("recover.recovered_s", "open until fully recovered"),
            self.rebuild_floor(),
        ]
    }

    /// Seconds per GiB of journal replayed, at the size where it is worst.
    fn replay_floor(&self, key: &str, what: &str) -> Floor {
        let per_size = self.results.iter().filter_map(|s| {
            let seconds = s.record.number(key)?;
            let blocks = s.record.number("recover.journal_blocks_replayed")?;
            let journal_gib = blocks * to_f64(BLOCK_BYTES) / GIB;
            (journal_gib > 0.0).then(|| (seconds / journal_gib, seconds, blocks, s.label()))
        });
        let worst = per_size.max_by(|a, b| a.0.total_cmp(&b.0));
        let what = format!(
            "journal replay after a crash <= {REPLAY_S_PER_JOURNAL_GIB_MAX} s per GiB of \
             journal ({what})"
        );
        let Some((per_gib, seconds, blocks, label)) = worst else {
            return not_measured(what);
        };
        let journal_mib = blocks * to_f64(BLOCK_BYTES) / MIB;
        Floor {
            what,
            measured: format!("{per_gib:.2} s/GiB"),
            derivation: format!(
                "worst size, {label}: {seconds:.3} s / {blocks:.0} journal blocks replayed \
                 ({journal_mib:.1} MiB)"
            ),
            holds: Some(per_gib <= REPLAY_S_PER_JOURNAL_GIB_MAX),
        }
    }

    /// Force rebuild time projected to 1 TiB mapped along the last slope.
    /// Force rebuild per TiB mapped: the setup (marking the super block, scanning the
    /// journal region) is the same at every size, so it is added once; the rest, which walks
    /// and counts the mapped space, is projected along its slope between the two largest sizes.
    /// Projecting the setup's run-to-run noise x 1020 GiB would measure nothing.
    fn rebuild_floor(&self) -> Floor {
        let what = format!("force rebuild <= {REBUILD_S_PER_TIB_MAX} s per TiB mapped");
        let points: Vec<(f64, f64, f64)> = self
            .results
            .iter()
            .filter_map(|s| {
                let r = &s.record;
                let mapped = r.number("rebuild.mapped_bytes")? / GIB;
                let setup = r.number("rebuild.setup_s")?;
                Some((mapped, setup, r.number("rebuild.rebuild_s")? - setup))
            })
            .collect();
        let work: Vec<Point> = points.iter().map(|&(x, _, w)| (x, w)).collect();
        let (Some(&(mapped, setup, walk)), Some(walk_per_tib)) =
            (points.last(), growth::extrapolate(&work, 1024.0))
        else {
            return not_measured(what);
        };
        let per_tib = setup + walk_per_tib;
        let derivation = match work.as_slice() {
            [.., a, b] => format!(
                "setup {setup:.3} s (journal scan, fixed) + {walk:.3} s of walking and \
                 counting at {mapped:.2} GiB mapped + {:.4} s/GiB (slope from {:.2} to {:.2} \
                 GiB mapped) x {:.2} GiB more, to 1024 GiB",
                growth::slope(*a, *b).unwrap_or(f64::NAN),
                a.0,
                b.0,
                1024.0 - b.0
            ),
            _ => format!(
                "one size: setup {setup:.3} s + {walk:.3} s of walking and counting for \
                 {mapped:.2} GiB mapped, scaled to 1024 GiB"
            ),
        };
        // A time that fell as the size grew is noise, and projects to nothing meaningful.
        if let [.., a, b] = work.as_slice()
            && growth::slope(*a, *b).is_some_and(|slope| slope < 0.0)
        {
            return Floor {
                what,
                measured: "-".to_owned(),
                derivation: format!("{derivation}: the time fell as the size grew (noise); rerun"),
                holds: None,
            };
        }
        Floor {
            what,
            measured: format!("{per_tib:.1} s per TiB (projected)"),
            derivation,
            holds: Some(per_tib <= REBUILD_S_PER_TIB_MAX),
        }
    }

    fn floors_markdown(&self, out: &mut String) {
        out.push_str("\nSPEC section 10 floors:\n\n");
        out.push_str("| floor | measured | derived from | verdict |\n|---|---:|---|---|\n");
        for f in self.floors() {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                f.what,
                f.measured,
                f.derivation,
                f.verdict()
            );
        }
    }

    fn notes_markdown(&self, out: &mut String) {
        let mut notes = Vec::new();
        for s in &self.results {
            if let Some(e) = &s.error {
                notes.push(format!(
                    "{}: FAILED in {e}; later phases did not run",
                    s.label()
                ));
            }
            notes.extend(
                s.checks()
                    .into_iter()
                    .map(|c| format!("{}: {c}", s.label())),
            );
            if let (Some(replayed), Some(usable)) = (
                s.record.number("recover.journal_blocks_replayed"),
                s.record.number("reopen.journal_usable_blocks"),
            ) {
                notes.push(format!(
                    "{}: the journal held {replayed:.0} of {usable:.0} usable blocks at the \
                     crash ({:.1}%), mode after open: {}; {:.1} s for the size",
                    s.label(),
                    100.0 * replayed / usable.max(1.0),
                    s.record.text("recover.mode_at_open").unwrap_or("?"),
                    s.wall_s
                ));
            }
        }
        if !notes.is_empty() {
            out.push('\n');
            for note in notes {
                let _ = writeln!(out, "- {note}");
            }
        }
    }
}

fn not_measured(what: String) -> Floor {
    Floor {
        what,
        measured: "-".to_owned(),
        derivation: "no size finished this phase".to_owned(),
        holds: None,
    }
}

fn show_slope(row: &Row, value: f64) -> String {
    match row.unit {
        Unit::Seconds => format!("{value:.4}"),
        Unit::Mib | Unit::Gib => format!("{value:.2}"),
        Unit::Count => format!("{value:.0}"),
    }
}

/// `16 MiB`, `1 GiB`, `1.5 GiB`.
pub(crate) fn size_label(bytes: u64) -> String {
    let value = to_f64(bytes);
    let (scaled, unit) = if value >= GIB {
        (value / GIB, "GiB")
    } else if value >= MIB {
        (value / MIB, "MiB")
    } else {
        (value / 1024.0, "KiB")
    };
    if scaled.fract() == 0.0 {
        format!("{scaled:.0} {unit}")
    } else {
        format!("{scaled:.1} {unit}")
    }
}

fn to_f64(value: u64) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "figures for display")]
    let value = value as f64;
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn result(size_bytes: u64, figures: &[(&str, f64)]) -> SizeResult {
        let mut record = Record::default();
        for (key, value) in figures {
            record.put(key, value);
        }
        SizeResult {
            shape: Shape {
                size_bytes,
                slab_blocks: 1 << 19,
                journal_blocks: 32768,
                index_bytes: 256 << 20,
            },
            record,
            error: None,
            wall_s: 1.0,
        }
    }

    pub(super) fn run(results: Vec<SizeResult>) -> Run {
        Run {
            date: "today".to_owned(),
            load_start: "0.1 0.2 0.3".to_owned(),
            load_end: "0.1 0.2 0.3".to_owned(),
            dir: "target".to_owned(),
            smoke: false,
            results,
            wall_s: 3.0,
        }
    }

    #[test]
    fn growth_is_per_gib_between_sizes_and_floors_follow_the_spec() {
        let gib = 1 << 30;
        // 32768 journal blocks = 0.125 GiB: 0.2 s is 1.6 s/GiB, 0.3 s is 2.4 s/GiB.
        let mut r = run(vec![
            result(
                gib,
                &[
                    ("write.rss_kib", 300.0 * 1024.0),
                    ("recover.open_s", 0.2),
                    ("recover.recovered_s", 0.3),
                    ("recover.journal_blocks_replayed", 32768.0),
                    ("rebuild.rebuild_s", 0.5),
                    ("rebuild.setup_s", 0.3),
                    ("rebuild.mapped_bytes", 1.0 * GIB),
                ],
            ),
            result(
                4 * gib,
                &[
                    ("write.rss_kib", 360.0 * 1024.0),
                    ("recover.open_s", 0.2),
                    ("recover.recovered_s", 0.25),
                    ("recover.journal_blocks_replayed", 32768.0),
                    ("rebuild.rebuild_s", 0.5 + 3.0 * 0.004 - 0.1),
                    ("rebuild.setup_s", 0.2),
                    ("rebuild.mapped_bytes", 4.0 * GIB),
                ],
            ),
        ]);
        let rss = &ROWS[0];
        assert_eq!(r.growth(rss), vec![Some(20.0)]);
        let floors = r.floors();
        assert_eq!(floors[0].holds, Some(true), "{}", floors[0].measured);
        assert_eq!(floors[0].measured, "1.60 s/GiB");
        assert_eq!(floors[1].holds, Some(false), "{}", floors[1].measured);
        assert_eq!(floors[1].measured, "2.40 s/GiB");
        // The setup (0.3 s, then 0.2 s: noise) is added once, not projected: 0.2 s setup +
        // 0.212 s of walking at 4 GiB + 0.004 s/GiB x 1020 GiB = 4.492 s per TiB. Along the
        // whole times' slope it would read 0.412 + 1020 x -0.0293 (negative: "noise").
        assert_eq!(floors[2].measured, "4.5 s per TiB (projected)");
        assert_eq!(floors[2].holds, Some(true));
        r.results[1].record.put("rebuild.rebuild_s", 0.35);
        let falling = r.floors();
        assert_eq!(falling[2].holds, None, "{}", falling[2].derivation);
        assert!(falling[2].derivation.contains("noise"));
        let markdown = r.markdown();
        assert!(markdown.contains("| VmRSS after writing + flush | MiB | 300.0 | 360.0 | 20.00 |"));
        assert!(markdown.contains("| FAILS |"));
        let json: serde_json::Value = serde_json::from_str(&r.json()).expect("JSON");
        assert_eq!(json["rows"][0]["growth_per_gib"], serde_json::json!([20.0]));
        assert_eq!(json["sizes"][0]["figures"]["recover.open_s"], 0.2);
        assert_eq!(json["floors"][1]["verdict"], "FAILS");
    }

    #[test]
    fn missing_phases_are_not_measured_rather_than_failing() {
        let mut failed = result(1 << 30, &[("write.rss_kib", 1024.0)]);
        failed.error = Some("reopen: child exited with 1".to_owned());
        let r = run(vec![failed]);
        assert!(r.floors().iter().all(|f| f.holds.is_none()));
        assert!(r.markdown().contains("FAILED in reopen"));
    }

    #[test]
    fn checks_catch_lost_blocks() {
        let s = result(
            16 << 20,
            &[
                ("rebuild.data_blocks_used", 4095.0),
                ("write.data_blocks_used", 4096.0),
            ],
        );
        assert_eq!(
            s.checks(),
            vec!["rebuild.data_blocks_used = 4095, expected 4096"]
        );
    }

    #[test]
    fn sizes_are_labelled_in_binary_units() {
        assert_eq!(size_label(16 << 20), "16 MiB");
        assert_eq!(size_label(1 << 30), "1 GiB");
        assert_eq!(size_label(3 << 29), "1.5 GiB");
        assert_eq!(size_label(4 << 10), "4 KiB");
    }
}
