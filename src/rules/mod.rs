//! The provisioning rules: pure functions from a decoded event (and the order facts read from
//! Salesforce) to a [`Decision`].
//!
//! **Triggers.** An Order UPDATE whose `Status` is in `changedFields` and whose new status is a
//! trigger status; an Order CREATE that already has one; a fulfilment platform event naming an
//! order; a `GAP_CREATE`/`GAP_UPDATE`/`GAP_UNDELETE` on Orders (evaluated from a re-read, as if
//! the status had just changed); and, after a `GAP_OVERFLOW`, every recently modified order.
//!
//! **Guards.** The activation status is not blocking, and no external id exists. A guard field
//! is taken from the event only when the event really carries it (changed, nulled, or present in a
//! CREATE): an UPDATE's unchanged fields are null, which says nothing. Otherwise it is read from
//! Salesforce through the lookup seam. Evaluation is two-phase: [`evaluate`] first answers with the
//! orders it needs, the caller looks them up, and [`evaluate`] is called again with the facts.
//!
//! **Keys** derive from the event and the order, never from the clock: the same change seen again
//! (a replay, the multi-entity channel, another instance) yields the same key.
//!
//! Every Order or OrderItem event whose customer-facing fields changed also yields cache
//! invalidations; gap events invalidate conservatively.

use crate::config::{ConfigError, Env};
use crate::decode::avro::Value;
use crate::decode::{ChangeEvent, ChangeType, DecodedEvent, EventBody, PlatformEvent};
use crate::sfid::SfId;

/// Rule settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesConfig {
    /// `SFCDC_PROVISION_STATUSES`: statuses that trigger provisioning.
    pub provision_statuses: Vec<String>,
    /// `SFCDC_ACTIVATION_FIELD`: the activation status field.
    pub activation_field: String,
    /// `SFCDC_ACTIVATION_BLOCKING`: activation statuses that block a new job.
    pub activation_blocking: Vec<String>,
    /// `SFCDC_EXTERNAL_ID_FIELD`: the fulfilment system's id on the order.
    pub external_id_field: String,
    /// `SFCDC_FULFILMENT_EVENT`: the platform-event topic that requests fulfilment.
    pub fulfilment_event: String,
    /// `SFCDC_FULFILMENT_EVENT_ORDER_FIELD`: the field of that event naming the order.
    pub fulfilment_order_field: String,
    /// `SFCDC_CUSTOMER_FIELDS`: changes to these fields invalidate cached reads.
    pub customer_fields: Vec<String>,
    /// `SFCDC_RECONCILE_WINDOW`: after a `GAP_OVERFLOW`, orders modified this long before the
    /// overflowing commit are re-read.
    pub reconcile_window_ms: i64,
}

/// An order's status field.
const STATUS: &str = "Status";
/// An order's account field.
const ACCOUNT: &str = "AccountId";
/// An order item's order field.
const ITEM_ORDER: &str = "OrderId";

/// The default customer-facing fields: what an order page shows. Left out on purpose:
/// `LastModifiedDate`, `LastModifiedById`, `SystemModstamp`, `OwnerId` and the activation and
/// external-id fields, which change as sfcdc works and mean nothing to a customer.
pub const DEFAULT_CUSTOMER_FIELDS: &str = "Status,StatusCode,EffectiveDate,EndDate,TotalAmount,BillingAddress,ShippingAddress,Name,OrderNumber,PoNumber,PoDate,Description,Type,AccountId,ActivatedDate,Quantity,UnitPrice,ListPrice,TotalPrice,Product2Id,PricebookEntryId,ServiceDate";

pub(crate) fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

pub(crate) fn field_name(s: &str) -> Result<String, String> {
    if !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
    {
        Ok(s.to_owned())
    } else {
        Err("expected a field API name (letters, digits and underscores)".into())
    }
}

