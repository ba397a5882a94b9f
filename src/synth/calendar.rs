//! Calendar dates of Unix times (proleptic Gregorian, UTC), for item release years, the
//! summary's date range and `--start 2015-01-01`.
//!
//! The conversions count days in 400-year eras of 146 097 days, the method of Howard
//! Hinnant's public-domain "chrono-compatible low-level date algorithms".

/// Seconds in a day.
pub(crate) const DAY: i64 = 86_400;

/// `(year, month 1..=12, day 1..=31)` of the day `days` after 1970-01-01.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // March = 0
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days from 1970-01-01 to `year-month-day` (the inverse of [`civil_from_days`]).
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = year - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_index = i64::from(if month > 2 { month - 3 } else { month + 9 });
    let day_of_year = (153 * month_index + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The calendar year of a Unix time.
pub(crate) fn year_of(unix_seconds: i64) -> i64 {
    civil_from_days(unix_seconds.div_euclid(DAY)).0
}

/// `YYYY-MM-DD` of a Unix time.
pub(crate) fn date_of(unix_seconds: i64) -> String {
    let (y, m, d) = civil_from_days(unix_seconds.div_euclid(DAY));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Parses a start time: Unix seconds (`1420070400`) or a UTC date (`2015-01-01`).
pub fn parse_start(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<i64>() {
        return Ok(seconds);
    }
    let invalid = || format!("`{text}` is neither Unix seconds nor a date like 2015-01-01");
    let parts: Vec<&str> = text.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return Err(invalid());
    };
    let (Ok(year), Ok(month), Ok(day)) = (y.parse::<i64>(), m.parse::<u32>(), d.parse::<u32>())
    else {
        return Err(invalid());
    };
    if !(1..=9999).contains(&year) || !(1..=12).contains(&month) || day == 0 {
        return Err(invalid());
    }
    let days = days_from_civil(year, month, day);
    if civil_from_days(days) != (year, month, day) {
        return Err(format!(
            "`{text}` is not a date: {year}-{month:02} has no day {day}"
        ));
    }
    Ok(days * DAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(date_of(1_420_070_400), "2015-01-01");
        assert_eq!(date_of(951_782_400), "2000-02-29");
        assert_eq!(date_of(-1), "1969-12-31");
        assert_eq!(year_of(1_577_836_799), 2019);
        assert_eq!(year_of(1_577_836_800), 2020);
    }

    #[test]
    fn days_round_trip_over_centuries() {
        // Count days forward one by one from 1900-03-01 and compare with the formulas.
        let first = days_from_civil(1900, 3, 1);
        let (mut y, mut m, mut d) = (1900i64, 3u32, 1u32);
        for days in first..first + 80_000 {
            assert_eq!(civil_from_days(days), (y, m, d));
            assert_eq!(days_from_civil(y, m, d), days);
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let month_len = match m {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > month_len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn start_times_parse_from_seconds_or_dates() {
        assert_eq!(parse_start("1420070400"), Ok(1_420_070_400));
        assert_eq!(parse_start("2015-01-01"), Ok(1_420_070_400));
        assert_eq!(parse_start(" 1969-12-31 "), Ok(-86_400));
        assert_eq!(
            parse_start("2015-02-30"),
            Err("`2015-02-30` is not a date: 2015-02 has no day 30".to_string())
        );
        assert_eq!(
            parse_start("yesterday"),
            Err("`yesterday` is neither Unix seconds nor a date like 2015-01-01".to_string())
        );
    }
}
