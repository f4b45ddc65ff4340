//! The statistics `uvdostats` and `uvdo status` print: gathered from a running daemon (the
//! engine's `VolumeStats`) or from a stopped volume's super block, and rendered as VDO's
//! df-style table, its `--verbose` list, or JSON in which every unavailable value says why.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uvdo::VolumeStats;

use crate::size::human;

/// What `uvdostats` knows about one volume. `None` values carry a reason in `unavailable`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StatsView {
    /// Where the numbers come from ("running daemon" or "stopped volume (super block)").
    pub source: String,
    /// Physical blocks of the store.
    pub physical_blocks: u64,
    /// Logical blocks of the volume.
    pub logical_blocks: u64,
    /// Data blocks in use.
    pub data_blocks_used: Option<u64>,
    /// Metadata blocks in use.
    pub overhead_blocks_used: Option<u64>,
    /// Logical blocks mapped.
    pub logical_blocks_used: Option<u64>,
    /// Why the counts that are `None` are unavailable.
    pub unavailable: Option<String>,
    /// normal, recovering or read-only.
    pub operating_mode: String,
    /// Why the volume is read-only.
    pub read_only_reason: Option<String>,
    /// Recovery progress while recovering.
    pub recovery_progress_percent: Option<u8>,
    /// The write policy in force (or stored, when stopped).
    pub write_policy: String,
    /// Block map cache size in bytes.
    pub block_map_cache_size: u64,
    /// Crash recoveries completed.
    pub completed_recovery_count: u64,
    /// Force rebuilds completed.
    pub read_only_recovery_count: u64,
    /// Every other counter, VDO label first, in VDO's order (only when running).
    pub counters: Vec<(String, u64)>,
    /// Write amplification ratio (only when running).
    pub write_amplification_ratio: Option<f64>,
}

const BLOCK: u64 = 4096;

impl StatsView {
    /// From a running volume's statistics.
    #[must_use]
    pub fn from_volume(s: &VolumeStats) -> Self {
        let counts = s.counts_unavailable.is_none();
        let c = |label: &str, v: u64| (label.to_owned(), v);
        let counters = vec![
            c("slab count", s.slab_count),
            c("journal disk full count", s.journal_disk_full_count),
            c("journal commits requested count", s.journal_commits),
            c("journal entries written", s.journal_entries_written),
            c("journal blocks written", s.journal_blocks_written),
            c("journal checkpoints", s.journal_checkpoints),
            c("slab journal entries", s.slab_journal_entries),
            c("slab journal blocks written", s.slab_journal_blocks_written),
            c("slab summary blocks written", s.slab_summary_blocks_written),
            c("reference blocks written", s.reference_blocks_written),
            c("block map dirty pages", s.block_map_dirty_pages),
            c("block map cached pages", s.block_map_pages_cached),
            c("block map cache bytes", s.block_map_cache_bytes),
            c("block map found in cache", s.block_map_found_in_cache),
            c("block map fetch required", s.block_map_fetch_required),
            c("block map pages loaded", s.block_map_pages_loaded),
            c("block map pages saved", s.block_map_pages_saved),
            c("dedupe advice valid", s.dedupe_advice_valid),
            c("dedupe advice stale", s.dedupe_advice_stale),
            c("dedupe advice at reference limit", s.dedupe_advice_at_limit),
            c("invalid advice PBN count", s.invalid_advice_pbn_count),
            c("no space error count", s.no_space_error_count),
            c("read only error count", s.read_only_error_count),
            c("zero blocks written", s.zero_blocks_written),
            c("bios in read", s.bios_in.read),
            c("bios in write", s.bios_in.write),
            c("bios in discard", s.bios_in.discard),
            c("bios in flush", s.bios_in.flush),
            c("bios in fua", s.bios_in.fua),
            c("bios in partial write", s.bios_in_partial_write),
            c("bios out read", s.bios_out.read),
            c("bios out write", s.bios_out.write),
            c("bios meta write", s.bios_meta_write),
            c("bios journal write", s.bios_journal_write),
            c("flush out", s.flush_out),
            c("entries indexed", s.index_entries),
            c("index window entries", s.index_window_entries),
            c("index memory bytes", s.index_memory_bytes),
            c("posts found", s.index_hits),
            c("queries", s.index_lookups),
        ];
        Self {
            source: "running daemon".into(),
            physical_blocks: s.physical_blocks,
            logical_blocks: s.logical_blocks,
            data_blocks_used: counts.then_some(s.data_blocks_used),
            overhead_blocks_used: Some(s.overhead_blocks_used),
            logical_blocks_used: Some(s.logical_blocks_used),
            unavailable: s.counts_unavailable.clone(),
            operating_mode: s.operating_mode.clone(),
            read_only_reason: s.read_only_reason.clone(),
            recovery_progress_percent: s.recovery_progress_percent,
            write_policy: s.write_policy.clone(),
            block_map_cache_size: s.block_map_cache_size,
            completed_recovery_count: s.completed_recovery_count,
            read_only_recovery_count: s.read_only_recovery_count,
            counters,
            write_amplification_ratio: Some(s.write_amplification_ratio()),
        }
    }