impl RulesConfig {
    /// Reads the rule variables.
    pub fn from_env(env: &Env) -> Result<RulesConfig, ConfigError> {
        let names = |key: &str, default: &str| {
            env.parse_or(key, list(default), |s| {
                let v = list(s);
                if v.is_empty() {
                    Err("the list is empty".into())
                } else {
                    Ok(v)
                }
            })
        };
        let topic = env.parse_or(
            "SFCDC_FULFILMENT_EVENT",
            "/event/Order_Fulfilment_Requested__e".to_owned(),
            |s| {
                if s.starts_with("/event/") {
                    Ok(s.to_owned())
                } else {
                    Err("expected a platform-event topic such as /event/Name__e".into())
                }
            },
        )?;
        let customer_fields = names("SFCDC_CUSTOMER_FIELDS", DEFAULT_CUSTOMER_FIELDS)?;
        for f in &customer_fields {
            field_name(f)
                .map_err(|e| ConfigError::new("SFCDC_CUSTOMER_FIELDS", format!("'{f}': {e}")))?;
        }
        Ok(RulesConfig {
            provision_statuses: names("SFCDC_PROVISION_STATUSES", "Approved,Reactivate")?,
            activation_field: env.parse_or(
                "SFCDC_ACTIVATION_FIELD",
                "Activation_Status__c".into(),
                field_name,
            )?,
            activation_blocking: names("SFCDC_ACTIVATION_BLOCKING", "Activating,Activated")?,
            external_id_field: env.parse_or(
                "SFCDC_EXTERNAL_ID_FIELD",
                "WHMCS_Order_ID__c".into(),
                field_name,
            )?,
            fulfilment_event: topic,
            fulfilment_order_field: env.parse_or(
                "SFCDC_FULFILMENT_EVENT_ORDER_FIELD",
                "OrderId__c".into(),
                field_name,
            )?,
            customer_fields,
            reconcile_window_ms: env
                .duration_or(
                    "SFCDC_RECONCILE_WINDOW",
                    std::time::Duration::from_secs(3600),
                )?
                .as_millis() as i64,
        })
    }

    /// The defaults, as documented.
    pub fn defaults() -> RulesConfig {
        RulesConfig::from_env(&Env::default()).expect("the defaults are valid")
    }

    /// The top-level event fields the rules read a value of (a change event's `Status`,
    /// `AccountId` and guard fields, an item's `OrderId`, the fulfilment event's order field):
    /// ingest decodes these and skips every other body field. Changed, nulled and diff field
    /// *names* come from the header, which is always decoded. Keep in step with every
    /// `fields.get` and `carried` below; the projection tests evaluate every rule both ways.
    pub fn event_fields(&self) -> Vec<String> {
        let mut fields: Vec<String> = [STATUS, ACCOUNT, ITEM_ORDER]
            .into_iter()
            .map(str::to_owned)
            .collect();
        for f in [
            &self.activation_field,
            &self.external_id_field,
            &self.fulfilment_order_field,
        ] {
            if !fields.contains(f) {
                fields.push(f.clone());
            }
        }
        fields
    }

    fn is_trigger(&self, status: Option<&str>) -> bool {
        status.is_some_and(|s| self.provision_statuses.iter().any(|p| p == s))
    }

    fn is_customer_facing(&self, field: &str) -> bool {
        let top = field.split('.').next().unwrap_or(field);
        self.customer_fields.iter().any(|f| f == top)
    }
}

/// What Salesforce says about an order now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OrderFacts {
    /// Its `Status`.
    pub status: Option<String>,
    /// Its activation status.
    pub activation: Option<String>,
    /// Its external id.
    pub external_id: Option<String>,
    /// Its account.
    pub account_id: Option<String>,
}

/// Facts the caller looked up: `None` for an order that does not exist (or was deleted).
pub type Facts = foldhash::HashMap<SfId, Option<OrderFacts>>;

/// How a job came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    /// An Order CREATE with a trigger status.
    Create,
    /// An Order UPDATE changing the status to a trigger status.
    StatusChange,
    /// The fulfilment platform event.
    PlatformEvent,
    /// A gap event, re-read.
    Gap,
    /// Reconciliation after a `GAP_OVERFLOW`.
    Overflow,
    /// A reconcile scan (`sfcdc reconcile`, a lost replay position, a backfill, a periodic
    /// check): an order found approved with no job.
    Reconcile,
}

