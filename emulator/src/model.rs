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
    /// The object a lookup points to (`AccountId` → `Account`), for describe's `referenceTo`.
    #[serde(default)]
    pub reference_to: Option<String>,
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
            reference_to: None,
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

    fn to(mut self, sobject: &str) -> Self {
        self.reference_to = Some(sobject.to_owned());
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
        FieldDef::system("CreatedById", FieldType::Reference).to("User"),
        FieldDef::system("LastModifiedDate", FieldType::DateTime),
        FieldDef::system("LastModifiedById", FieldType::Reference).to("User"),
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
        FieldDef::new("OwnerId", FieldType::Reference).to("User"),
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
        FieldDef::new("OwnerId", Reference).to("User"),
        FieldDef::new("ContractId", Reference).to("Contract"),
        FieldDef::create_only("AccountId", Reference).to("Account"),
        FieldDef::new("Pricebook2Id", Reference).to("Pricebook2"),
        FieldDef::create_only("OriginalOrderId", Reference).to("Order"),
        FieldDef::new("EffectiveDate", Date),
        FieldDef::new("EndDate", Date),
        FieldDef::create_only("IsReductionOrder", Boolean),
        FieldDef::new("Status", Picklist),
        FieldDef::new("Description", TextArea),
        FieldDef::new("CustomerAuthorizedById", Reference).to("Contact"),
        FieldDef::new("CompanyAuthorizedById", Reference).to("User"),
        FieldDef::new("Type", Picklist),
        FieldDef::new("BillingAddress", Address),
        FieldDef::new("ShippingAddress", Address),
        FieldDef::new("Name", Text),
        FieldDef::new("PoDate", Date),
        FieldDef::new("PoNumber", Text),
        FieldDef::new("OrderReferenceNumber", Text),
        FieldDef::new("BillToContactId", Reference).to("Contact"),
        FieldDef::new("ShipToContactId", Reference).to("Contact"),
        FieldDef::system("ActivatedDate", DateTime),
        FieldDef::system("ActivatedById", Reference).to("User"),
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
        FieldDef::create_only("Product2Id", Reference).to("Product2"),
        FieldDef::create_only("OrderId", Reference).to("Order"),
        FieldDef::create_only("PricebookEntryId", Reference).to("PricebookEntry"),
        FieldDef::create_only("OriginalOrderItemId", Reference).to("OrderItem"),
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

/// The values the provisioning flow writes to `Activation_Status__c`. The picklist is
/// unrestricted, so other text is accepted too.
pub const ACTIVATION_STATUSES: [&str; 5] = [
    "Pending",
    "Activating",
    "Activated",
    "Failed",
    "Deactivated",
];

/// Values of the Order `StatusCode` (status category) picklist, as [`order_status_code`] derives
/// them.
pub const ORDER_STATUS_CODES: [&str; 3] = ["Draft", "Activated", "Cancelled"];

/// A picklist's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Picklist {
    /// The values, in order.
    pub values: &'static [&'static str],
    /// The value a new record gets in the user interface, if any.
    pub default: Option<&'static str>,
    /// Whether other values are refused (`INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST`).
    pub restricted: bool,
}

/// The values of a picklist field the emulator knows them for (`None` for picklists whose
/// values it does not model, such as `Type` or the address codes).
pub fn picklist(sobject: &str, field: &str) -> Option<Picklist> {
    let (values, default, restricted): (&'static [&'static str], _, _) = match (sobject, field) {
        ("Order", "Status") => (&ORDER_STATUSES, Some("Draft"), true),
        ("Order", "StatusCode") => (&ORDER_STATUS_CODES, None, true),
        ("Order", "Activation_Status__c") => (&ACTIVATION_STATUSES, None, false),
        _ => return None,
    };
    Some(Picklist {
        values,
        default,
        restricted,
    })
}

/// The fields a create must give a value (`REQUIRED_FIELD_MISSING` otherwise).
pub fn required_on_create(sobject: &str) -> &'static [&'static str] {
    match sobject {
        "Account" => &["Name"],
        "Order" => &["AccountId", "EffectiveDate", "Status"],
        "OrderItem" => &["OrderId", "Quantity", "UnitPrice"],
        _ => &[],
    }
}

/// The auto-number field of an object, which the org numbers on create.
pub fn auto_number(sobject: &str) -> Option<&'static str> {
    match sobject {
        "Order" => Some("OrderNumber"),
        "OrderItem" => Some("OrderItemNumber"),
        _ => None,
    }
}

/// The label and plural label of an object, as Setup shows them.
pub fn object_labels(sobject: &str) -> (String, String) {
    match sobject {
        "OrderItem" => ("Order Product".into(), "Order Products".into()),
        other if other.ends_with("__e") => {
            let label = field_label(other);
            (label.clone(), label)
        }
        other => (other.to_owned(), format!("{other}s")),
    }
}

/// A label from an API name, as Salesforce forms the default one: words split at capitals and
/// underscores, the `__c`/`__e` suffix dropped, a trailing `Id` written `ID`
/// (`Activation_Status__c` → `Activation Status`, `AccountId` → `Account ID`).
pub fn field_label(api_name: &str) -> String {
    let base = api_name
        .strip_suffix("__c")
        .or_else(|| api_name.strip_suffix("__e"))
        .unwrap_or(api_name);
    let mut words: Vec<String> = Vec::new();
    for part in base.split('_').filter(|p| !p.is_empty()) {
        let mut word = String::new();
        let chars: Vec<char> = part.chars().collect();
        for (i, c) in chars.iter().enumerate() {
            let starts_word = i > 0
                && c.is_uppercase()
                && (chars[i - 1].is_lowercase()
                    || chars.get(i + 1).is_some_and(|n| n.is_lowercase()));
            if starts_word {
                words.push(std::mem::take(&mut word));
            }
            word.push(*c);
        }
        words.push(word);
    }
    if words.len() > 1 && words.last().is_some_and(|w| w == "Id") {
        words.pop();
        words.push("ID".into());
    }
    words.join(" ")
}

/// A platform event's definition, for describe: the standard `CreatedDate` and `CreatedById`
/// its events carry, then its custom fields, which a publish sets and nothing updates.
pub fn platform_event(name: &str, fields: &[(&str, FieldType)]) -> SObjectDef {
    let mut all = vec![
        FieldDef::system("CreatedDate", FieldType::DateTime),
        FieldDef::system("CreatedById", FieldType::Reference).to("User"),
    ];
    all.extend(
        fields
            .iter()
            .map(|(f, t)| FieldDef::create_only(f, *t).length(255)),
    );
    SObjectDef {
        name: name.to_owned(),
        key_prefix: "e00".into(),
        fields: all,
    }
}

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
    fn default_labels_are_formed_from_api_names() {
        for (name, label) in [
            ("Activation_Status__c", "Activation Status"),
            ("WHMCS_Order_ID__c", "WHMCS Order ID"),
            ("AccountId", "Account ID"),
            ("Id", "Id"),
            ("EffectiveDate", "Effective Date"),
            ("Pricebook2Id", "Pricebook2 ID"),
            ("BillingGeocodeAccuracy", "Billing Geocode Accuracy"),
            (
                "Order_Fulfilment_Requested__e",
                "Order Fulfilment Requested",
            ),
        ] {
            assert_eq!(field_label(name), label);
        }
        assert_eq!(object_labels("Order"), ("Order".into(), "Orders".into()));
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
