//! The closed sets metric labels come from: each an enum with its label names, so a label
//! value can only be one the code names (a channel is the one open label, in `metrics`).
//! Types other modules own ([`SkipReason`], [`ReplayRecovery`], [`TakeoverReason`]) are encoded
//! through their own names.

use std::fmt::{self, Write};

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

use crate::decode::{DecodeError, ReplayRecovery};
use crate::rules::SkipReason;
use crate::store::lease::TakeoverReason;

/// Encodes a closed enum as a label value through one of its `&'static str` names.
macro_rules! label_value {
    ($ty:ty, $name:ident) => {
        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
                encoder.write_str(self.$name())
            }
        }
    };
}

/// A closed set of label values: the enum, its names, and its label encoding.
macro_rules! labels {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $label:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every value.
            pub const ALL: &[$name] = &[$($name::$variant,)+];

            /// The label value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }
        }

        label_value!($name, as_str);
    };
}

label_value!(SkipReason, label);
label_value!(ReplayRecovery, name);
label_value!(TakeoverReason, as_str);

labels! {
    /// Why an event was quarantined: the `reason` of `sfcdc_events_quarantined_total` and the
    /// stored `kind`.
    QuarantineKind {
        /// The schema JSON is not valid Avro.
        Schema => "schema",
        /// The payload does not match its schema.
        Payload => "payload",
        /// A header field is missing or of the wrong type.
        Header => "header",
        /// A header bitmap is malformed.
        Bitmap => "bitmap",
        /// The schema the event names does not exist.
        UnknownSchema => "unknown_schema",
        /// The rules cannot evaluate the event.
        Rule => "rule",
    }
}

impl From<&DecodeError> for QuarantineKind {
    fn from(e: &DecodeError) -> QuarantineKind {
        match e {
            DecodeError::Schema(_) => QuarantineKind::Schema,
            DecodeError::Payload(_) => QuarantineKind::Payload,
            DecodeError::Header(_) => QuarantineKind::Header,
            DecodeError::Bitmap(_) => QuarantineKind::Bitmap,
            DecodeError::UnknownSchema(_) => QuarantineKind::UnknownSchema,
        }
    }
}

labels! {
    /// Why a stream was replaced: the `reason` of `sfcdc_reconnects_total`.
    ReconnectReason {
        /// The session was rejected; sfcdc logged in again.
        Auth => "auth",
        /// The stored replay id was rejected; `SFCDC_REPLAY_RECOVERY` applied.
        ReplayRejected => "replay_rejected",
        /// The server ended the stream.
        StreamEnded => "stream_ended",
        /// Nothing, not even a keepalive, arrived within `SFCDC_STREAM_TIMEOUT`.
        Watchdog => "watchdog",
        /// A batch did not commit.
        CommitFailed => "commit_failed",
        /// The `service.unavailable` error code.
        ServiceUnavailable => "service_unavailable",
        /// gRPC `UNAVAILABLE`.
        Unavailable => "unavailable",
        /// gRPC `INTERNAL`.
        Internal => "internal",
        /// gRPC `RESOURCE_EXHAUSTED`.
        ResourceExhausted => "resource_exhausted",
        /// Any other status.
        Other => "other",
    }
}

labels! {
    /// How a recorded job step ended: the `outcome` of `sfcdc_job_steps_total`.
    StepOutcome {
        /// The job finished and its outcome is written back.
        Completed => "completed",
        /// The order no longer qualifies.
        Cancelled => "cancelled",
        /// Out of attempts, or a permanent error.
        Dead => "dead",
        /// The step failed; a retry is scheduled.
        Retry => "retry",
        /// The operation is still running; it is polled again.
        Poll => "poll",
    }
}

labels! {
    /// A notifier, by the name stored on its deliveries.
    NotifierKind {
        /// A signed JSON POST.
        Webhook => "webhook",
        /// A GitHub `repository_dispatch`.
        GitHub => "github",
        /// A stored name sfcdc does not know.
        Unknown => "unknown",
    }
}

impl NotifierKind {
    /// The notifier a delivery's stored name means.
    pub fn of(stored: &str) -> NotifierKind {
        NotifierKind::ALL
            .iter()
            .copied()
            .find(|n| n.as_str() == stored)
            .unwrap_or(NotifierKind::Unknown)
    }
}

labels! {
    /// How a delivery attempt ended: the `outcome` of `sfcdc_deliveries_total`.
    DeliveryOutcome {
        /// The notifier accepted it.
        Delivered => "delivered",
        /// It failed; a retry is scheduled.
        Retry => "retry",
        /// Out of attempts, or a permanent error.
        Dead => "dead",
    }
}

labels! {
    /// One of the order cache's entry kinds: the `cache` label.
    CacheKind {
        /// Orders by id.
        Order => "order",
        /// The order lists of accounts.
        AccountOrders => "account_orders",
        /// The rules' guard lookups.
        Guard => "guard",
    }
}

labels! {
    /// Why a reconcile scan ran: the `reason` of `sfcdc_reconcile_jobs_created_total`.
    ReconcileReason {
        /// An operator ran `sfcdc reconcile`.
        Manual => "manual",
        /// The stored replay position was rejected: the lost window is scanned.
        ReplayLost => "replay_lost",
        /// A `GAP_OVERFLOW`: Salesforce dropped changes.
        GapOverflow => "gap_overflow",
        /// A change event named its records by a wildcard.
        Wildcard => "wildcard",
        /// The first start's backfill (`SFCDC_BACKFILL`).
        Backfill => "backfill",
        /// The periodic check (`SFCDC_RECONCILE_EVERY`).
        Periodic => "periodic",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::bitmap::BitmapError;

    #[test]
    fn a_decode_error_is_quarantined_under_its_own_kind() {
        let errors = [
            DecodeError::Schema("x".into()),
            DecodeError::Header("x"),
            DecodeError::Payload(crate::decode::avro::AvroError::Eof {
                offset: 1,
                needed: 2,
            }),
            DecodeError::UnknownSchema("x".into()),
            DecodeError::Bitmap(BitmapError::NotHex {
                element: "x".into(),
            }),
        ];
        for e in &errors {
            assert_eq!(QuarantineKind::from(e).as_str(), e.kind(), "{e}");
        }
    }
}