impl TriggerKind {
    /// The name stored with the job.
    pub fn name(self) -> &'static str {
        match self {
            TriggerKind::Create => "create",
            TriggerKind::StatusChange => "status_change",
            TriggerKind::PlatformEvent => "platform_event",
            TriggerKind::Gap => "gap",
            TriggerKind::Overflow => "overflow",
            TriggerKind::Reconcile => "reconcile",
        }
    }

    /// Parses the name stored with a job. A name this version does not know is read as a
    /// status change, the strictest kind, so an unknown job is never submitted on weaker terms.
    pub fn from_name(name: &str) -> TriggerKind {
        match name {
            "create" => TriggerKind::Create,
            "platform_event" => TriggerKind::PlatformEvent,
            "gap" => TriggerKind::Gap,
            "overflow" => TriggerKind::Overflow,
            "reconcile" => TriggerKind::Reconcile,
            _ => TriggerKind::StatusChange,
        }
    }

    /// Whether the order must hold a trigger status for a job of this kind, both when the job is
    /// created and when the worker submits it. The fulfilment platform event asks for the order
    /// to be fulfilled whatever its status; every other kind is an approval, and an approval
    /// withdrawn before the worker runs is cancelled.
    pub fn needs_trigger_status(self) -> bool {
        match self {
            TriggerKind::PlatformEvent => false,
            TriggerKind::Create
            | TriggerKind::StatusChange
            | TriggerKind::Gap
            | TriggerKind::Overflow
            | TriggerKind::Reconcile => true,
        }
    }
}

/// A provisioning job to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRequest {
    /// Idempotency key: the trigger's identity.
    pub key: String,
    /// The order.
    pub order_id: SfId,
    /// Its account, if known.
    pub account_id: Option<String>,
    /// The order's status that triggered it (with the order, this names the approval).
    pub status: String,
    /// How it was triggered.
    pub kind: TriggerKind,
}

/// A cache entry to drop.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Invalidation {
    /// One order; its account's order list too, when the account is known (else the cache
    /// finds it from what it holds).
    Order {
        /// The order.
        order_id: SfId,
        /// Its account, if the event says.
        account_id: Option<String>,
    },
}

/// Why an event, or one record of it, creates no job. A closed set: these are metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Not an Order change nor the fulfilment event.
    NotAnOrderEvent,
    /// An UPDATE that does not change `Status`.
    StatusUnchanged,
    /// The status is not a trigger status.
    StatusNotTrigger,
    /// A DELETE, UNDELETE or GAP_DELETE.
    NotATriggerChange,
    /// The activation status blocks a new job.
    ActivationBlocking,
    /// The order already has an external id.
    ExternalIdPresent,
    /// The order does not exist (any more).
    OrderNotFound,
    /// Another platform event.
    UnhandledPlatformEvent,
    /// The same event was evaluated before (a replay).
    DuplicateEvent,
    /// The approval already has an open job (another signal for it came first).
    DuplicateApproval,
}

impl SkipReason {
    /// Every reason.
    pub const ALL: [SkipReason; 10] = [
        SkipReason::NotAnOrderEvent,
        SkipReason::StatusUnchanged,
        SkipReason::StatusNotTrigger,
        SkipReason::NotATriggerChange,
        SkipReason::ActivationBlocking,
        SkipReason::ExternalIdPresent,
        SkipReason::OrderNotFound,
        SkipReason::UnhandledPlatformEvent,
        SkipReason::DuplicateEvent,
        SkipReason::DuplicateApproval,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            SkipReason::NotAnOrderEvent => "not_an_order_event",
            SkipReason::StatusUnchanged => "status_unchanged",
            SkipReason::StatusNotTrigger => "status_not_trigger",
            SkipReason::NotATriggerChange => "not_a_trigger_change",
            SkipReason::ActivationBlocking => "activation_blocking",
            SkipReason::ExternalIdPresent => "external_id_present",
            SkipReason::OrderNotFound => "order_not_found",
            SkipReason::UnhandledPlatformEvent => "unhandled_platform_event",
            SkipReason::DuplicateEvent => "duplicate_event",
            SkipReason::DuplicateApproval => "duplicate_approval",
        }
    }
}

/// A trigger that was evaluated: recorded so a replay of the same event is recognised even when
/// it created no job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerRecord {
    /// The trigger's identity (also the key of the job it created, if any).
    pub key: String,
    /// The order.
    pub order_id: SfId,
    /// `None` when a job was requested.
    pub skipped: Option<SkipReason>,
}

/// What one event leads to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Jobs to create.
    pub jobs: Vec<JobRequest>,
    /// Cache entries to drop.
    pub invalidations: Vec<Invalidation>,
    /// Why records created no job (one per record; empty when every record made a job).
    pub skips: Vec<SkipReason>,
    /// Triggers evaluated, with their outcome.
    pub triggers: Vec<TriggerRecord>,
}

