//! Ingest errors and the one place they become HTTP status codes.

use hyper::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("request body is not valid JSON: {0}")]
    Malformed(String),
    #[error("field `{0}` is required")]
    Missing(&'static str),
    #[error("field `{field}`: {problem}")]
    Invalid {
        field: &'static str,
        problem: &'static str,
    },
    #[error("only POST is accepted here")]
    Method,
    #[error("hits from this origin are not accepted (server.cors_allow_origin)")]
    Origin,
    #[error("the durable log is full (ClickHouse is behind or unreachable); retry later")]
    Overloaded,
    #[error("the durable log cannot be written; retry later")]
    LogUnavailable,
    #[error("could not read the request body")]
    Body,
}

impl IngestError {
    pub fn status(&self) -> StatusCode {
        match self {
            IngestError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::Malformed(_)
            | IngestError::Missing(_)
            | IngestError::Invalid { .. }
            | IngestError::Body => StatusCode::BAD_REQUEST,
            IngestError::Method => StatusCode::METHOD_NOT_ALLOWED,
            IngestError::Origin => StatusCode::FORBIDDEN,
            IngestError::Overloaded | IngestError::LogUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }
}
