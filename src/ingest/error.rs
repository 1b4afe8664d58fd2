//! Ingest errors and the one place they become HTTP status codes and
//! bodies. Bodies keep Plausible's shape, `{"errors": {"<field>":
//! ["<reason>"]}}`, with Plausible's field names and, where Plausible has
//! one, its reason, so a client written against Plausible's Events API
//! reads tamis's refusals the same way. Nothing a client sent is echoed.

use hyper::StatusCode;

/// The field a refusal is about, named as Plausible names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The request as a whole: its body, method, origin, or tamis's state.
    Request,
    EventName,
    Url,
    Domain,
    Props,
    HashMode,
    /// tamis's own fields (`r`, `c`): named by their wire key.
    Wire(&'static str),
}

impl Field {
    pub fn name(self) -> &'static str {
        match self {
            Field::Request => "request",
            Field::EventName => "event_name",
            Field::Url => "url",
            Field::Domain => "domain",
            Field::Props => "props",
            Field::HashMode => "hash_mode",
            Field::Wire(key) => key,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("Unable to parse request body as json ({0})")]
    Malformed(String),
    #[error("{problem}")]
    Invalid { field: Field, problem: &'static str },
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
            IngestError::Malformed(_) | IngestError::Invalid { .. } | IngestError::Body => {
                StatusCode::BAD_REQUEST
            }
            IngestError::Method => StatusCode::METHOD_NOT_ALLOWED,
            IngestError::Origin => StatusCode::FORBIDDEN,
            IngestError::Overloaded | IngestError::LogUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The field the answer's `errors` object names.
    pub fn field(&self) -> Field {
        match self {
            IngestError::Invalid { field, .. } => *field,
            _ => Field::Request,
        }
    }

    /// The answer's body: `{"errors": {"<field>": ["<reason>"]}}`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "errors": { self.field().name(): [self.to_string()] } })
    }
}