/// An event the rules cannot make sense of: it is quarantined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// A record id in the event is not a Salesforce id.
    #[error("record id {0:?} is not a Salesforce id")]
    BadRecordId(String),
    /// The fulfilment event names no order, or not an order id.
    #[error("{field} is {value:?}, not an order id")]
    BadOrderField {
        /// The configured field.
        field: String,
        /// What the event carried.
        value: String,
    },
    /// A change event with no record ids where one is required.
    #[error("{0} event has no record ids")]
    NoRecordIds(ChangeType),
}

/// The result of one evaluation step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evaluation {
    /// The decision.
    Done(Decision),
    /// Look these orders up (all of them, present or not) and evaluate again.
    NeedOrders(Vec<SfId>),
    /// Look up orders modified since this time (epoch ms) and evaluate them with
    /// [`reconcile`].
    NeedReconciliation {
        /// Lower bound of `LastModifiedDate`.
        since_ms: i64,
        /// What was lost.
        lost: Lost,
    },
}

/// Why an event says changes were lost, and orders must be re-read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lost {
    /// A `GAP_OVERFLOW`: Salesforce dropped changes it could not report.
    Overflow,
    /// Record ids given as a wildcard (`801*`): these records changed, their ids unknown.
    Wildcard,
}

impl Lost {
    /// The prefix of the keys of the triggers a re-read records.
    pub fn key_prefix(self) -> &'static str {
        match self {
            Lost::Overflow => "overflow",
            Lost::Wildcard => "wildcard",
        }
    }
}

/// Whether a record id is a wildcard: a key prefix followed by `*` (`801*`), as Salesforce
/// sends when it knows which kind of record changed but not which ones.
pub fn is_wildcard(id: &str) -> bool {
    id.ends_with('*')
}

fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::to_owned)
}

/// A guard field's value when the event carries it, else `None` (read it from Salesforce).
fn carried(c: &ChangeEvent, field: &str) -> Option<Option<String>> {
    c.carried(field).map(|v| text(Some(v)))
}

/// The one definition of "this order qualifies for a job of this kind", from what is known of
/// it: the status (when the kind needs a trigger status), then the guards (the activation status
/// does not block, and there is no external id). Ingest asks it before creating a job and the
/// worker asks it again, on fresh facts, before submitting, so the two cannot disagree on what a
/// trigger kind means.
pub fn qualifies(
    cfg: &RulesConfig,
    kind: TriggerKind,
    facts: &OrderFacts,
) -> Result<(), SkipReason> {
    if kind.needs_trigger_status() && !cfg.is_trigger(facts.status.as_deref()) {
        return Err(SkipReason::StatusNotTrigger);
    }
    if facts
        .activation
        .as_deref()
        .is_some_and(|a| cfg.activation_blocking.iter().any(|b| b == a))
    {
        return Err(SkipReason::ActivationBlocking);
    }
    if facts
        .external_id
        .as_deref()
        .is_some_and(|e| !e.trim().is_empty())
    {
        return Err(SkipReason::ExternalIdPresent);
    }
    Ok(())
}

/// Whether an order still qualifies for its provisioning job of `kind`, checked by the worker on
/// fresh facts just before it submits: [`qualifies`], with one allowance. `own_activating` says
/// the job itself may already have written `Activating` (a resumed or retried step), which then
/// does not block it. `Err` says why the job should be cancelled.
pub fn recheck(
    cfg: &RulesConfig,
    kind: TriggerKind,
    facts: &OrderFacts,
    own_activating: bool,
) -> Result<(), String> {
    let own = own_activating && facts.activation.as_deref() == Some("Activating");
    let seen = OrderFacts {
        activation: facts.activation.clone().filter(|_| !own),
        ..facts.clone()
    };
    qualifies(cfg, kind, &seen).map_err(|reason| match reason {
        SkipReason::StatusNotTrigger => format!(
            "the order's status is now {}, not a trigger status",
            facts.status.as_deref().unwrap_or("empty")
        ),
        SkipReason::ActivationBlocking => format!(
            "the order's {} is already {}",
            cfg.activation_field,
            facts.activation.as_deref().unwrap_or_default()
        ),
        _ => format!(
            "the order already has {} {}",
            cfg.external_id_field,
            facts.external_id.as_deref().unwrap_or_default()
        ),
    })
}

