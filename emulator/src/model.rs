//! Object definitions of the emulated org: Account, Order and OrderItem, field by field.
//!
//! The definitions drive everything the emulator does with records: which fields REST may
//! create or update, how values are typed in JSON, and which fields, in which order, make up the
//! change-event schema. Order follows reference §5.2 position for position, followed by the custom
//! fields sorted by name, so bitmaps computed here match what a client decodes with GetSchema.
//!
//! Address fields are stored flat (`BillingCity`), as Salesforce stores them; the compound
//! `BillingAddress` appears in REST reads and, as the nested `Address` record, in change events.

use serde::{Deserialize, Serialize};

/// The type of a field, as far as the emulator needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FieldType {
    /// The record's own id.
    Id,
    /// A lookup to another record.
    Reference,
    /// Free text.
    Text,
    /// A picklist value.
    Picklist,
    /// Long text.
    TextArea,
    /// Date and time, epoch milliseconds; ISO-8601 in REST.
    DateTime,
    /// A calendar date, epoch milliseconds at 00:00 UTC; `YYYY-MM-DD` in REST.
    Date,
    /// A floating-point number.
    Double,
    /// A currency amount.
    Currency,
    /// A checkbox.
    Boolean,
    /// An integer.
    Int,
    /// A compound address; its components are separate flat fields.
    Address,
}

impl FieldType {
    /// The `doc` tag Salesforce puts on the field in an Avro schema.
    pub fn avro_doc(self) -> &'static str {
        match self {
            FieldType::Id | FieldType::Reference => "ForeignKey:EntityId",
            FieldType::Text => "Data:Text",
            FieldType::Picklist => "Data:DynamicEnum",
            FieldType::TextArea => "Data:StringPlusClob",
            FieldType::DateTime => "Data:DateTime",
            FieldType::Date => "Data:DateOnly",
            FieldType::Double => "Data:Double",
            FieldType::Currency => "Data:Currency",
            FieldType::Boolean => "Data:Boolean",
            FieldType::Int => "Data:Integer",
            FieldType::Address => "Data:Address",
        }
    }
}

/// One field of an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldDef {
    /// API name.
    pub name: String,
    /// Type.
    pub ftype: FieldType,
    /// Whether REST may set it on create.
    pub createable: bool,
    /// Whether REST may set it on update.
    pub updateable: bool,
    /// Whether it is part of the change-event schema.
    pub cdc: bool,
    /// Overrides the `doc` tag in the Avro schema.
    pub doc: Option<String>,
    /// Most characters a text value may hold (a `Text(255)` field has 255); `None` is
    /// unchecked, as for the standard fields the emulator does not size.
    #[serde(default)]
    pub length: Option<usize>,
}

impl FieldDef {
    fn new(name: &str, ftype: FieldType) -> Self {
        FieldDef {
            name: name.to_owned(),
            ftype,
            createable: true,
            updateable: true,
            cdc: true,
            doc: None,
            length: None,
        }
    }

    fn system(name: &str, ftype: FieldType) -> Self {
        FieldDef {
            createable: false,
            updateable: false,
            ..FieldDef::new(name, ftype)
        }
    }

    fn create_only(name: &str, ftype: FieldType) -> Self {
        FieldDef {
            updateable: false,
            ..FieldDef::new(name, ftype)
        }
    }

    fn hidden_from_cdc(mut self) -> Self {
        self.cdc = false;
        self
    }

    fn doc(mut self, doc: &str) -> Self {
        self.doc = Some(doc.to_owned());
        self
    }

    fn length(mut self, length: usize) -> Self {
        self.length = Some(length);
        self
    }

    /// A custom text field, as an admin adds one.
    pub fn custom_text(name: &str) -> Self {
        FieldDef::new(name, FieldType::Text).doc("Data:Text:00N5g00000Sfcd1")
    }

    /// The `doc` tag of this field in an Avro schema.
    pub fn avro_doc(&self) -> &str {
        self.doc.as_deref().unwrap_or(self.ftype.avro_doc())
    }
}

/// Components of a compound address: the name inside the CDC `Address` record and the suffix of
/// the flat field (`City` → `BillingCity`). `Xyz` has no flat field and is always null.
pub const ADDRESS_COMPONENTS: [(&str, Option<&str>, FieldType); 11] = [
    ("Street", Some("Street"), FieldType::TextArea),
    ("City", Some("City"), FieldType::Text),
    ("State", Some("State"), FieldType::Text),
    ("PostalCode", Some("PostalCode"), FieldType::Text),
    ("Country", Some("Country"), FieldType::Text),
    ("StateCode", Some("StateCode"), FieldType::Picklist),
    ("CountryCode", Some("CountryCode"), FieldType::Picklist),
    ("Latitude", Some("Latitude"), FieldType::Double),
    ("Longitude", Some("Longitude"), FieldType::Double),
    ("Xyz", None, FieldType::Text),
    (
        "GeocodeAccuracy",
        Some("GeocodeAccuracy"),
        FieldType::Picklist,
    ),
];