    fn why(&self) -> String {
        self.unavailable
            .clone()
            .unwrap_or_else(|| "not known".to_owned())
    }

    /// Data plus overhead blocks.
    #[must_use]
    pub fn used_blocks(&self) -> Option<u64> {
        Some(self.data_blocks_used? + self.overhead_blocks_used?)
    }

    /// `Use%`, rounded to nearest as VDO 8.x does.
    #[must_use]
    pub fn used_percent(&self) -> Option<u64> {
        let used = self.used_blocks()?;
        (self.physical_blocks > 0)
            .then(|| (used * 100 + self.physical_blocks / 2) / self.physical_blocks)
    }

    /// `Space saving%`, truncated; 0 for an empty volume (VDO 8.x); `Err` with why when
    /// unavailable.
    ///
    /// # Errors
    ///
    /// The reason the value is unavailable.
    pub fn saving_percent(&self) -> Result<u64, String> {
        let (Some(logical), Some(data)) = (self.logical_blocks_used, self.data_blocks_used) else {
            return Err(self.why());
        };
        if logical == 0 {
            return Ok(0);
        }
        if data > logical {
            return Err(format!(
                "negative: {data} data blocks for {logical} logical blocks (writes in flight)"
            ));
        }
        Ok((logical - data) * 100 / logical)
    }

    /// The fields of `--verbose` and `--json`, VDO's labels, in VDO's order: each a value or
    /// the reason it is unavailable.
    #[must_use]
    pub fn fields(&self) -> Vec<(String, Result<Value, String>)> {
        let why = self.why();
        let opt = |v: Option<u64>| v.map(Value::from).ok_or_else(|| why.clone());
        let kib = |v: Option<u64>| {
            v.map(|b| Value::from(b * BLOCK / 1024))
                .ok_or_else(|| why.clone())
        };
        let available = self
            .used_blocks()
            .map(|u| self.physical_blocks.saturating_sub(u));
        let mut out: Vec<(String, Result<Value, String>)> = vec![
            ("version".into(), Ok(json!(36))),
            ("data blocks used".into(), opt(self.data_blocks_used)),
            (
                "overhead blocks used".into(),
                opt(self.overhead_blocks_used),
            ),
            ("logical blocks used".into(), opt(self.logical_blocks_used)),
            ("physical blocks".into(), Ok(json!(self.physical_blocks))),
            ("logical blocks".into(), Ok(json!(self.logical_blocks))),
            (
                "1K-blocks".into(),
                Ok(json!(self.physical_blocks * BLOCK / 1024)),
            ),
            ("1K-blocks used".into(), kib(self.used_blocks())),
            ("1K-blocks available".into(), kib(available)),
            ("used percent".into(), opt(self.used_percent())),
            (
                "saving percent".into(),
                self.saving_percent().map(Value::from),
            ),
            (
                "block map cache size".into(),
                Ok(json!(self.block_map_cache_size)),
            ),
            ("write policy".into(), Ok(json!(self.write_policy))),
            ("block size".into(), Ok(json!(BLOCK))),
            (
                "completed recovery count".into(),
                Ok(json!(self.completed_recovery_count)),
            ),
            (
                "read-only recovery count".into(),
                Ok(json!(self.read_only_recovery_count)),
            ),
            ("operating mode".into(), Ok(json!(self.operating_mode))),
            (
                "read-only reason".into(),
                self.read_only_reason
                    .clone()
                    .map(Value::from)
                    .ok_or_else(|| "the volume is not read-only".to_owned()),
            ),
            (
                "recovery progress (%)".into(),
                self.recovery_progress_percent
                    .map(Value::from)
                    .ok_or_else(|| "the volume is not recovering".to_owned()),
            ),
        ];
        let stopped = || "the volume is stopped: only a running daemon counts".to_owned();
        out.push((
            "write amplification ratio".into(),
            self.write_amplification_ratio
                .map(|r| json!(format!("{r:.2}")))
                .ok_or_else(stopped),
        ));
        for (label, value) in &self.counters {
            out.push((label.clone(), Ok(json!(value))));
        }
        out
    }