fn parse_ids(ids: &[compact_str::CompactString]) -> Result<Vec<SfId>, RuleError> {
    ids.iter()
        .map(|i| SfId::parse(i).map_err(|_| RuleError::BadRecordId(i.to_string())))
        .collect()
}

/// Adds the outcome of one evaluated trigger to a decision.
fn conclude(
    d: &mut Decision,
    key: String,
    order_id: SfId,
    account_id: Option<String>,
    status: String,
    kind: TriggerKind,
    skip: Option<SkipReason>,
) {
    d.triggers.push(TriggerRecord {
        key: key.clone(),
        order_id: order_id.clone(),
        skipped: skip,
    });
    match skip {
        Some(reason) => d.skips.push(reason),
        None => d.jobs.push(JobRequest {
            key,
            order_id,
            account_id,
            status,
            kind,
        }),
    }
}

/// Evaluates a trigger whose facts all come from Salesforce (gap events, platform events,
/// reconciliation).
fn from_facts(
    cfg: &RulesConfig,
    d: &mut Decision,
    key: String,
    id: &SfId,
    facts: Option<&OrderFacts>,
    kind: TriggerKind,
) {
    let Some(f) = facts else {
        d.skips.push(SkipReason::OrderNotFound);
        return;
    };
    let verdict = qualifies(cfg, kind, f);
    if verdict == Err(SkipReason::StatusNotTrigger) {
        // Not a trigger at all: nothing to remember about it.
        d.skips.push(SkipReason::StatusNotTrigger);
        return;
    }
    conclude(
        d,
        key,
        id.clone(),
        f.account_id.clone(),
        f.status.clone().unwrap_or_default(),
        kind,
        verdict.err(),
    );
}

fn invalidations(
    cfg: &RulesConfig,
    c: &ChangeEvent,
    ids: &[SfId],
    account: Option<String>,
) -> Vec<Invalidation> {
    let relevant = match c.change_type {
        ChangeType::Update => {
            c.changed_fields.iter().any(|f| cfg.is_customer_facing(f))
                || c.nulled_fields.iter().any(|f| cfg.is_customer_facing(f))
        }
        // Creates, deletes, undeletes and every gap change what a customer sees.
        _ => true,
    };
    if !relevant {
        return Vec::new();
    }
    ids.iter()
        .map(|id| Invalidation::Order {
            order_id: id.clone(),
            account_id: account.clone(),
        })
        .collect()
}

fn change_key(prefix: &str, c: &ChangeEvent, id: &SfId) -> String {
    format!("{prefix}:{}:{}:{id}", c.transaction_key, c.sequence_number)
}

