//! sfcdc against the emulator with nothing shared but the wire: the emulator's own encoders
//! checked against sfcdc's decoders.
//!
//! The two crates name none of each other's types: where a value crosses, it crosses as text
//! (a change type by its symbol, an id by its characters), as it would on the wire.

/// Changes made through the emulated org (not its encoder alone) read back through sfcdc.
mod round_trip {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use proptest::prelude::*;
    use sfcdc::decode::{CompiledSchema, EventBody};
    use sfcdc_emulator::org::Actor;
    use sfcdc_emulator::world::World;

    /// Writable Order fields and address components a change can touch, with a value for each.
    const FIELDS: [(&str, &str, &str); 14] = [
        ("Status", "Status", "Approved"),
        ("Description", "Description", "changed"),
        ("Name", "Name", "renamed"),
        ("PoNumber", "PoNumber", "PO-7"),
        ("Type", "Type", "Renewal"),
        ("OrderReferenceNumber", "OrderReferenceNumber", "REF-1"),
        ("Activation_Status__c", "Activation_Status__c", "Activating"),
        ("WHMCS_Order_ID__c", "WHMCS_Order_ID__c", "WH-77"),
        ("BillingStreet", "BillingAddress.Street", "1 Main St"),
        ("BillingCity", "BillingAddress.City", "Derby"),
        ("BillingPostalCode", "BillingAddress.PostalCode", "DE1 1AA"),
        ("ShippingCity", "ShippingAddress.City", "Hull"),
        ("ShippingCountryCode", "ShippingAddress.CountryCode", "GB"),
        ("ShippingLatitude", "ShippingAddress.Latitude", "53.7"),
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any set of changes, encoded by the emulator and decoded by sfcdc, names exactly the
        /// fields that changed (plus LastModifiedDate), and nulled ones as nulled.
        #[test]
        fn changed_and_nulled_fields_survive_encoding(picks in proptest::collection::vec((0usize..FIELDS.len(), any::<bool>()), 0..10), extra in 0usize..4) {
            let mut world = World::new(3);
            for i in 0..extra {
                world.add_order_field(&format!("Extra_{i}__c")).unwrap();
            }
            world.seed_sample_data(1_700_000_000_000);
            let actor = Actor { user_id: world.org.user_id.to_string(), origin: "test".into() };
            let id = world.org.pick("Order", |r| r.text("Status") == Some("Draft")).unwrap();
            // First set every picked field, so that nulling it afterwards is a real change.
            let mut set = serde_json::Map::new();
            for (i, _) in &picks {
                let (flat, _, v) = FIELDS[*i];
                let value = if flat == "ShippingLatitude" { serde_json::json!(53.7) } else { serde_json::json!(v) };
                set.insert(flat.into(), value);
            }
            let now = 1_700_000_000_000;
            world.mutate(now, |o| o.update("Order", &id, &set, &actor, now).map(|c| ((), c))).unwrap();
            let mut change = serde_json::Map::new();
            let mut expected_changed = BTreeSet::from(["LastModifiedDate".to_string()]);
            let mut expected_nulled = BTreeSet::new();
            for (i, null) in &picks {
                let (flat, path, _) = FIELDS[*i];
                if *null {
                    change.insert(flat.into(), serde_json::Value::Null);
                    expected_nulled.insert(path.to_string());
                    expected_changed.insert(path.to_string());
                } else {
                    expected_nulled.remove(path);
                    expected_changed.remove(path);
                    change.remove(flat);
                }
            }
            let later = now + 1000;
            world.mutate(later, |o| o.update("Order", &id, &change, &actor, later).map(|c| ((), c))).unwrap();
            let event = world.bus.last("/data/OrderChangeEvent").unwrap();
            let schema = world.schema(&event.schema_id).unwrap();
            let compiled = CompiledSchema::compile(&schema.id, &schema.json).unwrap();
            let EventBody::Change(c) = compiled.decode(&Arc::from("/data/OrderChangeEvent"), &event.payload).unwrap() else { panic!() };
            let changed: BTreeSet<String> = c.changed_fields.iter().map(|f| f.to_string()).collect();
            let nulled: BTreeSet<String> = c.nulled_fields.iter().map(|f| f.to_string()).collect();
            prop_assert_eq!(changed, expected_changed);
            prop_assert_eq!(nulled, expected_nulled);
        }
    }
}
