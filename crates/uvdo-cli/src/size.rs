//! LVM-style sizes (`10G`, `1T`, `512s`): binary units, case-insensitive, fractions allowed,
//! megabytes when no unit is given (research/vdo_cli.md section 1).

use crate::error::{CliError, CliResult};

const KIB: f64 = 1024.0;

/// Parses `text` into bytes, rounded down to 4 KiB. `sectors_allowed` is false for the
/// "SI-size" options, which reject `s`.
///
/// # Errors
///
/// Exit 2 for anything that is not a number with an optional unit.
pub fn parse_size(text: &str, sectors_allowed: bool) -> CliResult<u64> {
    let t = text.trim().replace(',', ".");
    let bad = || {
        CliError::usage(format!(
            "invalid size '{text}': expected e.g. 10G, 512M, 1T"
        ))
    };
    let (number, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c.to_ascii_lowercase()),
        Some(_) => (t.as_str(), 'm'),
        None => return Err(bad()),
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    if !value.is_finite() || value < 0.0 {
        return Err(bad());
    }
    let scale = match unit {
        's' if sectors_allowed => 512.0,
        'b' => 1.0,
        'k' => KIB,
        'm' => KIB * KIB,
        'g' => KIB.powi(3),
        't' => KIB.powi(4),
        'p' => KIB.powi(5),
        'e' => KIB.powi(6),
        _ => return Err(bad()),
    };
    let bytes = value * scale;
    if bytes >= 2_f64.powi(64) {
        return Err(bad());
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "checked finite, non-negative and below 2^64 above"
    )]
    let bytes = bytes as u64;
    Ok(bytes / 4096 * 4096)
}

/// `bytes` in the largest unit that holds it exactly (`10T`, `128M`, `4K`), as VDO stores
/// sizes in its config file.
#[must_use]
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(char, u32); 6] = [
        ('E', 60),
        ('P', 50),
        ('T', 40),
        ('G', 30),
        ('M', 20),
        ('K', 10),
    ];
    for (unit, shift) in UNITS {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}B")
}

/// `bytes` for people: divided by 1024 (1000 with `si`) until below it, as `%.1f<unit>`
/// (vdostats' `--human-readable`).
#[must_use]
pub fn human(bytes: u64, si: bool) -> String {
    let divisor = if si { 1000.0 } else { KIB };
    #[expect(clippy::cast_precision_loss, reason = "for display")]
    let mut value = bytes as f64;
    for unit in ["B", "K", "M", "G", "T"] {
        if value < divisor || unit == "T" {
            return format!("{value:.1}{unit}");
        }
        value /= divisor;
    }
    unreachable!("the loop returns at T")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lvm_suffixes() {
        assert_eq!(parse_size("10G", true).unwrap(), 10 << 30);
        assert_eq!(parse_size("1t", true).unwrap(), 1 << 40);
        assert_eq!(parse_size("128", true).unwrap(), 128 << 20);
        assert_eq!(parse_size("0.5g", true).unwrap(), 512 << 20);
        assert_eq!(parse_size("0,5g", true).unwrap(), 512 << 20);
        assert_eq!(parse_size("16s", true).unwrap(), 8192);
        assert_eq!(parse_size("5000b", true).unwrap(), 4096);
        assert!(parse_size("16s", false).is_err());
        assert!(parse_size("ten", true).is_err());
        assert!(parse_size("-1G", true).is_err());
        assert!(parse_size("", true).is_err());
    }

    #[test]
    fn sizes_print_in_the_largest_exact_unit() {
        assert_eq!(format_size(10 << 40), "10T");
        assert_eq!(format_size(128 << 20), "128M");
        assert_eq!(format_size(1536 << 20), "1536M");
        assert_eq!(format_size(4096), "4K");
        assert_eq!(human(20 << 30, false), "20.0G");
        assert_eq!(human(1500, true), "1.5K");
    }
}
