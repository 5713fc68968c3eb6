//! Every rule and guard, on events produced by the emulator's encoder and decoded by sfcdc.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::decode::{CompiledSchema, DecodedEvent, ReplayId};
use sfcdc_emulator::org::Actor;
use sfcdc_emulator::schema::FieldValue;
use sfcdc_emulator::world::World;

/// The emulator's id for a product id: the two crates share no types, only the id's text.
fn emulated(id: &SfId) -> sfcdc_emulator::ids::SfId {
    sfcdc_emulator::ids::SfId::parse(id.as_str()).unwrap()
}

/// The emulator's change type for a product one, by its symbol.
fn emulated_change_type(ct: ChangeType) -> sfcdc_emulator::schema::ChangeType {
    sfcdc_emulator::schema::ChangeType::from_symbol(ct.symbol()).unwrap()
}

struct Fixture {
    world: World,
    actor: Actor,
    order: SfId,
    account: String,
}

fn fixture() -> Fixture {
    let mut world = World::new(11);
    world.seed_sample_data(1_700_000_000_000);
    let actor = Actor {
        user_id: world.org.user_id.to_string(),
        origin: "test".into(),
    };
    let picked = world
        .org
        .pick("Order", |r| r.text("Status") == Some("Draft"))
        .unwrap();
    let order = SfId::parse(picked.as_str()).unwrap();
    let account = world
        .org
        .get(&picked)
        .unwrap()
        .text("AccountId")
        .unwrap()
        .to_owned();
    Fixture {
        world,
        actor,
        order,
        account,
    }
}

impl Fixture {
    fn last(&self, topic: &str) -> DecodedEvent {
        let e = self.world.bus.last(topic).unwrap();
        let s = self.world.schema(&e.schema_id).unwrap();
        let compiled = CompiledSchema::compile(&s.id, &s.json).unwrap();
        DecodedEvent {
            replay_id: ReplayId(e.replay_bytes.clone()),
            schema_id: compiled.id.clone(),
            event_id: e.event_id.clone(),
            payload: e.payload.clone(),
            body: compiled.decode(&Arc::from(topic), &e.payload).unwrap(),
        }
    }

    fn update(&mut self, patch: serde_json::Value) -> DecodedEvent {
        let (id, actor) = (emulated(&self.order), self.actor.clone());
        let now = 1_700_000_100_000;
        self.world
            .mutate(now, |o| {
                o.update("Order", &id, patch.as_object().unwrap(), &actor, now)
                    .map(|c| ((), c))
            })
            .unwrap();
        self.last("/data/OrderChangeEvent")
    }