fn evaluate_order_change(
    cfg: &RulesConfig,
    c: &ChangeEvent,
    facts: &Facts,
) -> Result<Evaluation, RuleError> {
    if c.record_ids.iter().any(|id| is_wildcard(id)) {
        return Ok(match c.change_type {
            // Records deleted: nothing to provision, and their cache entries expire.
            ChangeType::Delete | ChangeType::GapDelete => Evaluation::Done(Decision {
                skips: vec![SkipReason::NotATriggerChange],
                ..Decision::default()
            }),
            _ => Evaluation::NeedReconciliation {
                since_ms: c.commit_timestamp.saturating_sub(cfg.reconcile_window_ms),
                lost: Lost::Wildcard,
            },
        });
    }
    let ids = parse_ids(&c.record_ids)?;
    let account = carried(c, ACCOUNT).flatten();
    let mut d = Decision {
        invalidations: invalidations(cfg, c, &ids, account.clone()),
        ..Decision::default()
    };
    match c.change_type {
        ChangeType::Create | ChangeType::Update => {
            if ids.is_empty() {
                return Err(RuleError::NoRecordIds(c.change_type));
            }
            let kind = if c.change_type == ChangeType::Create {
                TriggerKind::Create
            } else {
                TriggerKind::StatusChange
            };
            if c.change_type == ChangeType::Update && !c.changed(STATUS) {
                d.skips
                    .extend(ids.iter().map(|_| SkipReason::StatusUnchanged));
                return Ok(Evaluation::Done(d));
            }
            let status = text(c.fields.get(STATUS));
            if kind.needs_trigger_status() && !cfg.is_trigger(status.as_deref()) {
                d.skips
                    .extend(ids.iter().map(|_| SkipReason::StatusNotTrigger));
                return Ok(Evaluation::Done(d));
            }
            let activation = carried(c, &cfg.activation_field);
            let external = carried(c, &cfg.external_id_field);
            if (activation.is_none() || external.is_none()) && c.change_type == ChangeType::Update {
                let missing: Vec<SfId> = ids
                    .iter()
                    .filter(|id| !facts.contains_key(*id))
                    .cloned()
                    .collect();
                if !missing.is_empty() {
                    return Ok(Evaluation::NeedOrders(missing));
                }
            }
            for id in &ids {
                let f = facts.get(id).cloned().flatten();
                if c.change_type == ChangeType::Update
                    && facts.get(id).is_some_and(Option::is_none)
                    && (activation.is_none() || external.is_none())
                {
                    // A guard must be read and the order is gone: nothing to provision.
                    d.skips.push(SkipReason::OrderNotFound);
                    continue;
                }
                // The status comes from the event; each guard from the event when it carries
                // it, else from Salesforce.
                let known = OrderFacts {
                    status: status.clone(),
                    activation: activation
                        .clone()
                        .unwrap_or_else(|| f.as_ref().and_then(|f| f.activation.clone())),
                    external_id: external
                        .clone()
                        .unwrap_or_else(|| f.as_ref().and_then(|f| f.external_id.clone())),
                    account_id: account
                        .clone()
                        .or_else(|| f.as_ref().and_then(|f| f.account_id.clone())),
                };
                conclude(
                    &mut d,
                    change_key("cdc", c, id),
                    id.clone(),
                    known.account_id.clone(),
                    status.clone().unwrap_or_default(),
                    kind,
                    qualifies(cfg, kind, &known).err(),
                );
            }
            Ok(Evaluation::Done(d))
        }
        ChangeType::GapCreate | ChangeType::GapUpdate | ChangeType::GapUndelete => {
            if ids.is_empty() {
                return Err(RuleError::NoRecordIds(c.change_type));
            }
            let missing: Vec<SfId> = ids
                .iter()
                .filter(|id| !facts.contains_key(*id))
                .cloned()
                .collect();
            if !missing.is_empty() {
                return Ok(Evaluation::NeedOrders(missing));
            }
            for id in &ids {
                from_facts(
                    cfg,
                    &mut d,
                    change_key("gap", c, id),
                    id,
                    facts.get(id).and_then(Option::as_ref),
                    TriggerKind::Gap,
                );
            }
            Ok(Evaluation::Done(d))
        }
        ChangeType::GapOverflow => Ok(Evaluation::NeedReconciliation {
            since_ms: c.commit_timestamp.saturating_sub(cfg.reconcile_window_ms),
            lost: Lost::Overflow,
        }),
        ChangeType::Delete | ChangeType::Undelete | ChangeType::GapDelete => {
            d.skips
                .extend(ids.iter().map(|_| SkipReason::NotATriggerChange));
            if ids.is_empty() {
                d.skips.push(SkipReason::NotATriggerChange);
            }
            Ok(Evaluation::Done(d))
        }
    }
}

fn evaluate_item_change(cfg: &RulesConfig, c: &ChangeEvent) -> Evaluation {
    // An item's order is known only when the event carries OrderId; otherwise the roll-up of
    // TotalAmount onto the order brings its own Order event.
    let mut d = Decision::default();
    if let Some(Some(order)) = carried(c, ITEM_ORDER)
        && let Ok(order_id) = SfId::parse(&order)
    {
        let relevant = c.change_type != ChangeType::Update
            || c.changed_fields.iter().any(|f| cfg.is_customer_facing(f));
        if relevant {
            d.invalidations.push(Invalidation::Order {
                order_id,
                account_id: None,
            });
        }
    }
    d.skips.push(SkipReason::NotAnOrderEvent);
    Evaluation::Done(d)
}

