//! The read path and block status.
//!
//! A read takes the LBN's lock for reading, looks the mapping up in the block map, and reads
//! the data block; unmapped and zero blocks read as zeros without touching the store. Holding
//! the LBN lock keeps the mapped block from being remapped, freed and reused mid-read.

use uvdo_format::{BLOCK_SIZE, Block, BlockType, Lbn, Mapping, Pbn};

use super::Volume;
use super::stats::Counters;
use crate::error::VolumeError;

/// What a range of the volume holds, for NBD's block status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtentKind {
    /// Never written or trimmed: reads as zeros, holds no space.
    Unmapped,
    /// Written with zeros: reads as zeros, holds no space.
    Zero,
    /// Holds data.
    Data,
}

/// A run of blocks of one kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// Byte offset.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// What the run holds.
    pub kind: ExtentKind,
}

impl Volume {
    /// Reads `buf.len()` bytes at byte `offset`; both 512-byte aligned.
    ///
    /// # Errors
    ///
    /// `InvalidArgument` for a bad range, a store error, or `Corrupt` for a damaged block map
    /// page on the way, which also puts the volume in read-only mode. Never wrong data.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), VolumeError> {
        self.read_into(offset, buf, &mut |_, _| {})
    }

    /// Reads like [`Volume::read`] and also says what each part held, as
    /// [`Volume::block_status`] would, from the same block map lookups: an NBD server sends
    /// the zero runs of a read as holes without a second pass over the block map.
    ///
    /// # Errors
    ///
    /// As [`Volume::read`].
    pub fn read_extents(&self, offset: u64, buf: &mut [u8]) -> Result<Vec<Extent>, VolumeError> {
        let mut extents = Vec::new();
        self.read_into(offset, buf, &mut |start, piece| {
            push_extent(&mut extents, start, piece);
        })?;
        Ok(extents)
    }

    /// The read loop; `seen` gets each piece's byte offset, and its length and kind.
    fn read_into(
        &self,
        offset: u64,
        buf: &mut [u8],
        seen: &mut dyn FnMut(u64, (u64, ExtentKind)),
    ) -> Result<(), VolumeError> {
        let pieces = self.pieces(offset, buf.len() as u64)?;
        Counters::bump(&self.counters.bios_in_read);
        let mut done = 0;
        for (lbn, within, len) in pieces {
            let out = &mut buf[done..done + len];
            done += len;
            let _lbn = self.locks.lbn(lbn).read();
            let kind = if len == BLOCK_SIZE {
                let whole: &mut Block = out.try_into().expect("a whole block");
                self.read_block_locked(lbn, whole)?
            } else {
                let mut block: Block = [0; BLOCK_SIZE];
                let kind = self.read_block_locked(lbn, &mut block)?;
                out.copy_from_slice(&block[within..within + len]);
                kind
            };
            seen(
                lbn.0 * BLOCK_SIZE as u64 + within as u64,
                (len as u64, kind),
            );
        }
        Ok(())
    }

    /// Reads one block and says what it held; the caller holds the LBN's lock.
    pub(crate) fn read_block_locked(
        &self,
        lbn: Lbn,
        out: &mut Block,
    ) -> Result<ExtentKind, VolumeError> {
        let mapping = self.lookup(lbn)?;
        match mapping {
            Mapping::Unmapped => {
                out.fill(0);
                Ok(ExtentKind::Unmapped)
            }
            Mapping::Zero => {
                out.fill(0);
                Ok(ExtentKind::Zero)
            }
            Mapping::Data(pbn) => {
                self.read_data(pbn, out)?;
                Ok(ExtentKind::Data)
            }
            Mapping::Compressed { pbn, .. } => self.on_damage(
                Err(VolumeError::invariant(
                    Some(lbn),
                    Some(pbn),
                    "compressed mapping, but this build has no packer",
                )),
                BlockType::BlockMapPage,
            ),
        }
    }

    /// Reads a data block: from the staging while its write is pending, else from the store.
    pub(crate) fn read_data(&self, pbn: Pbn, out: &mut [u8]) -> Result<(), VolumeError> {
        if !self.staging.read(pbn, out) {
            Counters::bump(&self.counters.bios_out_read);
            self.store.read_at(pbn.byte_offset(), out)?;
        }
        Ok(())
    }

    /// `lbn`'s mapping. A block map page that fails its checks on the way puts the volume in
    /// read-only mode (SPEC section 5) and fails the lookup with `Corrupt` (EIO).
    fn lookup(&self, lbn: Lbn) -> Result<Mapping, VolumeError> {
        let found = self.meta.lock().block_map.lookup(&*self.store, lbn);
        self.on_damage(found, BlockType::BlockMapPage)
    }

    /// What each part of `offset..offset+len` holds, as runs merged across blocks; answered
    /// from the block map alone, without reading data.
    ///
    /// # Errors
    ///
    /// `InvalidArgument` for a bad range, `Corrupt` for a damaged block map page (the volume
    /// is then read-only).
    pub fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, VolumeError> {
        let pieces = self.pieces(offset, len)?;
        let mut extents: Vec<Extent> = Vec::new();
        for (lbn, within, piece_len) in pieces {
            let kind = match self.lookup(lbn)? {
                Mapping::Unmapped => ExtentKind::Unmapped,
                Mapping::Zero => ExtentKind::Zero,
                Mapping::Data(_) | Mapping::Compressed { .. } => ExtentKind::Data,
            };
            let start = lbn.0 * BLOCK_SIZE as u64 + within as u64;
            push_extent(&mut extents, start, (piece_len as u64, kind));
        }
        Ok(extents)
    }
}

/// Appends a piece at byte `start` to `extents`, merged into the last run when it continues
/// it with the same kind.
fn push_extent(extents: &mut Vec<Extent>, start: u64, (len, kind): (u64, ExtentKind)) {
    match extents.last_mut() {
        Some(last) if last.kind == kind && last.offset + last.len == start => last.len += len,
        _ => extents.push(Extent {
            offset: start,
            len,
            kind,
        }),
    }
}
