//! Hour buckets in the site's time zone. Buckets start at local hour
//! boundaries (stored as UTC instants) so that days and months in reports
//! are exact even for zones offset by half an hour, such as Newfoundland.

use chrono::{DateTime, Duration, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

/// Seconds since the epoch of the start of the local hour holding `at`.
pub fn local_hour_start(at: DateTime<Utc>, tz: Tz) -> u32 {
    let local = at.with_timezone(&tz);
    let into_hour = Duration::seconds(i64::from(local.minute() * 60 + local.second()))
        + Duration::nanoseconds(i64::from(local.nanosecond()));
    let start = tz.from_utc_datetime(&(local - into_hour).naive_utc());
    u32::try_from(start.timestamp()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(at: &str, tz: Tz, expected: &str) {
        let at: DateTime<Utc> = at.parse().unwrap();
        let want: DateTime<Utc> = expected.parse().unwrap();
        assert_eq!(
            local_hour_start(at, tz),
            want.timestamp() as u32,
            "{at} in {tz}"
        );
    }

    #[test]
    fn buckets_follow_local_hours() {
        check(
            "2026-11-23T15:42:10Z",
            chrono_tz::America::Toronto,
            "2026-11-23T15:00:00Z",
        );
        check(
            "2026-11-23T15:42:10Z",
            chrono_tz::America::St_Johns,
            "2026-11-23T15:30:00Z",
        );
        check(
            "2026-11-23T15:12:10Z",
            chrono_tz::America::St_Johns,
            "2026-11-23T14:30:00Z",
        );
        // Fall-back night: 01:30 EDT and 01:30 EST are different buckets.
        check(
            "2026-11-01T05:30:00Z",
            chrono_tz::America::Toronto,
            "2026-11-01T05:00:00Z",
        );
        check(
            "2026-11-01T06:30:00Z",
            chrono_tz::America::Toronto,
            "2026-11-01T06:00:00Z",
        );
    }
}