    fn create(&mut self, extra: serde_json::Value) -> (SfId, DecodedEvent) {
        let mut body =
            json!({"AccountId": self.account, "EffectiveDate": "2024-01-01", "Status": "Draft"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let actor = self.actor.clone();
        let now = 1_700_000_100_000;
        let id = self
            .world
            .mutate(now, |o| {
                o.create("Order", body.as_object().unwrap(), &actor, now)
            })
            .unwrap();
        (
            SfId::parse(id.as_str()).unwrap(),
            self.last("/data/OrderChangeEvent"),
        )
    }

    fn publish(&mut self, order: &str) -> DecodedEvent {
        let fields =
            BTreeMap::from([("OrderId__c".to_string(), FieldValue::Str(order.to_owned()))]);
        self.world
            .publish_fulfilment(fields, "005Hs00000000AAAAA", 1_700_000_100_000);
        self.last("/event/Order_Fulfilment_Requested__e")
    }

    fn gap(&mut self, ct: ChangeType) -> DecodedEvent {
        let (id, actor) = (emulated(&self.order), self.actor.clone());
        let change = self.world.org.gap(
            "Order",
            emulated_change_type(ct),
            Some(&id),
            &actor,
            1_700_000_200_000,
        );
        self.world.commit(vec![change], 1_700_000_200_000);
        self.last("/data/OrderChangeEvent")
    }
}

fn facts(id: &SfId, status: &str, activation: Option<&str>, external: Option<&str>) -> Facts {
    Facts::from_iter([(
        id.clone(),
        Some(OrderFacts {
            status: Some(status.into()),
            activation: activation.map(Into::into),
            external_id: external.map(Into::into),
            account_id: Some("001Hs0000000Q0vIAE".into()),
        }),
    )])
}

fn done(e: Evaluation) -> Decision {
    match e {
        Evaluation::Done(d) => d,
        other => panic!("expected a decision, got {other:?}"),
    }
}

#[test]
fn an_approval_reads_guards_it_does_not_carry_then_creates_a_job() {
    let cfg = RulesConfig::defaults();
    let mut f = fixture();
    let e = f.update(json!({"Status": "Approved"}));
    assert_eq!(
        evaluate(&cfg, &e, &Facts::default()).unwrap(),
        Evaluation::NeedOrders(vec![f.order.clone()])
    );
    let d = done(evaluate(&cfg, &e, &facts(&f.order, "Approved", None, None)).unwrap());
    assert_eq!(d.jobs.len(), 1);
    let job = &d.jobs[0];
    assert_eq!(job.order_id, f.order);
    assert_eq!(job.status, "Approved");
    assert_eq!(job.kind, TriggerKind::StatusChange);
    let EventBody::Change(c) = &e.body else {
        panic!()
    };
    assert_eq!(job.key, format!("cdc:{}:1:{}", c.transaction_key, f.order));
    assert_eq!(
        d.triggers,
        [TriggerRecord {
            key: job.key.clone(),
            order_id: f.order.clone(),
            skipped: None
        }]
    );
    // Same event, same key.
    let again = done(evaluate(&cfg, &e, &facts(&f.order, "Approved", None, None)).unwrap());
    assert_eq!(again.jobs[0].key, job.key);
    // Status is customer-facing: the order is invalidated.
    assert!(
        matches!(&d.invalidations[..], [Invalidation::Order { order_id, .. }] if *order_id == f.order)
    );
}

#[test]
fn blocking_activation_or_an_external_id_skips() {
    let cfg = RulesConfig::defaults();
    let mut f = fixture();
    let e = f.update(json!({"Status": "Reactivate"}));
    for (act, ext, reason) in [
        (Some("Activating"), None, SkipReason::ActivationBlocking),
        (Some("Activated"), None, SkipReason::ActivationBlocking),
        (None, Some("WH-1"), SkipReason::ExternalIdPresent),
    ] {
        let d = done(evaluate(&cfg, &e, &facts(&f.order, "Reactivate", act, ext)).unwrap());
        assert!(d.jobs.is_empty());
        assert_eq!(d.skips, [reason]);
        assert_eq!(
            d.triggers[0].skipped,
            Some(reason),
            "skipped triggers are recorded too"
        );
    }
    // A non-blocking activation status passes.
    let d = done(
        evaluate(
            &cfg,
            &e,
            &facts(&f.order, "Reactivate", Some("Deactivated"), None),
        )
        .unwrap(),
    );
    assert_eq!(d.jobs.len(), 1);
}

#[test]
fn guard_values_the_event_carries_win_over_salesforce() {
    let cfg = RulesConfig::defaults();
    let mut f = fixture();
    f.update(json!({"Activation_Status__c": "Activated", "WHMCS_Order_ID__c": "WH-3"}));
    // Approved, and both guard fields cleared in the same change: the event says they are empty.
    let e = f.update(
        json!({"Status": "Approved", "Activation_Status__c": null, "WHMCS_Order_ID__c": null}),
    );
    let d = done(
        evaluate(
            &cfg,
            &e,
            &facts(&f.order, "Approved", Some("Activated"), Some("WH-3")),
        )
        .unwrap(),
    );
    assert_eq!(
        d.jobs.len(),
        1,
        "nulled guard fields are carried values: {d:?}"
    );
    // The event sets a blocking status: it blocks even if Salesforce has since moved on.
    let e = f.update(json!({"Status": "Draft"}));
    assert_eq!(
        done(evaluate(&cfg, &e, &Facts::default()).unwrap()).skips,
        [SkipReason::StatusNotTrigger]
    );
    let e = f.update(json!({"Status": "Approved", "Activation_Status__c": "Activating", "WHMCS_Order_ID__c": "WH-4"}));
    let d = done(evaluate(&cfg, &e, &Facts::default()).unwrap());
    assert_eq!(
        d.skips,
        [SkipReason::ActivationBlocking],
        "no lookup needed: the event carries both guards"
    );
}

#[test]
fn an_absent_guard_field_is_never_assumed_empty() {
    let cfg = RulesConfig::defaults();
    let mut f = fixture();
    f.update(json!({"WHMCS_Order_ID__c": "WH-9"}));
    let e = f.update(json!({"Status": "Approved"}));
    let EventBody::Change(c) = &e.body else {
        panic!()
    };
    // The UPDATE has WHMCS_Order_ID__c = null because it did not change, not because it is empty.
    assert_eq!(c.fields.get("WHMCS_Order_ID__c"), Some(&Value::Null));
    assert!(matches!(
        evaluate(&cfg, &e, &Facts::default()).unwrap(),
        Evaluation::NeedOrders(_)
    ));
    let d = done(evaluate(&cfg, &e, &facts(&f.order, "Approved", None, Some("WH-9"))).unwrap());
    assert_eq!(d.skips, [SkipReason::ExternalIdPresent]);
}

#[test]
fn non_trigger_updates_need_no_lookup() {
    let cfg = RulesConfig::defaults();
    let mut f = fixture();
    let e = f.update(json!({"Status": "Activated"}));
    assert_eq!(
        done(evaluate(&cfg, &e, &Facts::default()).unwrap()).skips,
        [SkipReason::StatusNotTrigger]
    );
    let e = f.update(json!({"Description": "new words"}));
    let d = done(evaluate(&cfg, &e, &Facts::default()).unwrap());
    assert_eq!(d.skips, [SkipReason::StatusUnchanged]);
    assert_eq!(d.invalidations.len(), 1, "Description is customer-facing");
    let e = f.update(json!({"Activation_Status__c": "Pending", "WHMCS_Order_ID__c": "X"}));
    let d = done(evaluate(&cfg, &e, &Facts::default()).unwrap());
    assert!(
        d.invalidations.is_empty(),
        "internal fields do not invalidate: {d:?}"
    );
    assert!(d.triggers.is_empty());
}

#[test]
fn a_create_with_a_trigger_status_decides_from_the_event_alone() {
    let cfg = RulesConfig::defaults();
    let mut f = fixture();
    let (id, e) = f.create(json!({"Status": "Approved"}));
    let d = done(evaluate(&cfg, &e, &Facts::default()).unwrap());
    assert_eq!(d.jobs.len(), 1);
    assert_eq!(d.jobs[0].order_id, id);
    assert_eq!(d.jobs[0].kind, TriggerKind::Create);
    assert_eq!(d.jobs[0].account_id.as_deref(), Some(f.account.as_str()));
    let (_, e) = f.create(json!({"Status": "Approved", "Activation_Status__c": "Activated"}));
    assert_eq!(
        done(evaluate(&cfg, &e, &Facts::default()).unwrap()).skips,
        [SkipReason::ActivationBlocking]
    );
    let (_, e) = f.create(json!({}));
    assert_eq!(
        done(evaluate(&cfg, &e, &Facts::default()).unwrap()).skips,
        [SkipReason::StatusNotTrigger]
    );
}

#[test]
fn the_fulfilment_event_triggers_on_the_order_it_names() {
    let cfg = RulesConfig::defaults();
    let mut f = fixture();
    let order = f.order.to_string();
    let e = f.publish(&order);
    assert_eq!(
        evaluate(&cfg, &e, &Facts::default()).unwrap(),
        Evaluation::NeedOrders(vec![f.order.clone()])
    );
    let d = done(evaluate(&cfg, &e, &facts(&f.order, "Approved", None, None)).unwrap());
    assert_eq!(d.jobs[0].kind, TriggerKind::PlatformEvent);
    assert_eq!(d.jobs[0].key, format!("pe:{}:{}", e.event_id, f.order));
    assert_eq!(d.jobs[0].status, "Approved");
    let gone = Facts::from_iter([(f.order.clone(), None)]);
    assert_eq!(
        done(evaluate(&cfg, &e, &gone).unwrap()).skips,
        [SkipReason::OrderNotFound]
    );
    let d = done(
        evaluate(
            &cfg,
            &e,
            &facts(&f.order, "Approved", Some("Activating"), None),
        )
        .unwrap(),
    );
    assert_eq!(d.skips, [SkipReason::ActivationBlocking]);
    // 15-character ids are accepted; garbage is a rule error (the event is quarantined).
    let e = f.publish(&order[..15]);
    assert_eq!(
        evaluate(&cfg, &e, &Facts::default()).unwrap(),
        Evaluation::NeedOrders(vec![f.order.clone()])
    );
    let e = f.publish("not-an-id");
    assert!(matches!(
        evaluate(&cfg, &e, &Facts::default()),
        Err(RuleError::BadOrderField { .. })
    ));
}

#[test]
fn gap_events_are_evaluated_from_a_re_read() {
    let cfg = RulesConfig::defaults();
    let mut f = fixture();
    for ct in [
        ChangeType::GapCreate,
        ChangeType::GapUpdate,
        ChangeType::GapUndelete,
    ] {
        let e = f.gap(ct);
        assert_eq!(
            evaluate(&cfg, &e, &Facts::default()).unwrap(),
            Evaluation::NeedOrders(vec![f.order.clone()])
        );
        let d = done(evaluate(&cfg, &e, &facts(&f.order, "Approved", None, None)).unwrap());
        assert_eq!(d.jobs[0].kind, TriggerKind::Gap, "{ct}");
        assert!(d.jobs[0].key.starts_with("gap:"));
        assert_eq!(d.invalidations.len(), 1, "gaps invalidate conservatively");
        let d = done(evaluate(&cfg, &e, &facts(&f.order, "Draft", None, None)).unwrap());
        assert_eq!(d.skips, [SkipReason::StatusNotTrigger]);
    }
    let e = f.gap(ChangeType::GapDelete);
    assert_eq!(
        done(evaluate(&cfg, &e, &Facts::default()).unwrap()).skips,
        [SkipReason::NotATriggerChange]
    );
}

#[test]
fn wildcard_record_ids_ask_for_reconciliation_instead_of_quarantine() {
    let cfg = RulesConfig::defaults();
    let mut f = fixture();
    let mut e = f.update(json!({"Status": "Approved"}));
    let EventBody::Change(c) = &mut e.body else {
        panic!()
    };
    c.record_ids = vec!["801*".into()];
    let at = c.commit_timestamp;
    assert_eq!(
        evaluate(&cfg, &e, &Facts::default()).unwrap(),
        Evaluation::NeedReconciliation {
            since_ms: at - cfg.reconcile_window_ms,
            lost: Lost::Wildcard,
        }
    );
    // Mixed with a real id, still unknown records: the same.
    if let EventBody::Change(c) = &mut e.body {
        c.record_ids.insert(0, f.order.as_str().into());
    }
    assert!(matches!(
        evaluate(&cfg, &e, &Facts::default()),
        Ok(Evaluation::NeedReconciliation {
            lost: Lost::Wildcard,
            ..
        })
    ));
    // Deleted records need nothing.
    if let EventBody::Change(c) = &mut e.body {
        c.change_type = ChangeType::Delete;
    }
    assert_eq!(
        done(evaluate(&cfg, &e, &Facts::default()).unwrap()).skips,
        [SkipReason::NotATriggerChange]
    );
    // A malformed id that is not a wildcard is still a bad event.
    if let EventBody::Change(c) = &mut e.body {
        c.change_type = ChangeType::Update;
        c.record_ids = vec!["not-an-id".into()];
    }
    assert!(matches!(
        evaluate(&cfg, &e, &Facts::default()),
        Err(RuleError::BadRecordId(_))
    ));
    // The re-read's triggers are keyed by the event, under their own prefix.
    let EventBody::Change(c) = &e.body else {
        panic!()
    };
    let facts = OrderFacts {
        status: Some("Approved".into()),
        ..OrderFacts::default()
    };
    let d = reconcile(&cfg, c, Lost::Wildcard, &[(f.order.clone(), facts)]);
    assert!(
        d.triggers[0].key.starts_with("wildcard:"),
        "{:?}",
        d.triggers
    );
    assert_eq!(d.jobs.len(), 1);
}

#[test]
fn gap_overflow_asks_for_reconciliation_of_recent_orders() {
    let cfg = RulesConfig::defaults();
    let mut f = fixture();
    let actor = f.actor.clone();
    let change = f.world.org.gap(
        "Order",
        emulated_change_type(ChangeType::GapOverflow),
        None,
        &actor,
        1_700_000_300_000,
    );
    f.world.commit(vec![change], 1_700_000_300_000);
    let e = f.last("/data/OrderChangeEvent");
    assert_eq!(
        evaluate(&cfg, &e, &Facts::default()).unwrap(),
        Evaluation::NeedReconciliation {
            since_ms: 1_700_000_300_000 - 3_600_000,
            lost: Lost::Overflow,
        }
    );
    let EventBody::Change(c) = &e.body else {
        panic!()
    };
    let a = SfId::parse("801Hs0000000Q0vIAE").unwrap();
    let b = SfId::parse("801Hs0000000Q0wIAE").unwrap();
    let approved = OrderFacts {
        status: Some("Approved".into()),
        ..OrderFacts::default()
    };
    let draft = OrderFacts {
        status: Some("Draft".into()),
        ..OrderFacts::default()
    };
    let d = reconcile(
        &cfg,
        c,
        Lost::Overflow,
        &[(a.clone(), approved), (b, draft)],
    );
    assert_eq!(d.jobs.len(), 1);
    assert_eq!(d.jobs[0].order_id, a);
    assert_eq!(d.jobs[0].kind, TriggerKind::Overflow);
    assert_eq!(d.invalidations.len(), 2);
}

#[test]
fn deletes_and_item_changes_only_invalidate() {
    let cfg = RulesConfig::defaults();
    let mut f = fixture();
    let (id, actor) = (emulated(&f.order), f.actor.clone());
    f.world
        .mutate(1, |o| o.delete("Order", &id, &actor, 1).map(|c| ((), c)))
        .unwrap();
    let e = f.last("/data/OrderChangeEvent");
    let d = done(evaluate(&cfg, &e, &Facts::default()).unwrap());
    assert_eq!(d.skips, [SkipReason::NotATriggerChange]);
    assert_eq!(d.invalidations.len(), 1);

    let mut f = fixture();
    let (order, actor) = (f.order.clone(), f.actor.clone());
    let body = json!({"OrderId": order.as_str(), "Quantity": 1.0, "UnitPrice": 2.0});
    f.world
        .mutate(1, |o| {
            o.create("OrderItem", body.as_object().unwrap(), &actor, 1)
        })
        .unwrap();
    let e = f.last("/data/OrderItemChangeEvent");
    let d = done(evaluate(&cfg, &e, &Facts::default()).unwrap());
    assert_eq!(
        d.invalidations,
        [Invalidation::Order {
            order_id: order,
            account_id: None
        }]
    );
    assert_eq!(d.skips, [SkipReason::NotAnOrderEvent]);
}

#[test]
fn configuration_is_validated_and_names_the_variable() {
    let e =
        RulesConfig::from_env(&Env::from_pairs([("SFCDC_PROVISION_STATUSES", " , ")])).unwrap_err();
    assert_eq!(e.var, "SFCDC_PROVISION_STATUSES");
    let e = RulesConfig::from_env(&Env::from_pairs([("SFCDC_ACTIVATION_FIELD", "Bad Field")]))
        .unwrap_err();
    assert_eq!(e.var, "SFCDC_ACTIVATION_FIELD");
    let e = RulesConfig::from_env(&Env::from_pairs([("SFCDC_FULFILMENT_EVENT", "/data/X")]))
        .unwrap_err();
    assert_eq!(e.var, "SFCDC_FULFILMENT_EVENT");
    let c = RulesConfig::from_env(&Env::from_pairs([(
        "SFCDC_PROVISION_STATUSES",
        "Approved, Go",
    )]))
    .unwrap();
    assert_eq!(c.provision_statuses, ["Approved", "Go"]);
}

#[test]
fn the_worker_recheck_applies_the_same_guards_to_fresh_facts() {
    let cfg = RulesConfig::defaults();
    let facts = |status: &str, activation: Option<&str>, external: Option<&str>| OrderFacts {
        status: Some(status.into()),
        activation: activation.map(Into::into),
        external_id: external.map(Into::into),
        account_id: None,
    };
    assert_eq!(
        recheck(
            &cfg,
            TriggerKind::StatusChange,
            &facts("Approved", None, None),
            false
        ),
        Ok(())
    );
    assert_eq!(
        recheck(
            &cfg,
            TriggerKind::StatusChange,
            &facts("Reactivate", Some("Deactivated"), None),
            false
        ),
        Ok(())
    );
    let e = recheck(
        &cfg,
        TriggerKind::StatusChange,
        &facts("Draft", None, None),
        false,
    )
    .unwrap_err();
    assert!(e.contains("Draft"), "{e}");
    let e = recheck(
        &cfg,
        TriggerKind::StatusChange,
        &facts("Approved", Some("Activated"), None),
        true,
    )
    .unwrap_err();
    assert!(e.contains("Activated"), "{e}");
    // Someone else's Activating blocks; the job's own does not.
    assert!(
        recheck(
            &cfg,
            TriggerKind::StatusChange,
            &facts("Approved", Some("Activating"), None),
            false
        )
        .is_err()
    );
    assert_eq!(
        recheck(
            &cfg,
            TriggerKind::StatusChange,
            &facts("Approved", Some("Activating"), None),
            true
        ),
        Ok(())
    );
    let e = recheck(
        &cfg,
        TriggerKind::StatusChange,
        &facts("Approved", Some("Activating"), Some("WH-9")),
        true,
    )
    .unwrap_err();
    assert!(e.contains("WH-9"), "{e}");
}

#[test]
fn a_platform_event_job_survives_the_recheck_whatever_the_status() {
    let cfg = RulesConfig::defaults();
    let draft = OrderFacts {
        status: Some("Draft".into()),
        ..OrderFacts::default()
    };
    assert_eq!(
        recheck(&cfg, TriggerKind::PlatformEvent, &draft, false),
        Ok(())
    );
    // The guards still apply to it.
    let activated = OrderFacts {
        activation: Some("Activated".into()),
        ..draft.clone()
    };
    let e = recheck(&cfg, TriggerKind::PlatformEvent, &activated, false).unwrap_err();
    assert!(e.contains("Activated"), "{e}");
    // Every approval kind needs its trigger status still; an unknown stored kind is the
    // strictest.
    for kind in [
        TriggerKind::Create,
        TriggerKind::StatusChange,
        TriggerKind::Gap,
        TriggerKind::Overflow,
        TriggerKind::from_name("something-newer"),
    ] {
        let e = recheck(&cfg, kind, &draft, false).unwrap_err();
        assert!(e.contains("Draft"), "{kind:?}: {e}");
    }
    for kind in [
        TriggerKind::Create,
        TriggerKind::StatusChange,
        TriggerKind::PlatformEvent,
        TriggerKind::Gap,
        TriggerKind::Overflow,
        TriggerKind::Reconcile,
    ] {
        assert_eq!(TriggerKind::from_name(kind.name()), kind);
    }
}

mod agreement {
    //! Ingest's decision and the worker's recheck agree for every trigger kind and order state.
    //! They are allowed to differ in two ways only, neither of which this property exercises:
    //! the order changed between the event and the submit (the recheck then reads the new
    //! state, by design), and the job's own `Activating` write, which blocks ingest (another job
    //! is activating) but not the job that wrote it (`own_activating`).

    use proptest::prelude::*;

    use super::*;

    const KINDS: [TriggerKind; 6] = [
        TriggerKind::Create,
        TriggerKind::StatusChange,
        TriggerKind::PlatformEvent,
        TriggerKind::Gap,
        TriggerKind::Overflow,
        TriggerKind::Reconcile,
    ];

    fn order_state() -> impl Strategy<Value = OrderFacts> {
        (
            proptest::sample::select(&sfcdc_emulator::model::ORDER_STATUSES[..]),
            proptest::option::of(proptest::sample::select(vec![
                "Activating",
                "Activated",
                "Deactivated",
                "Failed",
            ])),
            proptest::option::of(proptest::sample::select(vec!["", " ", "WH-000001"])),
        )
            .prop_map(|(status, activation, external)| OrderFacts {
                status: Some(status.to_owned()),
                activation: activation.map(str::to_owned),
                external_id: external.map(str::to_owned),
                account_id: None,
            })
    }

    /// Whether ingest creates a job of `kind` for an order in state `state`, from a real
    /// event of that kind (encoded by the emulator, decoded by sfcdc).
    fn ingest_creates(kind: TriggerKind, state: &OrderFacts) -> bool {
        let cfg = RulesConfig::defaults();
        let mut f = fixture();
        let status = state.status.clone().unwrap();
        let account = f.account.clone();
        let looked_up = |id: &SfId| {
            Facts::from_iter([(
                id.clone(),
                Some(OrderFacts {
                    account_id: Some(account.clone()),
                    ..state.clone()
                }),
            )])
        };
        let decide = |e: &DecodedEvent, facts: &Facts| done(evaluate(&cfg, e, facts).unwrap());
        let d = match kind {
            TriggerKind::Create => {
                let mut body = json!({ "Status": status });
                if let Some(a) = &state.activation {
                    body[&cfg.activation_field] = json!(a);
                }
                if let Some(x) = &state.external_id {
                    body[&cfg.external_id_field] = json!(x);
                }
                let (id, e) = f.create(body);
                decide(&e, &looked_up(&id))
            }
            TriggerKind::StatusChange => {
                // The fixture's order is a Draft: move it away first so the status changes.
                if status == "Draft" {
                    f.update(json!({"Status": "Approved"}));
                }
                let e = f.update(json!({ "Status": status }));
                decide(&e, &looked_up(&f.order))
            }
            TriggerKind::PlatformEvent => {
                let order = f.order.to_string();
                let e = f.publish(&order);
                decide(&e, &looked_up(&f.order))
            }
            TriggerKind::Gap => {
                let e = f.gap(ChangeType::GapUpdate);
                decide(&e, &looked_up(&f.order))
            }
            TriggerKind::Overflow => {
                let actor = f.actor.clone();
                let change = f.world.org.gap(
                    "Order",
                    emulated_change_type(ChangeType::GapOverflow),
                    None,
                    &actor,
                    1_700_000_300_000,
                );
                f.world.commit(vec![change], 1_700_000_300_000);
                let e = f.last("/data/OrderChangeEvent");
                let EventBody::Change(c) = &e.body else {
                    panic!()
                };
                reconcile(&cfg, c, Lost::Overflow, &[(f.order.clone(), state.clone())])
            }
            TriggerKind::Reconcile => reconcile_scan(
                &cfg,
                &[Scanned {
                    id: f.order.clone(),
                    facts: state.clone(),
                    stamp: "2024-01-01T00:00:00.000+0000".into(),
                }],
            ),
        };
        assert!(d.jobs.iter().all(|j| j.kind == kind), "{d:?}");
        !d.jobs.is_empty()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn ingest_and_the_recheck_agree(kind in proptest::sample::select(&KINDS[..]), state in order_state()) {
            let cfg = RulesConfig::defaults();
            let created = ingest_creates(kind, &state);
            let rechecked = recheck(&cfg, kind, &state, false);
            prop_assert_eq!(created, rechecked.is_ok(), "{:?} {:?}: recheck says {:?}", kind, state, rechecked);
        }
    }
}

#[test]
fn a_reconcile_scan_keys_jobs_by_the_order_and_the_state_that_qualified_it() {
    let cfg = RulesConfig::defaults();
    let id = SfId::parse("801Hs0000000Q0vIAE").unwrap();
    let scanned = |status: &str, external: Option<&str>, stamp: &str| Scanned {
        id: id.clone(),
        facts: OrderFacts {
            status: Some(status.into()),
            external_id: external.map(Into::into),
            ..OrderFacts::default()
        },
        stamp: stamp.into(),
    };
    let d = reconcile_scan(
        &cfg,
        &[scanned("Approved", None, "2024-01-01T00:00:00.000+0000")],
    );
    assert_eq!(d.jobs.len(), 1);
    assert_eq!(d.jobs[0].kind, TriggerKind::Reconcile);
    assert_eq!(
        d.jobs[0].key,
        format!("reconcile:{id}:Approved:2024-01-01T00:00:00.000+0000")
    );
    // The same state scanned again: the same key (the store then finds it recorded).
    let again = reconcile_scan(
        &cfg,
        &[scanned("Approved", None, "2024-01-01T00:00:00.000+0000")],
    );
    assert_eq!(again.jobs[0].key, d.jobs[0].key);
    // A later state of the order is a new trigger.
    let later = reconcile_scan(
        &cfg,
        &[scanned("Approved", None, "2024-02-01T00:00:00.000+0000")],
    );
    assert_ne!(later.jobs[0].key, d.jobs[0].key);
    // The guards apply, and a non-trigger status is no trigger at all.
    let done = reconcile_scan(&cfg, &[scanned("Approved", Some("WH-1"), "x")]);
    assert_eq!(done.skips, [SkipReason::ExternalIdPresent]);
    let draft = reconcile_scan(&cfg, &[scanned("Draft", None, "x")]);
    assert!(draft.jobs.is_empty() && draft.triggers.is_empty());
}

/// Ingest decodes through a projection built from [`RulesConfig::event_fields`]: on the
/// emulator's events, decoded in full and projected, the header, every projected value and
/// every rule's answer are the same, and a damaged payload fails both ways alike (but for
/// invalid UTF-8 in a skipped field, which the projection does not look at).
mod projection {
    use std::sync::{Mutex, OnceLock};

    use proptest::prelude::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::decode::DecodeError;
    use crate::decode::avro::AvroError;
    use crate::decode::event::DECODER_FIELDS;

    /// One event as the bus holds it, with its writer schema.
    struct Sample {
        topic: Arc<str>,
        schema_id: String,
        schema_json: String,
        payload: bytes::Bytes,
        event_id: String,
    }

    /// A configuration whose guards are custom fields the emulator's Order is given.
    fn custom_config() -> RulesConfig {
        RulesConfig::from_env(&Env::from_pairs([
            ("SFCDC_ACTIVATION_FIELD", "Provision_State__c"),
            ("SFCDC_EXTERNAL_ID_FIELD", "Fulfilment_Ref__c"),
            ("SFCDC_FULFILMENT_EVENT_ORDER_FIELD", "OrderId__c"),
        ]))
        .unwrap()
    }

    /// Every kind of event the emulator makes: the bulk mix, guard changes of both
    /// configurations (set and nulled), creates with a trigger status, items, deletes,
    /// undeletes, every gap type and the fulfilment event.
    fn samples() -> &'static [Sample] {
        static SAMPLES: OnceLock<Vec<Sample>> = OnceLock::new();
        SAMPLES.get_or_init(|| {
            let now = 1_700_000_000_000;
            let mut world = World::new(23);
            for f in ["Provision_State__c", "Fulfilment_Ref__c", "Custom_X__c"] {
                world.add_order_field(f).unwrap();
            }
            world.seed_sample_data(now);
            let world = Mutex::new(world);
            sfcdc_emulator::bulk::generate(&world, 300);
            let mut world = world.into_inner().unwrap();
            let actor = Actor {
                user_id: world.org.user_id.to_string(),
                origin: "test".into(),
            };
            let account = world.org.pick("Account", |_| true).unwrap().to_string();
            let draft = world
                .org
                .pick("Order", |r| r.text("Status") == Some("Draft"))
                .unwrap();
            let patches = [
                json!({"Status": "Approved", "Provision_State__c": "Pending", "Custom_X__c": "x"}),
                json!({"Provision_State__c": null, "Fulfilment_Ref__c": "WH-7"}),
                json!({"Activation_Status__c": "Activated", "Description": "é✓"}),
                json!({"WHMCS_Order_ID__c": "WH-8", "Status": "Reactivate"}),
                json!({"WHMCS_Order_ID__c": null, "Fulfilment_Ref__c": null}),
            ];
            for (k, patch) in patches.iter().enumerate() {
                let t = now + k as i64;
                world
                    .mutate(t, |o| {
                        o.update("Order", &draft, patch.as_object().unwrap(), &actor, t)
                            .map(|c| ((), c))
                    })
                    .unwrap();
            }
            let body = json!({"AccountId": account, "EffectiveDate": "2024-01-01",
                "Status": "Approved", "Provision_State__c": "Pending", "Fulfilment_Ref__c": "WH-9"});
            let created = world
                .mutate(now + 10, |o| {
                    o.create("Order", body.as_object().unwrap(), &actor, now + 10)
                })
                .unwrap();
            let item = json!({"OrderId": created.as_str(), "Quantity": 1.0, "UnitPrice": 2.0});
            world
                .mutate(now + 11, |o| {
                    o.create("OrderItem", item.as_object().unwrap(), &actor, now + 11)
                })
                .unwrap();
            world
                .mutate(now + 12, |o| {
                    o.delete("Order", &created, &actor, now + 12).map(|c| ((), c))
                })
                .unwrap();
            world
                .mutate(now + 13, |o| {
                    o.undelete("Order", &created, &actor, now + 13)
                        .map(|c| ((), c))
                })
                .unwrap();
            for ct in ChangeType::ALL.into_iter().filter(|c| c.is_gap()) {
                let id = (ct != ChangeType::GapOverflow).then_some(&draft);
                let change = world.org.gap(
                    "Order",
                    emulated_change_type(ct),
                    id,
                    &actor,
                    now + 20,
                );
                world.commit(vec![change], now + 20);
            }
            for order in [draft.as_str(), "not an id"] {
                let fields = BTreeMap::from([(
                    "OrderId__c".to_string(),
                    FieldValue::Str(order.to_owned()),
                )]);
                world.publish_fulfilment(fields, "005Hs00000000AAAAA", now + 30);
            }
            let topics = [
                "/data/OrderChangeEvent",
                "/data/OrderItemChangeEvent",
                "/data/AccountChangeEvent",
                sfcdc_emulator::world::ALL_CHANGES,
                "/event/Order_Fulfilment_Requested__e",
            ];
            let mut out = Vec::new();
            for topic in topics {
                for e in world.bus.read_after(topic, 0, usize::MAX, usize::MAX) {
                    let schema = world.schema(&e.schema_id).unwrap();
                    out.push(Sample {
                        topic: Arc::from(topic),
                        schema_id: e.schema_id.clone(),
                        schema_json: schema.json.clone(),
                        payload: e.payload.clone(),
                        event_id: e.event_id.clone(),
                    });
                }
            }
            out
        })
    }

    /// Facts for every order an evaluation asks about: approved and unguarded, so that a
    /// difference in what the event itself carries shows in the decision.
    fn facts_for(ids: &[SfId]) -> Facts {
        ids.iter()
            .map(|id| {
                let f = OrderFacts {
                    status: Some("Approved".into()),
                    activation: None,
                    external_id: None,
                    account_id: Some("001Hs00000000AAAAA".into()),
                };
                (id.clone(), Some(f))
            })
            .collect()
    }

    /// Everything the rules answer for one event: both evaluation passes, the reconciliation,
    /// the guard changes and the commit time.
    fn answers(cfg: &RulesConfig, e: &DecodedEvent) -> String {
        let first = evaluate(cfg, e, &Facts::default());
        let second = match &first {
            Ok(Evaluation::NeedOrders(ids)) => Some(evaluate(cfg, e, &facts_for(ids))),
            _ => None,
        };
        let reconciled = match (&first, &e.body) {
            (Ok(Evaluation::NeedReconciliation { lost, .. }), EventBody::Change(c)) => {
                let id = SfId::parse("801Hs0000000Q0vIAE").unwrap();
                let f = facts_for(std::slice::from_ref(&id)).remove(&id).flatten();
                Some(reconcile(cfg, c, *lost, &[(id, f.unwrap())]))
            }
            _ => None,
        };
        format!(
            "{first:?} {second:?} {reconciled:?} {:?} {:?}",
            guard_changes(cfg, e),
            e.commit_ms()
        )
    }

    /// The projection's promise on one payload (see the module's doc).
    fn check(cfg: &RulesConfig, s: &Sample, payload: &bytes::Bytes) -> Result<(), String> {
        let full_schema = CompiledSchema::compile(&s.schema_id, &s.schema_json).unwrap();
        let projected = CompiledSchema::compile(&s.schema_id, &s.schema_json)
            .unwrap()
            .with_projection(&cfg.event_fields());
        let full = full_schema.decode(&s.topic, payload);
        let part = projected.decode_projected(&s.topic, payload);
        let (full, part) = match (full, part) {
            (Ok(f), Ok(p)) => (f, p),
            (Err(a), Err(b)) if a == b => return Ok(()),
            (Err(DecodeError::Payload(AvroError::Utf8(_))), _) => return Ok(()),
            (f, p) => return Err(format!("full {f:?}, projected {p:?}")),
        };
        let (full_fields, part_fields) = match (&full, &part) {
            (EventBody::Change(f), EventBody::Change(p)) => {
                let header = |c: &ChangeEvent| {
                    format!(
                        "{} {:?} {} {} {} {} {} {} {} {:?} {:?} {:?}",
                        c.entity,
                        c.record_ids,
                        c.change_type,
                        c.change_origin,
                        c.transaction_key,
                        c.sequence_number,
                        c.commit_timestamp,
                        c.commit_number,
                        c.commit_user,
                        c.changed_fields,
                        c.nulled_fields,
                        c.diff_fields
                    )
                };
                if header(f) != header(p) {
                    return Err(format!("headers differ: {} / {}", header(f), header(p)));
                }
                (&f.fields, &p.fields)
            }
            (EventBody::Platform(f), EventBody::Platform(p)) if f.topic == p.topic => {
                (&f.fields, &p.fields)
            }
            _ => return Err("the bodies are of different kinds".into()),
        };
        for (name, v) in part_fields.iter() {
            if full_fields.get(name) != Some(v) {
                return Err(format!(
                    "{name}: {v:?}, in full {:?}",
                    full_fields.get(name)
                ));
            }
        }
        let wanted = cfg.event_fields();
        let wanted = wanted.iter().map(String::as_str).chain(DECODER_FIELDS);
        for name in wanted {
            if full_fields.get(name).is_some() != part_fields.get(name).is_some() {
                return Err(format!("{name} is not projected"));
            }
        }
        let event = |body| DecodedEvent {
            replay_id: ReplayId::default(),
            schema_id: Arc::from(s.schema_id.as_str()),
            event_id: s.event_id.clone(),
            payload: payload.clone(),
            body,
        };
        let (a, b) = (answers(cfg, &event(full)), answers(cfg, &event(part)));
        if a != b {
            return Err(format!("the rules answer differently:\n{a}\n{b}"));
        }
        Ok(())
    }

    #[test]
    fn every_emulated_event_evaluates_the_same_projected() {
        let samples = samples();
        let (mut jobs, mut carried_guards) = (0, 0);
        for cfg in [RulesConfig::defaults(), custom_config()] {
            assert!(cfg.event_fields().contains(&cfg.activation_field));
            for (i, s) in samples.iter().enumerate() {
                if let Err(e) = check(&cfg, s, &s.payload) {
                    panic!("event {i} on {}: {e}", s.topic);
                }
                let compiled = CompiledSchema::compile(&s.schema_id, &s.schema_json)
                    .unwrap()
                    .with_projection(&cfg.event_fields());
                let body = compiled.decode_projected(&s.topic, &s.payload).unwrap();
                if let EventBody::Change(c) = &body
                    && c.carried(&cfg.activation_field).is_some()
                {
                    carried_guards += 1;
                }
                let e = DecodedEvent {
                    replay_id: ReplayId::default(),
                    schema_id: compiled.id.clone(),
                    event_id: s.event_id.clone(),
                    payload: s.payload.clone(),
                    body,
                };
                if let Ok(Evaluation::Done(d)) = evaluate(&cfg, &e, &Facts::default()) {
                    jobs += d.jobs.len();
                }
            }
        }
        assert!(samples.len() > 300, "{} events", samples.len());
        assert!(
            jobs > 0 && carried_guards > 0,
            "the events exercise the rules"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn damaged_emulated_events_fail_alike(pick in any::<usize>(), seed in any::<u64>(), custom in any::<bool>()) {
            let samples = samples();
            let s = &samples[pick % samples.len()];
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut payload = s.payload.to_vec();
            for _ in 0..rng.random_range(1..4u8) {
                if payload.is_empty() {
                    break;
                }
                let at = rng.random_range(0..payload.len());
                match rng.random_range(0..4u8) {
                    0 => payload[at] = rng.random(),
                    1 => payload.insert(at, rng.random()),
                    2 => {
                        payload.remove(at);
                    }
                    _ => payload.truncate(at),
                }
            }
            let cfg = if custom { custom_config() } else { RulesConfig::defaults() };
            if let Err(e) = check(&cfg, s, &bytes::Bytes::from(payload)) {
                prop_assert!(false, "{}", e);
            }
        }
    }
}
