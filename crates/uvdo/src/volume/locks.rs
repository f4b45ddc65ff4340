//! Striped lock tables: writes to one LBN are ordered, writes of equal data meet.
//!
//! A stripe is chosen by a multiplicative hash of the key, so neighbouring LBNs land on
//! different stripes. Two keys sharing a stripe merely serialise; no thread ever holds two
//! stripes of one table, so stripes cannot deadlock.

use parking_lot::{Mutex, RwLock};
use uvdo_format::Lbn;

/// LBN lock stripes (a power of two).
const LBN_STRIPES: usize = 1024;
/// Hash lock stripes (a power of two).
const HASH_STRIPES: usize = 256;

/// The engine's lock tables.
#[derive(Debug)]
pub(crate) struct Locks {
    lbns: Box<[RwLock<()>]>,
    names: Box<[Mutex<()>]>,
}

impl Locks {
    pub(crate) fn new() -> Self {
        Self {
            lbns: (0..LBN_STRIPES).map(|_| RwLock::new(())).collect(),
            names: (0..HASH_STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    /// The lock of an LBN: written by a remap of it, read by a read of it.
    pub(crate) fn lbn(&self, lbn: Lbn) -> &RwLock<()> {
        let stripe = lbn.0.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 54;
        &self.lbns[usize::try_from(stripe).expect("10 bits") % LBN_STRIPES]
    }

    /// The lock of a block name: held from index lookup to index insert, so a concurrent
    /// write of the same data finds the first one's block.
    pub(crate) fn name(&self, name: u128) -> &Mutex<()> {
        let stripe = name % HASH_STRIPES as u128;
        &self.names[usize::try_from(stripe).expect("below HASH_STRIPES")]
    }
}
