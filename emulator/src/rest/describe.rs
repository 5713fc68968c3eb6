//! Describe, as Salesforce's REST API answers it: the global describe (`GET …/sobjects`), an
//! object's basic information (`GET …/sobjects/{type}`) and its full describe
//! (`GET …/sobjects/{type}/describe`).
//!
//! Everything comes from the emulator's own model ([`crate::model`]): the objects of the org
//! (custom fields an admin added included) and the fulfilment platform event, their fields with
//! Salesforce's describe types, lengths, writability and lookups, the picklist values the model
//! knows, and the child relationships SOQL subqueries can follow. Properties the emulator has no
//! model of (layouts, record types, list views) are left out or empty rather than invented.

use serde_json::{Map, Value, json};

use crate::model::{self, ADDRESS_COMPONENTS, FieldDef, FieldType, SObjectDef};
use crate::org::Org;
use crate::soql::CHILD_RELATIONSHIPS;
use crate::world::{FULFILMENT_EVENT, FULFILMENT_FIELDS};

/// Something the org can describe: one of its objects, or a platform event.
pub(super) struct Described {
    def: SObjectDef,
    event: bool,
}

impl Described {
    /// The object or platform event named `name` (case-insensitively), if the org has it.
    pub(super) fn find(org: &Org, name: &str) -> Option<Described> {
        if name.eq_ignore_ascii_case(FULFILMENT_EVENT) {
            return Some(Described::fulfilment_event());
        }
        org.def(name).map(|def| Described {
            def: (**def).clone(),
            event: false,
        })
    }

    /// Everything the org can describe, by name.
    pub(super) fn all(org: &Org) -> Vec<Described> {
        let mut all: Vec<Described> = org
            .defs()
            .map(|def| Described {
                def: (**def).clone(),
                event: false,
            })
            .collect();
        all.push(Described::fulfilment_event());
        all.sort_by(|a, b| a.def.name.cmp(&b.def.name));
        all
    }

    fn fulfilment_event() -> Described {
        Described {
            def: model::platform_event(FULFILMENT_EVENT, &FULFILMENT_FIELDS),
            event: true,
        }
    }

    /// The object-level properties, as the global describe lists them.
    pub(super) fn summary(&self, version: &str) -> Value {
        let def = &self.def;
        let (label, plural) = model::object_labels(&def.name);
        let record = !self.event;
        let base = format!("/services/data/{version}/sobjects/{}", def.name);
        let mut urls = Map::new();
        urls.insert("sobject".into(), json!(base));
        urls.insert("describe".into(), json!(format!("{base}/describe")));
        if record {
            urls.insert("rowTemplate".into(), json!(format!("{base}/{{ID}}")));
        }
        json!({
            "activateable": false,
            "createable": true,
            "custom": def.name.ends_with("__c") || self.event,
            "customSetting": false,
            "deletable": record,
            "deprecatedAndHidden": false,
            "feedEnabled": false,
            "hasSubtypes": false,
            "isInterface": false,
            "isSubtype": false,
            "keyPrefix": def.key_prefix,
            "label": label,
            "labelPlural": plural,
            "layoutable": record,
            "mergeable": false,
            "mruEnabled": false,
            "name": def.name,
            "queryable": record,
            "replicateable": record,
            "retrieveable": record,
            "searchable": record,
            "triggerable": true,
            "undeletable": record,
            "updateable": record,
            "urls": urls,
        })
    }

    /// The full describe: the object-level properties, its fields and its child relationships.
    pub(super) fn describe(&self, version: &str) -> Value {
        let children: Vec<Value> = CHILD_RELATIONSHIPS
            .iter()
            .filter(|r| r.parent == self.def.name)
            .map(|r| {
                json!({
                    "cascadeDelete": r.cascade_delete,
                    "childSObject": r.child,
                    "deprecatedAndHidden": false,
                    "field": r.field,
                    "junctionIdListNames": [],
                    "junctionReferenceTo": [],
                    "relationshipName": r.name,
                    "restrictedDelete": false,
                })
            })
            .collect();
        let mut out = self.summary(version);
        if let Value::Object(o) = &mut out {
            o.insert("childRelationships".into(), Value::Array(children));
            o.insert("fields".into(), Value::Array(self.fields()));
            o.insert("recordTypeInfos".into(), json!([]));
            o.insert("supportedScopes".into(), json!([]));
        }
        out
    }

    /// Every field in describe order: each compound address preceded by its components.
    fn fields(&self) -> Vec<Value> {
        let def = &self.def;
        let mut out = Vec::new();
        for f in &def.fields {
            if f.ftype == FieldType::Address {
                let prefix = model::address_prefix(&f.name);
                for (cdc, flat, ftype) in ADDRESS_COMPONENTS {
                    let Some(suffix) = flat else {
                        continue;
                    };
                    let component = Field {
                        name: format!("{prefix}{suffix}"),
                        ftype,
                        def: f,
                        compound: Some(&f.name),
                        geo: matches!(cdc, "Latitude" | "Longitude"),
                    };
                    out.push(component.describe(def));
                }
            }
            let field = Field {
                name: f.name.clone(),
                ftype: f.ftype,
                def: f,
                compound: None,
                geo: false,
            };
            out.push(field.describe(def));
        }
        out
    }
}

