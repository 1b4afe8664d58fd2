//! What a failed ClickHouse request means for delivery, decided once from
//! ClickHouse's error code ([`clickhouse_code`]), never from words in its
//! message. The message itself is never kept: it can quote the refused
//! value (a path, a visitor value). Only the code and its meaning reach
//! logs, metrics and the dead-letter folder.
//!
//! - [`Failure::Unclear`]: no answer, or an answer without an error code
//!   (the network, a timeout, a proxy's error page). The request may or may
//!   not have taken effect; the writer looks before sending it again, and
//!   retries without limit.
//! - [`Failure::Refused`]: ClickHouse answered with an error code. Its
//!   [`Category`] says whether it can be about the rows (and so worth
//!   isolating them) or is passing (retried like the network).

use std::fmt;

/// A failed request, as the writer acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The request may or may not have taken effect. The text describes the
    /// transport failure only (it never holds row data).
    Unclear(String),
    /// ClickHouse answered with an error; what it applied is found by its
    /// delivery mark, as after any failure.
    Refused(Refusal),
}

/// A refusal, known by its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Refusal {
    /// ClickHouse's error code.
    Code(u32),
    /// tamis could not encode the row (never sent).
    Encoding,
}

/// What a refusal can mean for the rows that met it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// About the rows themselves (parse errors, type mismatches, values a
    /// check refuses): the refused rows are isolated at once.
    Data,
    /// Passing, whatever the rows (timeouts, limits, too many parts, a
    /// query id still running): retried like a network failure, never a
    /// reason to isolate or dead-letter anything.
    Passing,
    /// Anything else (a table missing, no permission, read-only, …): after
    /// a few refusals of the same rows the writer asks ClickHouse to take a
    /// delivery mark alone; if it refuses that too the cause is not the
    /// rows, and delivery waits.
    Other,
}

/// Codes that can only be about the data sent. Names from ClickHouse's
/// `ErrorCodes.cpp`, the same in 18.16 and current releases.
const DATA: [(u32, &str); 14] = [
    (6, "cannot parse text"),
    (26, "cannot parse quoted string"),
    (27, "cannot parse input"),
    (33, "cannot read all data"),
    (38, "cannot parse date"),
    (41, "cannot parse date and time"),
    (53, "type mismatch"),
    (69, "argument out of bound"),
    (70, "cannot convert type"),
    (72, "cannot parse number"),
    (117, "incorrect data"),
    (131, "too large string size"),
    (395, "value refused by a check"),
    (469, "violated constraint"),
];

/// Codes that pass with time, whatever the rows.
const PASSING: [(u32, &str); 18] = [
    (159, "timeout exceeded"),
    (160, "too slow"),
    (164, "read-only mode"),
    (202, "too many simultaneous queries"),
    (203, "no free connection"),
    (209, "socket timeout"),
    (210, "network error"),
    (216, "a query with the same id is already running"),
    (225, "no ZooKeeper"),
    (236, "aborted"),
    (241, "memory limit exceeded"),
    (242, "table is read-only"),
    (252, "too many parts"),
    (279, "all connection tries failed"),
    (319, "unknown status of insert"),
    (394, "query was cancelled"),
    (425, "system error"),
    (999, "coordination (Keeper) error"),
];

/// Other codes tamis names in its logs.
const OTHER: [(u32, &str); 7] = [
    (16, "no such column in table"),
    (47, "unknown identifier"),
    (60, "unknown table"),
    (81, "unknown database"),
    (192, "unknown user"),
    (497, "access denied"),
    (516, "authentication failed"),
];

impl Refusal {
    pub fn category(self) -> Category {
        match self {
            Refusal::Encoding => Category::Data,
            Refusal::Code(code) if DATA.iter().any(|(c, _)| *c == code) => Category::Data,
            Refusal::Code(code) if PASSING.iter().any(|(c, _)| *c == code) => Category::Passing,
            Refusal::Code(_) => Category::Other,
        }
    }

    /// The code, 0 for a row tamis could not encode.
    pub fn code(self) -> u32 {
        match self {
            Refusal::Code(code) => code,
            Refusal::Encoding => 0,
        }
    }

    /// What the code means, in a few words.
    pub fn meaning(self) -> &'static str {
        let Refusal::Code(code) = self else {
            return "cannot encode the row";
        };
        DATA.iter()
            .chain(PASSING.iter())
            .chain(OTHER.iter())
            .find(|(c, _)| *c == code)
            .map_or("refused", |(_, meaning)| *meaning)
    }
}

/// As logs and dead letters say it: `ClickHouse code 117: incorrect data`.
impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Code(code) => write!(f, "ClickHouse code {code}: {}", self.meaning()),
            Refusal::Encoding => f.write_str(self.meaning()),
        }
    }
}

/// ClickHouse's error code in an error answer. The `clickhouse` crate
/// passes the answer's text on: it begins `Code: 117, e.displayText() = …`
/// (18.16) or `Code: 53. DB::Exception: …` (current releases), or is
/// `Code: 60` alone when the body was unreadable. Only a code at the very
/// start counts: the rest of the text can quote anything, digits and
/// "Code:" included.
pub fn clickhouse_code(error: &clickhouse::error::Error) -> Option<u32> {
    match error {
        clickhouse::error::Error::BadResponse(text) => code_at_start(text),
        _ => None,
    }
}