/// The flat-field prefix of a compound address field (`BillingAddress` → `Billing`).
pub fn address_prefix(compound: &str) -> &str {
    compound.strip_suffix("Address").unwrap_or(compound)
}

/// If `flat` is a component of one of `def`'s address fields, returns the compound field name
/// and the CDC component name (`BillingCity` → (`BillingAddress`, `City`)).
pub fn address_component<'a>(def: &'a SObjectDef, flat: &str) -> Option<(&'a str, &'static str)> {
    def.fields
        .iter()
        .filter(|f| f.ftype == FieldType::Address)
        .find_map(|f| {
            let prefix = address_prefix(&f.name);
            let suffix = flat.strip_prefix(prefix)?;
            ADDRESS_COMPONENTS
                .iter()
                .find(|(_, flat_suffix, _)| *flat_suffix == Some(suffix))
                .map(|(cdc, _, _)| (f.name.as_str(), *cdc))
        })
}

/// An object type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SObjectDef {
    /// API name (`Order`).
    pub name: String,
    /// Id key prefix (`801`).
    pub key_prefix: String,
    /// Fields in describe order; change-event schemas keep this order.
    pub fields: Vec<FieldDef>,
}

impl SObjectDef {
    /// Looks a field up by API name, case-insensitively as Salesforce does.
    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// Resolves a name given by a client to a stored flat field: a real field, or an address
    /// component such as `BillingCity`. Returns the canonical name and its type.
    pub fn flat_field(&self, name: &str) -> Option<(String, FieldType)> {
        if let Some(f) = self.field(name) {
            return Some((f.name.clone(), f.ftype));
        }
        self.flat_address_fields()
            .find(|(flat, _)| flat.eq_ignore_ascii_case(name))
    }

    /// Every flat address component field, with its type.
    pub fn flat_address_fields(&self) -> impl Iterator<Item = (String, FieldType)> + '_ {
        self.fields
            .iter()
            .filter(|f| f.ftype == FieldType::Address)
            .flat_map(|f| {
                let prefix = address_prefix(&f.name).to_owned();
                ADDRESS_COMPONENTS
                    .iter()
                    .filter_map(move |(_, flat, t)| flat.map(|s| (format!("{prefix}{s}"), *t)))
            })
    }

    /// Whether a flat field may be written on create (`creating`) or update.
    pub fn writable(&self, name: &str, creating: bool) -> bool {
        let Some((flat, _)) = self.flat_field(name) else {
            return false;
        };
        let owner = match self.field(&flat) {
            // The compound itself is read-only; its components are written.
            Some(f) if f.ftype == FieldType::Address => return false,
            Some(f) => f,
            None => match address_component(self, &flat).and_then(|(c, _)| self.field(c)) {
                Some(compound) => compound,
                None => return false,
            },
        };
        if creating {
            owner.createable
        } else {
            owner.updateable
        }
    }
}

fn standard_audit_fields() -> Vec<FieldDef> {
    vec![
        FieldDef::system("CreatedDate", FieldType::DateTime).doc("CreatedDate:DateTime"),
        FieldDef::system("CreatedById", FieldType::Reference),
        FieldDef::system("LastModifiedDate", FieldType::DateTime),
        FieldDef::system("LastModifiedById", FieldType::Reference),
    ]
}

/// The system fields every object has that change events leave out: whether the record is in the
/// recycle bin, and when the system last touched it.
fn hidden_system_fields() -> [FieldDef; 2] {
    [
        FieldDef::system("IsDeleted", FieldType::Boolean).hidden_from_cdc(),
        FieldDef::system("SystemModstamp", FieldType::DateTime).hidden_from_cdc(),
    ]
}

/// Account: enough to own orders and be queried.
pub fn account() -> SObjectDef {
    let mut fields = vec![
        FieldDef::system("Id", FieldType::Id).hidden_from_cdc(),
        FieldDef::new("Name", FieldType::Text),
        FieldDef::new("Type", FieldType::Picklist),
        FieldDef::new("BillingAddress", FieldType::Address),
        FieldDef::new("Phone", FieldType::Text),
        FieldDef::new("Industry", FieldType::Picklist),
        FieldDef::new("OwnerId", FieldType::Reference),
    ];
    fields.extend(standard_audit_fields());
    fields.extend(hidden_system_fields());
    SObjectDef {
        name: "Account".into(),
        key_prefix: "001".into(),
        fields,
    }
}