/// One field to describe: a field of the model, or a component of one of its addresses (whose
/// writability is the compound's).
struct Field<'a> {
    name: String,
    ftype: FieldType,
    def: &'a FieldDef,
    compound: Option<&'a str>,
    geo: bool,
}

/// Salesforce's describe `type` and `soapType` of a field type.
fn types(ftype: FieldType) -> (&'static str, &'static str) {
    match ftype {
        FieldType::Id => ("id", "tns:ID"),
        FieldType::Reference => ("reference", "tns:ID"),
        FieldType::Text => ("string", "xsd:string"),
        FieldType::Picklist => ("picklist", "xsd:string"),
        FieldType::TextArea => ("textarea", "xsd:string"),
        FieldType::DateTime => ("datetime", "xsd:dateTime"),
        FieldType::Date => ("date", "xsd:date"),
        FieldType::Double => ("double", "xsd:double"),
        FieldType::Currency => ("currency", "xsd:double"),
        FieldType::Boolean => ("boolean", "xsd:boolean"),
        FieldType::Int => ("int", "xsd:int"),
        FieldType::Address => ("address", "urn:address"),
    }
}

/// The system fields whose value the org always sets.
const ALWAYS_SET: [&str; 7] = [
    "Id",
    "IsDeleted",
    "CreatedDate",
    "CreatedById",
    "LastModifiedDate",
    "LastModifiedById",
    "SystemModstamp",
];

impl Field<'_> {
    fn describe(&self, object: &SObjectDef) -> Value {
        let name = self.name.as_str();
        let (kind, soap) = types(self.ftype);
        let length = match self.ftype {
            FieldType::Id | FieldType::Reference => 18,
            FieldType::Text | FieldType::Picklist => self.def.length.unwrap_or(255),
            // Long text areas hold 32,000 characters; an address street is a 255-character one.
            FieldType::TextArea if self.compound.is_some() => 255,
            FieldType::TextArea => self.def.length.unwrap_or(32_000),
            _ => 0,
        };
        let (precision, scale) = match self.ftype {
            FieldType::Currency | FieldType::Double if self.geo => (18, 15),
            FieldType::Currency | FieldType::Double => (18, 2),
            _ => (0, 0),
        };
        let required = model::required_on_create(&object.name).contains(&name);
        let auto_number = model::auto_number(&object.name) == Some(name);
        let nillable = !(required
            || auto_number
            || ALWAYS_SET.contains(&name)
            || self.ftype == FieldType::Boolean
            || (object.name == "Order" && name == "StatusCode"));
        let writable = |creating: bool| match self.compound {
            Some(_) => object.writable(name, creating),
            None if self.ftype == FieldType::Address => false,
            None => {
                if creating {
                    self.def.createable
                } else {
                    self.def.updateable
                }
            }
        };
        let picklist = model::picklist(&object.name, name);
        let picklist_values: Vec<Value> = picklist
            .map(|p| {
                p.values
                    .iter()
                    .map(|v| {
                        json!({
                            "active": true,
                            "defaultValue": p.default == Some(*v),
                            "label": v,
                            "validFor": null,
                            "value": v,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let (reference_to, relationship) = match &self.def.reference_to {
            Some(target) if self.ftype == FieldType::Reference => (
                vec![target.clone()],
                name.strip_suffix("Id").map(str::to_owned),
            ),
            _ => (Vec::new(), None),
        };
        let label = if name == "Id" {
            format!("{} ID", model::object_labels(&object.name).0)
        } else {
            model::field_label(name)
        };
        let long_text = self.ftype == FieldType::TextArea && length > 255;
        json!({
            "autoNumber": auto_number,
            "byteLength": length * 3,
            "calculated": false,
            "compoundFieldName": self.compound,
            "createable": writable(true),
            "custom": name.ends_with("__c"),
            "defaultValue": (self.ftype == FieldType::Boolean).then_some(false),
            "digits": if self.ftype == FieldType::Int { 9 } else { 0 },
            "externalId": false,
            "filterable": !long_text && self.ftype != FieldType::Address,
            "idLookup": name == "Id",
            "label": label,
            "length": length,
            "name": name,
            "nillable": nillable,
            "picklistValues": picklist_values,
            "precision": precision,
            "referenceTo": reference_to,
            "relationshipName": relationship,
            "restrictedPicklist": picklist.is_some_and(|p| p.restricted),
            "scale": scale,
            "soapType": soap,
            "type": kind,
            "unique": false,
            "updateable": writable(false),
        })
    }
}
