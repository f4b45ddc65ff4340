//! Block names: xxh3-128 keyed with the volume's secret from the geometry, so collisions
//! cannot be crafted offline without reading the volume.

use uvdo_format::Block;
use uvdo_format::geometry::HASH_SECRET_SIZE;

/// Computes block names for one volume.
#[derive(Clone)]
pub(crate) struct Namer {
    secret: Box<[u8; HASH_SECRET_SIZE]>,
    constant: bool,
}

impl std::fmt::Debug for Namer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namer")
            .field("constant", &self.constant)
            .finish_non_exhaustive()
    }
}

impl Namer {
    /// A namer with the volume's secret; `constant` is the test hook that names every block
    /// the same, so only the byte comparison prevents false sharing.
    pub(crate) fn new(secret: [u8; HASH_SECRET_SIZE], constant: bool) -> Self {
        Self {
            secret: Box::new(secret),
            constant,
        }
    }

    /// The block's 128-bit name, and the 64 bits of it a journal block's data check folds in: never
    /// the test hook's constant, since the check must tell data apart
    /// (journal/mod.rs, "single-flush batch").
    pub(crate) fn names(&self, block: &Block) -> (u128, u64) {
        let name = xxhash_rust::xxh3::xxh3_128_with_secret(block, &self.secret[..]);
        let check = low_bits(name);
        if self.constant {
            (0x5eed, check)
        } else {
            (name, check)
        }
    }

    /// The 64 bits of the block's name that data checks fold in.
    pub(crate) fn check_name(&self, block: &Block) -> u64 {
        self.names(block).1
    }
}

/// The low 64 bits of a name.
fn low_bits(name: u128) -> u64 {
    (name & u128::from(u64::MAX))
        .try_into()
        .expect("masked to 64 bits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_depend_on_the_secret_and_the_data() {
        let a = Namer::new([1; HASH_SECRET_SIZE], false);
        let b = Namer::new([2; HASH_SECRET_SIZE], false);
        let block = [7_u8; 4096];
        let mut other = block;
        other[4095] = 8;
        assert_ne!(a.names(&block).0, b.names(&block).0);
        assert_ne!(a.names(&block).0, a.names(&other).0);
        assert_eq!(a.names(&block), a.names(&block.clone()));
        let constant = Namer::new([1; HASH_SECRET_SIZE], true);
        assert_eq!(constant.names(&block).0, 0x5eed);
        assert_ne!(constant.check_name(&block), constant.check_name(&other));
        assert_eq!(constant.check_name(&block), a.check_name(&block));
        assert_eq!(a.names(&block).1, low_bits(a.names(&block).0));
    }
}