/// Order, in the change-event field order of reference §5.2, plus the custom fields of the
/// provisioning flow: the two the rules read (`Activation_Status__c`, `WHMCS_Order_ID__c`) and
/// `Provisioning_Error__c`, where the worker writes why fulfilment failed.
///
/// `Activation_Status__c` is an unrestricted picklist, as it is in the org the seeds describe:
/// any text is accepted (`Activating`, `Activated`, `Failed`, `Deactivated`, `Pending`, …), so
/// only `Status` is validated against its values.
pub fn order() -> SObjectDef {
    use FieldType::*;
    let mut fields = vec![
        FieldDef::system("Id", Id).hidden_from_cdc(),
        FieldDef::new("OwnerId", Reference),
        FieldDef::new("ContractId", Reference),
        FieldDef::create_only("AccountId", Reference),
        FieldDef::new("Pricebook2Id", Reference),
        FieldDef::create_only("OriginalOrderId", Reference),
        FieldDef::new("EffectiveDate", Date),
        FieldDef::new("EndDate", Date),
        FieldDef::create_only("IsReductionOrder", Boolean),
        FieldDef::new("Status", Picklist),
        FieldDef::new("Description", TextArea),
        FieldDef::new("CustomerAuthorizedById", Reference),
        FieldDef::new("CompanyAuthorizedById", Reference),
        FieldDef::new("Type", Picklist),
        FieldDef::new("BillingAddress", Address),
        FieldDef::new("ShippingAddress", Address),
        FieldDef::new("Name", Text),
        FieldDef::new("PoDate", Date),
        FieldDef::new("PoNumber", Text),
        FieldDef::new("OrderReferenceNumber", Text),
        FieldDef::new("BillToContactId", Reference),
        FieldDef::new("ShipToContactId", Reference),
        FieldDef::system("ActivatedDate", DateTime),
        FieldDef::system("ActivatedById", Reference),
        FieldDef::system("StatusCode", Picklist).doc("Data:StaticEnum"),
        FieldDef::system("OrderNumber", Text),
        FieldDef::system("TotalAmount", Currency),
    ];
    fields.extend(standard_audit_fields());
    fields.push(
        FieldDef::new("Activation_Status__c", Picklist).doc("Data:DynamicEnum:00N5g00000Sfcd2"),
    );
    fields.push(
        FieldDef::new("Provisioning_Error__c", Text)
            .doc("Data:Text:00N5g00000Sfcd4")
            .length(255),
    );
    fields.push(FieldDef::new("WHMCS_Order_ID__c", Text).doc("Data:Text:00N5g00000Sfcd3"));
    fields.extend(hidden_system_fields());
    SObjectDef {
        name: "Order".into(),
        key_prefix: "801".into(),
        fields,
    }
}

/// OrderItem (order product).
pub fn order_item() -> SObjectDef {
    use FieldType::*;
    let mut fields = vec![
        FieldDef::system("Id", Id).hidden_from_cdc(),
        FieldDef::create_only("Product2Id", Reference),
        FieldDef::create_only("OrderId", Reference),
        FieldDef::create_only("PricebookEntryId", Reference),
        FieldDef::create_only("OriginalOrderItemId", Reference),
        FieldDef::new("Quantity", Double),
        FieldDef::new("UnitPrice", Currency),
        FieldDef::system("ListPrice", Currency),
        FieldDef::system("TotalPrice", Currency),
        FieldDef::new("ServiceDate", Date),
        FieldDef::new("EndDate", Date),
        FieldDef::new("Description", Text),
        FieldDef::system("OrderItemNumber", Text),
    ];
    fields.extend(standard_audit_fields());
    fields.extend(hidden_system_fields());
    SObjectDef {
        name: "OrderItem".into(),
        key_prefix: "802".into(),
        fields,
    }
}

/// Values of the Order `Status` picklist (restricted).
pub const ORDER_STATUSES: [&str; 6] = [
    "Draft",
    "Approved",
    "Activated",
    "Reactivate",
    "Deactivated",
    "Cancelled",
];

/// The status category (`StatusCode`) Salesforce derives from an Order status.
pub fn order_status_code(status: &str) -> &'static str {
    match status {
        "Activated" => "Activated",
        "Cancelled" | "Deactivated" => "Cancelled",
        _ => "Draft",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_change_event_positions_match_the_reference() {
        let def = order();
        let cdc: Vec<&str> = std::iter::once("ChangeEventHeader")
            .chain(def.fields.iter().filter(|f| f.cdc).map(|f| f.name.as_str()))
            .collect();
        assert_eq!(cdc.iter().position(|n| *n == "Status"), Some(9));
        assert_eq!(cdc.iter().position(|n| *n == "BillingAddress"), Some(14));
        assert_eq!(cdc.iter().position(|n| *n == "LastModifiedDate"), Some(29));
        assert_eq!(cdc.len(), 34);
    }

    #[test]
    fn flat_address_fields_resolve_to_their_compound() {
        let def = order();
        assert_eq!(
            address_component(&def, "BillingCity"),
            Some(("BillingAddress", "City"))
        );
        assert_eq!(
            address_component(&def, "ShippingGeocodeAccuracy"),
            Some(("ShippingAddress", "GeocodeAccuracy"))
        );
        assert_eq!(address_component(&def, "Status"), None);
        assert!(def.writable("billingcity", false));
        assert!(!def.writable("BillingAddress", false));
        assert!(!def.writable("OrderNumber", true));
        assert!(def.writable("AccountId", true));
        assert!(!def.writable("AccountId", false));
        assert_eq!(
            def.flat_field("shippingstreet"),
            Some(("ShippingStreet".to_string(), FieldType::TextArea))
        );
    }
}
