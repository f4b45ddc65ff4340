//! Reserved and unused bytes: written as zero, and checked to be zero on decode, so a later
//! version can give them meaning and an older reader notices (FORMAT.md, "Conventions").

use crate::error::Problem;

/// Checks that `bytes` are all zero; the error names `field` and gives the first nonzero
/// byte's value.
///
/// # Errors
///
/// `Problem::InvalidField` when a byte is not zero.
pub fn require_zero(bytes: &[u8], field: &'static str) -> Result<(), Problem> {
    match bytes.iter().find(|&&b| b != 0) {
        None => Ok(()),
        Some(&b) => Err(Problem::InvalidField {
            field,
            expected: "zero",
            found: u64::from(b),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_nonzero_byte_is_reported() {
        assert_eq!(require_zero(&[0, 0, 0], "x"), Ok(()));
        assert_eq!(
            require_zero(&[0, 7, 9], "reserved"),
            Err(Problem::InvalidField {
                field: "reserved",
                expected: "zero",
                found: 7
            })
        );
    }
}
