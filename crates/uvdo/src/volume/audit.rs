//! The audit (VDO's vdoaudit): recount every reference from the block map and compare with
//! the stored reference counts (SPEC section 3, I1-I3).

use std::collections::HashMap;

use uvdo_format::ref_counts::{BLOCK_MAP_REFERENCE, REFERENCE_MAX};
use uvdo_format::{Lbn, Mapping, Pbn};

use super::Volume;
use crate::error::VolumeError;

/// Problems listed in full; past this only counted (STYLE rule 7).
const PROBLEMS_LISTED_MAX: usize = 100;

/// A block whose stored count is not what the block map implies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CountMismatch {
    /// The block.
    pub pbn: Pbn,
    /// The count the depot holds.
    pub stored: u8,
    /// The count the block map implies (255 for a tree page).
    pub expected: u64,
}

/// What the audit found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// Logical blocks mapped (including zero blocks).
    pub logical_blocks_mapped: u64,
    /// References from the block map to data blocks.
    pub data_references: u64,
    /// Distinct data blocks referenced.
    pub data_blocks_referenced: u64,
    /// Allocated tree pages (twin pairs).
    pub tree_pages: u64,
    /// Blocks whose count is wrong (I1), the first `PROBLEMS_LISTED_MAX`.
    pub mismatches: Vec<CountMismatch>,
    /// How many blocks' counts are wrong in all.
    pub mismatch_count: u64,
    /// Mappings to blocks that are not slab data blocks, or tree pages referenced twice (I2,
    /// I3), the first `PROBLEMS_LISTED_MAX`.
    pub bad_references: Vec<(Lbn, Pbn)>,
    /// The logical-blocks-used counter the volume keeps.
    pub logical_blocks_used_recorded: u64,
}

impl AuditReport {
    /// True when every reference count matches and every mapping is valid.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.mismatch_count == 0
            && self.bad_references.is_empty()
            && self.logical_blocks_used_recorded == self.logical_blocks_mapped
    }
}

impl Volume {
    /// Commits everything, then recounts every reference from the block map and compares
    /// with the reference counts. Writes wait while it runs. In recovering mode it first
    /// waits for every slab to be recovered (`wait_recovered`): the counts it compares are
    /// not known before.
    ///
    /// # Errors
    ///
    /// A store error or corrupt metadata met while walking the block map; `InvalidArgument`
    /// when recovery stopped (read-only mode) with slabs not recovered.
    pub fn audit(&self) -> Result<AuditReport, VolumeError> {
        // A read-only volume is audited as it stands.
        let _ = self.wait_recovered();
        let _commit = self.commit.lock();
        let _barrier = self.barrier.write();
        self.commit_locked()?;
        let mut meta = self.meta.lock();
        let unrecovered = meta.depot.unrecovered_count();
        if unrecovered > 0 {
            return Err(VolumeError::invalid(format!(
                "cannot audit: recovery stopped with {unrecovered} slabs not recovered"
            )));
        }
        let store = &*self.store;
        let layout = meta.depot.layout();
        let mut report = AuditReport {
            logical_blocks_used_recorded: meta.journal.logical_blocks_used(),
            ..AuditReport::default()
        };
        let mut expected: HashMap<Pbn, u64> = HashMap::new();
        let mut bad = Vec::new();
        meta.block_map
            .for_each_mapping(store, &mut |lbn, mapping| {
                report.logical_blocks_mapped += 1;
                if let Mapping::Data(pbn) | Mapping::Compressed { pbn, .. } = mapping {
                    report.data_references += 1;
                    if layout.slab_of(pbn).is_none() {
                        bad.push((lbn, pbn));
                    }
                    *expected.entry(pbn).or_default() += 1;
                }
            })?;
        report.data_blocks_referenced = expected.len() as u64;
        meta.block_map
            .for_each_tree_page(store, &mut |pbn, _level| {
                report.tree_pages += 1;
                for half in [pbn, pbn.offset(1)] {
                    let previous = expected.insert(half, u64::from(BLOCK_MAP_REFERENCE));
                    if previous.is_some() {
                        bad.push((Lbn(u64::MAX), half));
                    }
                }
            })?;
        meta.depot.for_each_count(&mut |pbn, stored| {
            let want = expected.remove(&pbn).unwrap_or(0);
            let plausible =
                want == u64::from(BLOCK_MAP_REFERENCE) || want <= u64::from(REFERENCE_MAX);
            if u64::from(stored) != want || !plausible {
                report.mismatch_count += 1;
                if report.mismatches.len() < PROBLEMS_LISTED_MAX {
                    report.mismatches.push(CountMismatch {
                        pbn,
                        stored,
                        expected: want,
                    });
                }
            }
        });
        // Whatever is left was referenced but is no slab data block.
        for (pbn, _) in expected {
            bad.push((Lbn(u64::MAX), pbn));
        }
        bad.truncate(PROBLEMS_LISTED_MAX);
        report.bad_references = bad;
        Ok(report)
    }
}
