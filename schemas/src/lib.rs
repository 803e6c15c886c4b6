//! leadstream's data contract: raw source payloads → validated normalized lead events.
//!
//! No I/O: everything here is pure and deterministic for a given configuration, so the collector,
//! the generator's self-checks and the tests all share one definition of "valid".

pub mod channel;
pub mod error;
pub mod event;
pub mod migrations;
pub mod money;
pub mod normalize;
pub mod partition;
pub mod pii;
pub mod screening;
pub mod secret;
pub mod source;
pub mod timestamp;

pub use channel::{ChannelInput, ChannelRules, ChannelRulesError};
pub use error::{ErrorCategory, NormalizeError};
pub use event::{ContractViolation, NormalizedEvent};
pub use normalize::{
    event_id, Normalizer, NormalizerConfig, SourceMeta, DEFAULT_MAX_MESSAGE_BYTES,
};
pub use screening::Screening;
pub use secret::Secret;
pub use source::{EventType, SourceKind};
