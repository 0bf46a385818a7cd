//! UTC calendar days, as the usage ledger names them: `YYYY-MM-DD`. A day is also a number, the
//! days since 1970-01-01, so ranges are arithmetic. Proleptic Gregorian calendar, years 0000 to
//! 9999 (what four digits spell); no clock is read here.

/// Milliseconds in a day.
pub const DAY_MS: u64 = 86_400_000;

/// The day number (days since 1970-01-01) of an instant in ms since the epoch, in UTC.
pub fn day_number(at_ms: u64) -> i64 {
    i64::try_from(at_ms / DAY_MS).unwrap_or(i64::MAX)
}

/// The UTC day of an instant: `utc_day(0) == "1970-01-01"`.
pub fn utc_day(at_ms: u64) -> String {
    format_day(day_number(at_ms))
}

/// `YYYY-MM-DD` of a day number.
pub fn format_day(day: i64) -> String {
    let (year, month, dom) = civil_from_days(day);
    format!("{year:04}-{month:02}-{dom:02}")
}

/// The day number of `YYYY-MM-DD` (exactly that shape, a real date); `None` otherwise.
pub fn parse_day(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        if !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (year, month, dom) = (number(0..4)?, number(5..7)?, number(8..10)?);
    if !(1..=12).contains(&month) || dom < 1 || dom > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, dom))
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`: eras of
/// 400 years, years starting in March so the leap day comes last).
fn days_from_civil(year: i64, month: i64, dom: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + dom - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(day: i64) -> (i64, i64, i64) {
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let dom = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, dom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants_fall_on_their_days() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(DAY_MS - 1), "1970-01-01");
        assert_eq!(utc_day(DAY_MS), "1970-01-02");
        // 2000-02-29T12:00:00Z, a leap day of a century divisible by 400.
        assert_eq!(utc_day(951_825_600_000), "2000-02-29");
        // 2026-01-01T00:00:00Z and the millisecond before it.
        assert_eq!(utc_day(1_767_225_600_000), "2026-01-01");
        assert_eq!(utc_day(1_767_225_599_999), "2025-12-31");
    }

    #[test]
    fn days_round_trip_over_centuries() {
        // Every day from 1900-01-01 to 2100-12-31, and the text of each parses back.
        let start = parse_day("1900-01-01").unwrap();
        let end = parse_day("2100-12-31").unwrap();
        assert_eq!(end - start + 1, 73_414);
        let mut previous: Option<String> = None;
        for day in start..=end {
            let text = format_day(day);
            assert_eq!(parse_day(&text), Some(day), "{text}");
            if let Some(previous) = previous {
                assert!(
                    previous < text,
                    "{previous} then {text}: text order is day order"
                );
            }
            previous = Some(text);
        }
        assert_eq!(parse_day("1970-01-01"), Some(0));
    }

    #[test]
    fn only_real_dates_in_the_one_shape_parse() {
        for bad in [
            "",
            "2026-1-01",
            "2026-01-1",
            "2026/01/01",
            "2026-13-01",
            "2026-00-10",
            "2026-02-29",
            "1900-02-29",
            "2026-04-31",
            "2026-01-32",
            "+026-01-01",
            "2026-01-01T00:00:00Z",
            "２026-01-01",
        ] {
            assert_eq!(parse_day(bad), None, "{bad:?}");
        }
        assert!(parse_day("2024-02-29").is_some());
        assert!(parse_day("2000-02-29").is_some());
    }
}
