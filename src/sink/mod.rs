//! The sink: everything that writes to ClickHouse. Migrations ([`schema`],
//! [`migrate`]), the batch writer ([`writer`]), the shared daily salts
//! ([`salts`]), the daily rollups of finished days ([`rollup`]) and the
//! privacy-operations records: retention ([`retention`]) and the audit log
//! ([`audit`]). Only this module and `query` use the `clickhouse` crate.

pub mod audit;
pub mod migrate;
pub mod retention;
pub mod rollup;
pub mod rows;
pub mod salts;
pub mod schema;
pub mod writer;

use crate::config::ClickHouseSettings;

/// A client for the configured server. Validation is off: it needs
/// `RowBinaryWithNamesAndTypes`, which ClickHouse 18.16 does not know.
pub fn client(settings: &ClickHouseSettings) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(&settings.url)
        .with_user(&settings.user)
        .with_password(&settings.password)
        .with_database(&settings.database)
        .with_validation(false)
}

/// Whether an error is about the data (never retried: it would fail again)
/// rather than the transport. ClickHouse codes 53 (type mismatch) and 117
/// (incorrect data) are the usual ones.
pub fn is_data_error(error: &clickhouse::error::Error) -> bool {
    use clickhouse::error::Error;
    match error {
        Error::BadResponse(text) => ["Code: 53", "Code: 117", "Code: 27", "Code: 6.", "Code: 41"]
            .iter()
            .any(|code| text.contains(code)),
        Error::Custom(_) | Error::SequenceMustHaveLength | Error::InvalidUtf8Encoding(_) => true,
        _ => false,
    }
}

/// What tamis says of a data error, in logs and in the dead-letter folder:
/// ClickHouse's code and what it means, never ClickHouse's text, which can
/// quote the refused value (a path, a visitor value).
pub fn data_error_reason(error: &clickhouse::error::Error) -> String {
    use clickhouse::error::Error;
    match error {
        Error::BadResponse(text) => {
            let code = text
                .split_once("Code: ")
                .map(|(_, rest)| {
                    rest.chars()
                        .take_while(char::is_ascii_digit)
                        .collect::<String>()
                })
                .filter(|digits| !digits.is_empty());
            let meaning = match code.as_deref() {
                Some("6") => "cannot parse text",
                Some("27") => "cannot parse input",
                Some("41") => "cannot parse date and time",
                Some("53") => "type mismatch",
                Some("117") => "incorrect data",
                _ => "refused data",
            };
            match code {
                Some(code) => format!("ClickHouse code {code}: {meaning}"),
                None => format!("ClickHouse: {meaning}"),
            }
        }
        Error::Custom(_) => "cannot encode the row".to_string(),
        Error::SequenceMustHaveLength => "cannot encode a sequence of unknown length".to_string(),
        Error::InvalidUtf8Encoding(_) => "invalid UTF-8".to_string(),
        _ => "refused data".to_string(),
    }
}

/// Whether an error means ClickHouse could not be reached (worth waiting
/// for), as opposed to an answer that refused the request.
pub fn is_transport_error(error: &clickhouse::error::Error) -> bool {
    matches!(
        error,
        clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickhouse::error::Error;

    #[test]
    fn data_error_reasons_keep_the_code_and_drop_the_quoted_value() {
        let error = Error::BadResponse(
            "Code: 117, e.displayText() = DB::Exception: Unexpected value '/secret/path?visitor=1234567890123' in row 3"
                .to_string(),
        );
        assert!(is_data_error(&error));
        assert_eq!(
            data_error_reason(&error),
            "ClickHouse code 117: incorrect data"
        );
        let odd = Error::BadResponse("Code: 53. DB::Exception: Type mismatch for 'x'".to_string());
        assert_eq!(data_error_reason(&odd), "ClickHouse code 53: type mismatch");
        let bare = Error::BadResponse("no code here 'value'".to_string());
        assert_eq!(data_error_reason(&bare), "ClickHouse: refused data");
        assert_eq!(
            data_error_reason(&Error::Custom("value 42".to_string())),
            "cannot encode the row"
        );
    }
}