fn code_at_start(text: &str) -> Option<u32> {
    let rest = text.trim_start().strip_prefix("Code:")?.trim_start();
    let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 || digits > 6 {
        return None;
    }
    let after = rest[digits..].chars().next();
    // The code ends at punctuation or the end, never inside a word.
    if after.is_some_and(|c| c.is_alphanumeric()) {
        return None;
    }
    rest[..digits].parse().ok()
}

/// How the writer must treat `error`.
pub fn classify(error: &clickhouse::error::Error) -> Failure {
    use clickhouse::error::Error;
    match error {
        Error::BadResponse(_) => match clickhouse_code(error) {
            Some(code) => Failure::Refused(Refusal::Code(code)),
            // An answer without a code is not ClickHouse's refusal (a proxy
            // page, a cut body): whether it took effect is unknown.
            None => Failure::Unclear("answer without a ClickHouse error code".into()),
        },
        Error::Custom(_) | Error::SequenceMustHaveLength | Error::InvalidUtf8Encoding(_) => {
            Failure::Refused(Refusal::Encoding)
        }
        // Network failures, timeouts and anything else: say only what kind
        // of failure it was (its text never holds row data, but keep it
        // short and fixed).
        Error::Network(_) => Failure::Unclear("network error".into()),
        Error::TimedOut => Failure::Unclear("timed out".into()),
        other => Failure::Unclear(format!("client error: {}", kind_name(other))),
    }
}

fn kind_name(error: &clickhouse::error::Error) -> &'static str {
    use clickhouse::error::Error;
    match error {
        Error::Compression(_) | Error::Decompression(_) => "compression",
        Error::InvalidParams(_) => "invalid parameters",
        Error::RowNotFound => "no row",
        Error::NotEnoughData | Error::DataFormat(_) => "unexpected answer",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickhouse::error::Error;

    fn check(text: &str, expected: Option<u32>) {
        let error = Error::BadResponse(text.to_string());
        assert_eq!(clickhouse_code(&error), expected, "{text:?}");
    }

    #[test]
    fn codes_are_read_at_the_start_of_the_answer_only() {
        check(
            "Code: 117, e.displayText() = DB::Exception: Unexpected value",
            Some(117),
        );
        check(
            "Code: 6, e.displayText() = DB::Exception: Cannot parse",
            Some(6),
        );
        check("Code: 53. DB::Exception: Type mismatch for 'x'", Some(53));
        check(
            "  Code: 279. DB::Exception: All connection tries failed",
            Some(279),
        );
        check("Code: 60", Some(60));
        check("Code: 27x", None);
        check("500 Internal Server Error", None);
        check("DB::Exception: value 'Code: 27' in row 3", None);
        check("Code: , nothing", None);
    }

    /// Regression: the old check looked for "Code: 27" anywhere, so 279
    /// (all connection tries failed, passing) was taken for 27 (bad data)
    /// and its rows were dead-lettered; "Code: 6." never matched 18.16's
    /// "Code: 6,".
    #[test]
    fn errors_classified_by_substring() {
        let e279 =
            Error::BadResponse("Code: 279. DB::Exception: All connection tries failed".into());
        assert_eq!(classify(&e279), Failure::Refused(Refusal::Code(279)));
        assert_eq!(Refusal::Code(279).category(), Category::Passing);
        let e6 = Error::BadResponse(
            "Code: 6, e.displayText() = DB::Exception: Cannot parse text".into(),
        );
        assert_eq!(
            Refusal::Code(clickhouse_code(&e6).unwrap()).category(),
            Category::Data
        );
        let quoted = Error::BadResponse(
            "Code: 60. DB::Exception: Table x.traffic_hourly (Code: 27) doesn't exist".into(),
        );
        assert_eq!(classify(&quoted), Failure::Refused(Refusal::Code(60)));
        assert_eq!(Refusal::Code(60).category(), Category::Other);
        assert!(matches!(classify(&Error::TimedOut), Failure::Unclear(_)));
        assert!(matches!(
            classify(&Error::BadResponse("502 Bad Gateway".into())),
            Failure::Unclear(_)
        ));
    }

    #[test]
    fn refusals_say_the_code_and_its_meaning_never_the_text() {
        let error = Error::BadResponse(
            "Code: 117, e.displayText() = DB::Exception: Unexpected value '/secret/path?visitor=1234567890123' in row 3"
                .to_string(),
        );
        let Failure::Refused(refusal) = classify(&error) else {
            panic!("not a refusal")
        };
        assert_eq!(refusal.to_string(), "ClickHouse code 117: incorrect data");
        assert_eq!(
            Refusal::Code(4242).to_string(),
            "ClickHouse code 4242: refused"
        );
        assert_eq!(
            classify(&Error::Custom("value 42".into())),
            Failure::Refused(Refusal::Encoding)
        );
        assert_eq!(Refusal::Encoding.to_string(), "cannot encode the row");
    }

    #[test]
    fn every_named_code_has_one_category() {
        let all: Vec<u32> = DATA
            .iter()
            .chain(PASSING.iter())
            .chain(OTHER.iter())
            .map(|(c, _)| *c)
            .collect();
        let mut unique = all.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(all.len(), unique.len());
    }
}
