//! Typed normalization failures, each with a category from a small fixed set (metric label safe).

use serde::{Deserialize, Serialize};

/// Why a message was rejected; the label used in metrics, dead letters and `ingest_errors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCategory {
    /// The message is larger than the configured limit; it was not parsed.
    Oversized,
    /// The message bytes are not valid UTF-8.
    InvalidUtf8,
    /// The message is not syntactically valid JSON.
    InvalidJson,
    /// The message is JSON but not an object.
    NotAnObject,
    /// A required field is absent or null.
    MissingField,
    /// A field has the wrong JSON type (e.g. a number where a string is required).
    InvalidType,
    /// An id field is empty or longer than 128 bytes.
    InvalidId,
    /// A timestamp field is in none of the accepted forms or out of range.
    InvalidTimestamp,
    /// A money field is not a non-negative decimal with at most 4 fractional digits.
    InvalidMoney,
    /// A field's value is not one of its allowed values.
    InvalidEnum,
    /// A field's value is malformed in another way (URL, currency code, phone, email, ...).
    InvalidValue,
    /// The message came from a topic the collector has no contract for.
    UnknownTopic,
    /// ClickHouse rejected the normalized row itself; retrying cannot help.
    SinkRejected,
}

impl ErrorCategory {
    /// Every category, in a stable order (for pre-registering metrics and for docs).
    pub const ALL: [ErrorCategory; 13] = [
        Self::Oversized,
        Self::InvalidUtf8,
        Self::InvalidJson,
        Self::NotAnObject,
        Self::MissingField,
        Self::InvalidType,
        Self::InvalidId,
        Self::InvalidTimestamp,
        Self::InvalidMoney,
        Self::InvalidEnum,
        Self::InvalidValue,
        Self::UnknownTopic,
        Self::SinkRejected,
    ];

    /// The snake_case label of this category.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oversized => "oversized",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::InvalidJson => "invalid_json",
            Self::NotAnObject => "not_an_object",
            Self::MissingField => "missing_field",
            Self::InvalidType => "invalid_type",
            Self::InvalidId => "invalid_id",
            Self::InvalidTimestamp => "invalid_timestamp",
            Self::InvalidMoney => "invalid_money",
            Self::InvalidEnum => "invalid_enum",
            Self::InvalidValue => "invalid_value",
            Self::UnknownTopic => "unknown_topic",
            Self::SinkRejected => "sink_rejected",
        }
    }
}

impl std::fmt::Display for ErrorCategory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected message: its category, the offending field (when there is one) and a readable reason.
///
/// Messages never quote personal data (phone, email, name) back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{category}: {}{message}", field.as_deref().map(|f| format!("field `{f}`: ")).unwrap_or_default())]
pub struct NormalizeError {
    /// Failure category.
    pub category: ErrorCategory,
    /// The field at fault, as a JSON path like `utm.source`, when one field is at fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Lowercase human-readable reason.
    pub message: String,
}

impl NormalizeError {
    /// An error about the message as a whole.
    pub fn whole(category: ErrorCategory, message: impl Into<String>) -> Self {
        Self {
            category,
            field: None,
            message: message.into(),
        }
    }

    /// An error about one field.
    pub fn field(
        category: ErrorCategory,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            category,
            field: Some(field.into()),
            message: message.into(),
        }
    }
}

/// Quotes a value for an error message, cut to a readable length on a char boundary.
pub(crate) fn excerpt(value: &str) -> String {
    const MAX: usize = 64;
    if value.len() <= MAX {
        return format!("{value:?}");
    }
    let mut end = MAX;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}…", &value[..end])
}