fn evaluate_platform(
    cfg: &RulesConfig,
    event_id: &str,
    p: &PlatformEvent,
    facts: &Facts,
) -> Result<Evaluation, RuleError> {
    if *p.topic != *cfg.fulfilment_event {
        return Ok(Evaluation::Done(Decision {
            skips: vec![SkipReason::UnhandledPlatformEvent],
            ..Decision::default()
        }));
    }
    let raw = text(p.fields.get(&cfg.fulfilment_order_field)).unwrap_or_default();
    let id = SfId::parse(raw.trim()).map_err(|_| RuleError::BadOrderField {
        field: cfg.fulfilment_order_field.clone(),
        value: raw.clone(),
    })?;
    if !facts.contains_key(&id) {
        return Ok(Evaluation::NeedOrders(vec![id]));
    }
    let mut d = Decision::default();
    // The event asks for fulfilment whatever the status; the guards still apply.
    from_facts(
        cfg,
        &mut d,
        format!("pe:{event_id}:{id}"),
        &id,
        facts.get(&id).and_then(Option::as_ref),
        TriggerKind::PlatformEvent,
    );
    Ok(Evaluation::Done(d))
}

/// Evaluates one event with the facts looked up so far.
pub fn evaluate(
    cfg: &RulesConfig,
    event: &DecodedEvent,
    facts: &Facts,
) -> Result<Evaluation, RuleError> {
    match &event.body {
        EventBody::Change(c) if &*c.entity == "Order" => evaluate_order_change(cfg, c, facts),
        EventBody::Change(c) if &*c.entity == "OrderItem" => Ok(evaluate_item_change(cfg, c)),
        EventBody::Change(_) => Ok(Evaluation::Done(Decision {
            skips: vec![SkipReason::NotAnOrderEvent],
            ..Decision::default()
        })),
        EventBody::Platform(p) => evaluate_platform(cfg, &event.event_id, p, facts),
    }
}

/// The orders whose guard fields (the activation status or the external id) `event` may have
/// changed: facts about them read before it are out of date. Gap events and deletes count, as
/// they say nothing about which fields changed.
pub fn guard_changes(cfg: &RulesConfig, event: &DecodedEvent) -> Vec<SfId> {
    let EventBody::Change(c) = &event.body else {
        return Vec::new();
    };
    if &*c.entity != "Order" {
        return Vec::new();
    }
    let guard = |f: &str| f == cfg.activation_field || f == cfg.external_id_field;
    let relevant = match c.change_type {
        ChangeType::Update => c
            .changed_fields
            .iter()
            .chain(&c.nulled_fields)
            .any(|f| guard(f)),
        _ => true,
    };
    if !relevant {
        return Vec::new();
    }
    c.record_ids
        .iter()
        .filter_map(|i| SfId::parse(i).ok())
        .collect()
}

/// An order a reconcile scan found: its facts and the stamp of the state that qualified it (its
/// `LastModifiedDate`), which keys the job, so scanning the same state again finds the same key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    /// The order.
    pub id: SfId,
    /// What Salesforce says of it.
    pub facts: OrderFacts,
    /// When it last changed, as Salesforce wrote it.
    pub stamp: String,
}

/// Evaluates orders found by a reconcile scan, as if each status had just changed: a job for
/// each that qualifies ([`qualifies`] for [`TriggerKind::Reconcile`]), keyed by the order, its
/// status and the stamp of that state, never by the clock.
pub fn reconcile_scan(cfg: &RulesConfig, orders: &[Scanned]) -> Decision {
    let mut d = Decision::default();
    for o in orders {
        let status = o.facts.status.as_deref().unwrap_or_default();
        from_facts(
            cfg,
            &mut d,
            format!("reconcile:{}:{status}:{}", o.id, o.stamp),
            &o.id,
            Some(&o.facts),
            TriggerKind::Reconcile,
        );
    }
    d
}

/// Evaluates the orders re-read after an event that says changes were lost (a `GAP_OVERFLOW`,
/// or wildcard record ids), as if each status had just changed. `event` is that event's
/// identity (its transaction key).
pub fn reconcile(
    cfg: &RulesConfig,
    event: &ChangeEvent,
    lost: Lost,
    orders: &[(SfId, OrderFacts)],
) -> Decision {
    let mut d = Decision::default();
    for (id, f) in orders {
        d.invalidations.push(Invalidation::Order {
            order_id: id.clone(),
            account_id: f.account_id.clone(),
        });
        from_facts(
            cfg,
            &mut d,
            format!("{}:{}:{id}", lost.key_prefix(), event.transaction_key),
            id,
            Some(f),
            TriggerKind::Overflow,
        );
    }
    d
}

#[cfg(test)]
mod tests;
