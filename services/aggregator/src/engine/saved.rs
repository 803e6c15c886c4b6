//! Leads and devices as bytes, shared by checkpoints (a partition's state) and evicted groups
//! (one idle lead with the devices it holds): rule masks are saved as masks (mask indices are the
//! writer's) and strings by a symbol table saved alongside (symbols are the writer's too).
//! Changing any of these layouts means bumping [`super::CHECKPOINT_FORMAT`]: a checkpoint of
//! another format is refused and the state rebuilt from history, which starts a new era in which
//! groups evicted under the old layout are never read (see `evict`).

use super::compact::CompactEvent;
use super::fold::Settled;
use super::identity::{Claim, Device, Lead};
use super::Engine;
use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};
use smol_str::SmolStr;

/// An event with its rule mask itself and its strings as symbols of the saved table.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct SavedEvent {
    packed: i64,
    id: [u64; 2],
    mask: u64,
    channel: u16,
    variant: u16,
    reason: u16,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct SavedLead {
    pub(super) key: String,
    events: Vec<SavedEvent>,
    devices: Vec<String>,
    settled: Option<Settled>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct SavedDevice {
    pub(super) id: String,
    touches: Vec<SavedEvent>,
    owner: Option<(i64, [u64; 2], String)>,
    settled: Option<Settled>,
}

/// The symbols a save refers to: the engine's own table (a checkpoint), or only those used
/// (an evicted group, which must not carry a table of thousands of names).
pub(super) enum SymbolsOut {
    Engine,
    Used {
        names: Vec<String>,
        index: HashMap<u16, u16>,
    },
}

impl SymbolsOut {
    pub(super) fn used() -> Self {
        Self::Used {
            names: vec![String::new()],
            index: HashMap::default(),
        }
    }

    fn map(&mut self, engine: &Engine, s: u16) -> u16 {
        match self {
            Self::Engine => s,
            Self::Used { names, index } if s != 0 => *index.entry(s).or_insert_with(|| {
                names.push(engine.symbols.name(s).to_string());
                (names.len() - 1) as u16
            }),
            Self::Used { .. } => 0,
        }
    }

    /// The table to save with what was written.
    pub(super) fn names(self, engine: &Engine) -> Vec<String> {
        match self {
            Self::Engine => engine.symbols.names.iter().map(|s| s.to_string()).collect(),
            Self::Used { names, .. } => names,
        }
    }
}

impl Engine {
    pub(super) fn save_event(&self, e: &CompactEvent, out: &mut SymbolsOut) -> SavedEvent {
        SavedEvent {
            packed: e.packed,
            id: e.id,
            mask: self.masks.get(e),
            channel: out.map(self, e.channel),
            variant: out.map(self, e.variant),
            reason: out.map(self, e.reason),
        }
    }

    pub(super) fn save_lead(&self, key: &str, lead: &Lead, out: &mut SymbolsOut) -> SavedLead {
        SavedLead {
            key: key.to_string(),
            events: lead
                .events
                .iter()
                .map(|e| self.save_event(e, out))
                .collect(),
            devices: lead.devices.iter().map(|d| d.to_string()).collect(),
            settled: lead.settled.as_deref().copied(),
        }
    }

    pub(super) fn save_device(&self, id: &str, dev: &Device, out: &mut SymbolsOut) -> SavedDevice {
        SavedDevice {
            id: id.to_string(),
            touches: dev
                .touches
                .iter()
                .map(|e| self.save_event(e, out))
                .collect(),
            owner: dev
                .owner
                .as_ref()
                .map(|c| (c.time_ms, c.id, c.lead.to_string())),
            settled: dev.settled.as_deref().copied(),
        }
    }

    /// This engine's symbol for each of a saved table's.
    pub(super) fn symbols_in(&mut self, names: &[String]) -> Vec<u16> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                if i == 0 {
                    0
                } else {
                    self.symbols.intern(Some(n))
                }
            })
            .collect()
    }

    pub(super) fn load_event(&mut self, e: &SavedEvent, symbols: &[u16]) -> CompactEvent {
        let symbol = |i: u16| symbols.get(i as usize).copied().unwrap_or(0);
        CompactEvent {
            packed: e.packed,
            id: e.id,
            rules: self.masks.intern(e.mask, e.id),
            channel: symbol(e.channel),
            variant: symbol(e.variant),
            reason: symbol(e.reason),
        }
    }

    pub(super) fn load_lead(&mut self, l: &SavedLead, symbols: &[u16]) -> (SmolStr, Lead) {
        let lead = Lead {
            events: l
                .events
                .iter()
                .map(|e| self.load_event(e, symbols))
                .collect(),
            devices: l.devices.iter().map(SmolStr::new).collect(),
            settled: l.settled.map(Box::new),
        };
        (SmolStr::new(&l.key), lead)
    }

    pub(super) fn load_device(&mut self, d: &SavedDevice, symbols: &[u16]) -> (SmolStr, Device) {
        let dev = Device {
            touches: d
                .touches
                .iter()
                .map(|e| self.load_event(e, symbols))
                .collect(),
            owner: d.owner.as_ref().map(|(time_ms, id, lead)| {
                Box::new(Claim {
                    time_ms: *time_ms,
                    id: *id,
                    lead: SmolStr::new(lead),
                })
            }),
            settled: d.settled.map(Box::new),
        };
        (SmolStr::new(&d.id), dev)
    }
}
