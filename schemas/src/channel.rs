//! Channel derivation from `platform`, `utm_source` and `utm_medium` by ordered rules (SPEC §2).

use serde::{Deserialize, Serialize};

/// The ordered rule list loaded from `config/channels.yaml`; the first matching rule wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelRules {
    /// Channel given to an event that no rule matches.
    #[serde(default = "default_fallback")]
    pub fallback: String,
    /// Rules in priority order.
    pub rules: Vec<ChannelRule>,
}

fn default_fallback() -> String {
    "other".to_string()
}

/// One rule: every condition given must hold; a list condition holds when the value is in the list
/// (compared case-insensitively). A rule with no conditions matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelRule {
    /// Channel assigned when the rule matches.
    pub channel: String,
    /// `platform` must be one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Vec<String>>,
    /// `utm_source` must be one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utm_source: Option<Vec<String>>,
    /// `utm_medium` must be one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utm_medium: Option<Vec<String>>,
    /// Whether any UTM field (source, medium, campaign) is present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_utm: Option<bool>,
    /// Whether a `platform` is present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_platform: Option<bool>,
}

/// What a rule looks at.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChannelInput<'a> {
    /// Ad platform, when the event has one.
    pub platform: Option<&'a str>,
    /// `utm_source`.
    pub utm_source: Option<&'a str>,
    /// `utm_medium`.
    pub utm_medium: Option<&'a str>,
    /// `utm_campaign` (only counts toward "has UTM").
    pub utm_campaign: Option<&'a str>,
}

/// A rules file that cannot be used, naming the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ChannelRulesError {
    /// The YAML does not parse or has unknown keys.
    #[error("channel rules: cannot parse: {0}")]
    Parse(#[from] serde_yaml::Error),
    /// A rule or value is invalid.
    #[error("channel rules: `{key}`: {reason}")]
    Invalid {
        /// Path of the offending key, e.g. `rules[3].channel`.
        key: String,
        /// Why it is invalid.
        reason: String,
    },
}

impl ChannelRules {
    /// Parses and validates rules from YAML text.
    pub fn from_yaml(text: &str) -> Result<Self, ChannelRulesError> {
        let mut rules: ChannelRules = serde_yaml::from_str(text)?;
        rules.validate()?;
        rules.lowercase_values();
        Ok(rules)
    }

    /// Checks names and lists; errors name the key at fault.
    pub fn validate(&self) -> Result<(), ChannelRulesError> {
        let bad = |key: String, reason: &str| {
            Err(ChannelRulesError::Invalid {
                key,
                reason: reason.to_string(),
            })
        };
        if !valid_channel_name(&self.fallback) {
            return bad("fallback".into(), "must be 1-64 chars of a-z, 0-9, _");
        }
        if self.rules.is_empty() {
            return bad("rules".into(), "must list at least one rule");
        }
        for (i, r) in self.rules.iter().enumerate() {
            if !valid_channel_name(&r.channel) {
                return bad(
                    format!("rules[{i}].channel"),
                    "must be 1-64 chars of a-z, 0-9, _",
                );
            }
            for (name, list) in [
                ("platform", &r.platform),
                ("utm_source", &r.utm_source),
                ("utm_medium", &r.utm_medium),
            ] {
                if let Some(l) = list {
                    if l.is_empty() || l.iter().any(|v| v.trim().is_empty()) {
                        return bad(
                            format!("rules[{i}].{name}"),
                            "must be a non-empty list of non-empty values",
                        );
                    }
                }
            }
        }
        Ok(())
    }

    fn lowercase_values(&mut self) {
        for r in &mut self.rules {
            for l in [&mut r.platform, &mut r.utm_source, &mut r.utm_medium]
                .into_iter()
                .flatten()
            {
                l.iter_mut().for_each(|v| *v = v.trim().to_lowercase());
            }
        }
    }

    /// The channel for an event: the first matching rule's, else the fallback.
    pub fn classify(&self, input: &ChannelInput<'_>) -> &str {
        self.rules
            .iter()
            .find(|r| r.matches(input))
            .map_or(self.fallback.as_str(), |r| r.channel.as_str())
    }
}

impl ChannelRule {
    fn matches(&self, i: &ChannelInput<'_>) -> bool {
        let in_list = |list: &Option<Vec<String>>, v: Option<&str>| match list {
            None => true,
            Some(l) => v.is_some_and(|v| l.iter().any(|x| x.eq_ignore_ascii_case(v.trim()))),
        };
        let has_utm = i.utm_source.is_some() || i.utm_medium.is_some() || i.utm_campaign.is_some();
        in_list(&self.platform, i.platform)
            && in_list(&self.utm_source, i.utm_source)
            && in_list(&self.utm_medium, i.utm_medium)
            && self.has_utm.is_none_or(|want| want == has_utm)
            && self
                .has_platform
                .is_none_or(|want| want == i.platform.is_some())
    }
}

fn valid_channel_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = r#"
rules:
  - { channel: douyin, platform: [Douyin] }
  - { channel: douyin, utm_source: [douyin] }
  - { channel: referral, utm_medium: [referral] }
  - { channel: organic, has_utm: false, has_platform: false }
"#;

    #[test]
    fn first_match_wins_and_fallback_applies() {
        let r = ChannelRules::from_yaml(RULES).unwrap();
        let c = |p, s, m| {
            r.classify(&ChannelInput {
                platform: p,
                utm_source: s,
                utm_medium: m,
                utm_campaign: None,
            })
            .to_string()
        };
        assert_eq!(c(Some("DOUYIN"), None, None), "douyin");
        assert_eq!(c(None, Some("douyin"), Some("referral")), "douyin");
        assert_eq!(c(None, Some("friend"), Some("referral")), "referral");
        assert_eq!(c(None, None, None), "organic");
        assert_eq!(c(Some("tiktok"), None, None), "other");
    }

    #[test]
    fn validation_names_the_key() {
        let e = ChannelRules::from_yaml("rules:\n  - { channel: Bad-Name }\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "channel rules: `rules[0].channel`: must be 1-64 chars of a-z, 0-9, _"
        );
        let e = ChannelRules::from_yaml("rules:\n  - { channel: x, platfrom: [a] }\n").unwrap_err();
        assert!(e.to_string().contains("platfrom"), "{e}");
        let e = ChannelRules::from_yaml("rules:\n  - { channel: x, platform: [] }\n").unwrap_err();
        assert!(e.to_string().contains("rules[0].platform"), "{e}");
    }
}
