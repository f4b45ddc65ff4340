//! What the two benchmark binaries (`uvdo-benches`, `uvdo-scale`) share: the conditions a run
//! ran in, as both reports record them (when it ran, and the machine's load at its start and
//! end). Measuring and reporting stay in each binary; this library never touches a volume.

/// The first three fields of /proc/loadavg (1, 5, 15 minutes), or `unknown` where there is
/// none.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "unknown".to_owned(),
        |text| {
            let fields: Vec<&str> = text.split_whitespace().take(3).collect();
            fields.join(" ")
        },
    )
}

/// The current time as `YYYY-MM-DD HH:MM UTC`, without a date crate.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let (y, m, d) = civil_from_days(days);
    let of_day = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        of_day / 3600,
        of_day % 3600 / 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's
/// algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
    }

    #[test]
    fn utc_now_reads_as_a_date_and_time() {
        let now = utc_now();
        assert_eq!(now.len(), "2024-01-01 00:00 UTC".len(), "{now}");
        assert!(now.ends_with(" UTC") && now.as_bytes()[4] == b'-', "{now}");
    }
}
