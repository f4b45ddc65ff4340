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

    /// The block's 128-bit name.
    pub(crate) fn name(&self, block: &Block) -> u128 {
        if self.constant {
            return 0x5eed;
        }
        xxhash_rust::xxh3::xxh3_128_with_secret(block, &self.secret[..])
    }
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
        assert_ne!(a.name(&block), b.name(&block));
        assert_ne!(a.name(&block), a.name(&other));
        assert_eq!(a.name(&block), a.name(&block.clone()));
        assert_eq!(Namer::new([1; HASH_SECRET_SIZE], true).name(&block), 0x5eed);
    }
}
