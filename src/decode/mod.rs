//! Decoding of Pub/Sub API payloads: Avro with each event's writer schema, and the
//! ChangeEventHeader field bitmaps.
//!
//! [`avro`] compiles a writer schema into a decoding plan once; [`event`] turns a payload into a
//! [`ChangeEvent`] or a [`PlatformEvent`]; [`bitmap`] expands `changedFields` and friends into
//! names. This module also owns the subscriber's vocabulary of change events ([`ChangeType`]);
//! the emulator has its own, so the two meet only on the wire. Decoding is pure and never panics
//! on input.

pub mod avro;
pub mod bitmap;
pub mod event;
pub mod schema;

pub use event::{
    ChangeEvent, CompiledSchema, DecodeError, DecodedEvent, EventBody, FailedEvent, PlatformEvent,
    Position, ReplayId, ReplayPreset, ReplayRecovery,
};

use serde::{Deserialize, Serialize};

/// The `changeType` of a change event, in the symbol order of the Salesforce `ChangeType` enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChangeType {
    /// A record was created.
    Create,
    /// A record was updated.
    Update,
    /// A record was deleted.
    Delete,
    /// A record was restored from the recycle bin.
    Undelete,
    /// A create whose event could not be produced; re-read the record.
    GapCreate,
    /// An update whose event could not be produced; re-read the record.
    GapUpdate,
    /// A delete whose event could not be produced.
    GapDelete,
    /// An undelete whose event could not be produced; re-read the record.
    GapUndelete,
    /// A transaction exceeded 100,000 changes; the rest of this entity's changes are lost.
    GapOverflow,
}

impl ChangeType {
    /// Every symbol, in schema order.
    pub const ALL: [ChangeType; 9] = [
        ChangeType::Create,
        ChangeType::Update,
        ChangeType::Delete,
        ChangeType::Undelete,
        ChangeType::GapCreate,
        ChangeType::GapUpdate,
        ChangeType::GapDelete,
        ChangeType::GapUndelete,
        ChangeType::GapOverflow,
    ];

    /// The Avro enum symbol.
    pub fn symbol(self) -> &'static str {
        match self {
            ChangeType::Create => "CREATE",
            ChangeType::Update => "UPDATE",
            ChangeType::Delete => "DELETE",
            ChangeType::Undelete => "UNDELETE",
            ChangeType::GapCreate => "GAP_CREATE",
            ChangeType::GapUpdate => "GAP_UPDATE",
            ChangeType::GapDelete => "GAP_DELETE",
            ChangeType::GapUndelete => "GAP_UNDELETE",
            ChangeType::GapOverflow => "GAP_OVERFLOW",
        }
    }

    /// Parses an Avro enum symbol.
    pub fn from_symbol(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.symbol() == s)
    }

    /// Index of the symbol in the 9-symbol enum.
    pub fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|c| *c == self)
            .expect("every variant is listed")
    }

    /// Whether this is one of the `GAP_*` types.
    pub fn is_gap(self) -> bool {
        self.symbol().starts_with("GAP_")
    }
}

impl std::fmt::Display for ChangeType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.symbol())
    }
}