    /// `--verbose`: `<name> : ` then `  <label><pad> : <value>`, N/A where unavailable.
    #[must_use]
    pub fn verbose(&self, name: &str) -> String {
        let fields = self.fields();
        let width = fields.iter().map(|f| f.0.len()).max().unwrap_or(0);
        let mut out = format!("{name} : \n");
        for (label, value) in fields {
            let text = match value {
                Ok(Value::String(s)) => s,
                Ok(v) => v.to_string(),
                Err(_) => "N/A".to_owned(),
            };
            out.push_str(&format!("  {label:<width$} : {text}\n"));
        }
        out
    }

    /// `--json`: every field as `{"value": v}`, or `{"value": null, "unavailable": why}`.
    #[must_use]
    pub fn json(&self) -> Value {
        let mut map = serde_json::Map::new();
        for (label, value) in self.fields() {
            let cell = match value {
                Ok(v) => json!({ "value": v }),
                Err(why) => json!({ "value": null, "unavailable": why }),
            };
            map.insert(label, cell);
        }
        map.insert("source".into(), json!(self.source));
        Value::Object(map)
    }
}

/// How the df-style table prints sizes.
#[derive(Clone, Copy, Debug, Default)]
pub struct TableUnits {
    /// `--human-readable`.
    pub human: bool,
    /// `--si` (implies human).
    pub si: bool,
}

/// The df-style table (VDO 8.x layout: the name column as wide as the longest name, at
/// least 6; the others right-aligned 9/9/9/4/13). Unavailable cells print `N/A` in their own
/// column (VDO's misalignment fixed).
#[must_use]
pub fn table(rows: &[(String, StatsView)], units: TableUnits) -> String {
    let human_units = units.human || units.si;
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(6);
    let size_head = if human_units { "Size" } else { "1K-blocks" };
    let mut out = format!(
        "{:<width$} {size_head:>9} {:>9} {:>9} {:>4} {:>13}\n",
        "Device", "Used", "Available", "Use%", "Space saving%"
    );
    let cell = |blocks: Option<u64>| match blocks {
        None => "N/A".to_owned(),
        Some(b) if human_units => human(b * BLOCK, units.si),
        Some(b) => (b * BLOCK / 1024).to_string(),
    };
    for (name, s) in rows {
        let available = s.used_blocks().map(|u| s.physical_blocks.saturating_sub(u));
        let percent = |p: Option<u64>| p.map_or_else(|| "N/A".to_owned(), |p| format!("{p}%"));
        out.push_str(&format!(
            "{name:<width$} {:>9} {:>9} {:>9} {:>4} {:>13}\n",
            cell(Some(s.physical_blocks)),
            cell(s.used_blocks()),
            cell(available),
            percent(s.used_percent()),
            percent(s.saving_percent().ok()),
        ));
    }
    out
}
