//! The seven source topics and the event types they produce.

use serde::{Deserialize, Serialize};

/// Which wire contract a message follows; one per source topic of SPEC §1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// `leads.exposure`: ad impressions.
    Exposure,
    /// `leads.ad_click`: ad clicks.
    AdClick,
    /// `leads.signup`: account signups.
    Signup,
    /// `leads.trial`: trial lifecycle.
    Trial,
    /// `leads.call`: sales calls.
    Call,
    /// `leads.contract`: contract status changes.
    Contract,
    /// `leads.order`: paid orders.
    Order,
}

impl SourceKind {
    /// All kinds in SPEC order.
    pub const ALL: [SourceKind; 7] = [
        Self::Exposure,
        Self::AdClick,
        Self::Signup,
        Self::Trial,
        Self::Call,
        Self::Contract,
        Self::Order,
    ];

    /// The canonical topic name; also the namespace of `event_id`, so renaming a deployed topic
    /// keeps ids stable.
    pub fn canonical_topic(self) -> &'static str {
        match self {
            Self::Exposure => "leads.exposure",
            Self::AdClick => "leads.ad_click",
            Self::Signup => "leads.signup",
            Self::Trial => "leads.trial",
            Self::Call => "leads.call",
            Self::Contract => "leads.contract",
            Self::Order => "leads.order",
        }
    }

    /// Short name used in config keys and metric labels (`exposure`, `ad_click`, ...).
    pub fn as_str(self) -> &'static str {
        &self.canonical_topic()["leads.".len()..]
    }

    /// The field that carries the event time in this topic's contract.
    pub fn time_field(self) -> &'static str {
        match self {
            Self::Exposure => "ts",
            Self::AdClick => "clicked_at",
            Self::Signup => "created_at",
            Self::Trial => "at",
            Self::Call => "started_at",
            Self::Contract => "updated_at",
            Self::Order => "paid_at",
        }
    }

    /// The field that carries the source's native id in this topic's contract.
    pub fn id_field(self) -> &'static str {
        match self {
            Self::Exposure => "impression_id",
            Self::AdClick => "click_id",
            Self::Signup => "signup_id",
            Self::Trial => "trial_id",
            Self::Call => "call_id",
            Self::Contract => "contract_id",
            Self::Order => "order_id",
        }
    }

    /// Looks a kind up by its short name (`ad_click`) or canonical topic (`leads.ad_click`).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == name || k.canonical_topic() == name)
    }
}

/// The normalized event's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// Ad impression.
    Exposure,
    /// Ad click.
    Click,
    /// Signup.
    Signup,
    /// Trial started.
    TrialStarted,
    /// Trial activated.
    TrialActivated,
    /// Trial expired.
    TrialExpired,
    /// Sales call (outcome in `call_outcome`).
    Call,
    /// Contract signed.
    ContractSigned,
    /// Contract lost (reason in `reason`).
    ContractLost,
    /// Contract cancelled.
    ContractCancelled,
    /// Paid order.
    Order,
}

impl EventType {
    /// Every event type.
    pub const ALL: [Self; 11] = [
        Self::Exposure,
        Self::Click,
        Self::Signup,
        Self::TrialStarted,
        Self::TrialActivated,
        Self::TrialExpired,
        Self::Call,
        Self::ContractSigned,
        Self::ContractLost,
        Self::ContractCancelled,
        Self::Order,
    ];

    /// The type named `name` (as [`EventType::as_str`] spells it).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// The snake_case name stored in ClickHouse.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exposure => "exposure",
            Self::Click => "click",
            Self::Signup => "signup",
            Self::TrialStarted => "trial_started",
            Self::TrialActivated => "trial_activated",
            Self::TrialExpired => "trial_expired",
            Self::Call => "call",
            Self::ContractSigned => "contract_signed",
            Self::ContractLost => "contract_lost",
            Self::ContractCancelled => "contract_cancelled",
            Self::Order => "order",
        }
    }

    /// The part of the type that belongs in `event_id`: trial events and contract statuses are
    /// separate events of one native id (SPEC §1).
    pub fn id_discriminator(self) -> Option<&'static str> {
        match self {
            Self::TrialStarted | Self::TrialActivated | Self::TrialExpired => {
                Some(&self.as_str()["trial_".len()..])
            }
            Self::ContractSigned | Self::ContractLost | Self::ContractCancelled => {
                Some(&self.as_str()["contract_".len()..])
            }
            _ => None,
        }
    }
}
