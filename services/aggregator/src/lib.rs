//! The leadstream aggregator: keeps every lead's place in the funnels of `config/funnel.yaml`
//! from `leads.normalized`, writes stage transitions and lead states to ClickHouse, and answers
//! funnel questions (flow, cohort conversion, occupancy, losses, channel mix, A/B) over HTTP.

pub mod engine;
pub mod funnel;
pub mod machine;
pub mod rows;

pub use engine::{Engine, Ingested, Output};
pub use funnel::{FunnelConfigError, Funnels};
