//! The field bitmaps of a ChangeEventHeader (`changedFields`, `nulledFields`, `diffFields`).
//!
//! Salesforce sends these as arrays of hex strings (reference §4). The first element, when it
//! starts with `0x`, is a bitmap over the top-level fields of the event's writer schema: bit *i*
//! (counted from the least significant bit of the whole number) names field *i*. Later elements
//! `"<p>-0x<hex>"` name components of the compound field at top-level position *p*, reported as
//! `Parent.Child`.
//!
//! Decoding follows the robust reading of §4.2: hex digits are case-insensitive and of any count,
//! nested-only arrays are accepted, and bits beyond the schema are ignored. Only text that cannot
//! be a bitmap at all is an error. Encoding (used by the fuzz targets to check round trips; the
//! emulator has its own encoder) always writes the top-level element first, in upper case, with
//! an even number of digits, exactly as Salesforce does.
//!
//! Both directions are pure functions over a [`FieldLayout`], which is derived once per schema.

use std::collections::BTreeMap;
use std::sync::Arc;

/// A field name as the decoder hands it out: shared with the layout, so decoding a bitmap
/// allocates no strings.
pub type FieldName = Arc<str>;

/// The field names a bitmap indexes: the top-level fields of one writer schema, and for each
/// record-typed field the names of its nested fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldLayout {
    fields: Vec<LayoutField>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct LayoutField {
    name: FieldName,
    /// Nested field names, and their `Parent.Child` paths.
    children: Option<Vec<(FieldName, FieldName)>>,
}

impl FieldLayout {
    /// An empty layout; add fields in schema order with [`FieldLayout::push`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the next top-level field; `children` is `Some` for compound (record) fields.
    pub fn push(&mut self, name: impl Into<String>, children: Option<Vec<String>>) {
        let name: String = name.into();
        let children = children.map(|cs| {
            cs.into_iter()
                .map(|c| {
                    let path: FieldName = format!("{name}.{c}").into();
                    (FieldName::from(c), path)
                })
                .collect()
        });
        self.fields.push(LayoutField {
            name: name.into(),
            children,
        });
    }

    /// Number of top-level fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether the layout has no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Name of the top-level field at `index`.
    pub fn name(&self, index: usize) -> Option<&FieldName> {
        self.fields.get(index).map(|f| &f.name)
    }

    /// Position of a top-level field.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| &*f.name == name)
    }

    /// Nested field names of the compound field at `index`, if it is one.
    pub fn children(&self, index: usize) -> Option<Vec<&str>> {
        let children = self.fields.get(index)?.children.as_ref()?;
        Some(children.iter().map(|(c, _)| &**c).collect())
    }

    fn nested(&self, index: usize) -> Option<&[(FieldName, FieldName)]> {
        self.fields.get(index)?.children.as_deref()
    }
}

/// A bitmap element that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BitmapError {
    /// The hex part is empty or has a non-hex character.
    #[error("bitmap element {element:?} is not hexadecimal")]
    NotHex {
        /// The offending element, as received.
        element: String,
    },
    /// A nested element's parent position is not a decimal number.
    #[error("bitmap element {element:?} has no numeric parent position before '-'")]
    BadParent {
        /// The offending element, as received.
        element: String,
    },
}

/// Calls `hit` with every set bit index of a hex number, lowest first.
fn for_each_bit(hex: &str, element: &str, mut hit: impl FnMut(usize)) -> Result<(), BitmapError> {
    if hex.is_empty() {
        return Err(BitmapError::NotHex {
            element: element.to_owned(),
        });
    }
    for (k, c) in hex.bytes().rev().enumerate() {
        let Some(digit) = hex_digit(c) else {
            return Err(BitmapError::NotHex {
                element: element.to_owned(),
            });
        };
        // The set bits of the digit, lowest first.
        let mut bits = digit;
        while bits != 0 {
            hit(k * 4 + bits.trailing_zeros() as usize);
            bits &= bits - 1;
        }
    }
    Ok(())
}

/// How many bits a hex number sets at most (non-hex characters count none): the room to reserve
/// for its names.
fn bits_set(hex: &str) -> usize {
    hex.bytes()
        .map(|c| hex_digit(c).map_or(0, u32::count_ones) as usize)
        .sum()
}

/// The value of a hex digit, either case (as `char::to_digit(16)`, on a byte).
#[inline(always)]
fn hex_digit(c: u8) -> Option<u32> {
    match c {
        b'0'..=b'9' => Some(u32::from(c - b'0')),
        b'a'..=b'f' => Some(u32::from(c - b'a' + 10)),
        b'A'..=b'F' => Some(u32::from(c - b'A' + 10)),
        _ => None,
    }
}

fn strip_hex_prefix(s: &str) -> Option<&str> {
    s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))
}

/// Decodes a bitmap array into field names, top-level fields first (in schema order), then
/// nested fields as `Parent.Child` in the order of the array.
pub fn decode<S: AsRef<str>>(
    layout: &FieldLayout,
    values: impl IntoIterator<Item = S>,
) -> Result<Vec<FieldName>, BitmapError> {
    let mut names = Expander::new(layout);
    for value in values {
        names.push(value.as_ref());
    }
    names.finish()
}

/// [`decode`] one element at a time, for a reader that meets the elements as it decodes them
/// and keeps no list of their strings. The first malformed element is the result; the elements
/// after it are not looked at.
#[derive(Debug)]
pub struct Expander<'l> {
    layout: &'l FieldLayout,
    /// The names so far: the top-level ones first (`..top`), then the nested ones. One list,
    /// grown by what each element can set, so that an event's names usually take one
    /// allocation.
    names: Vec<FieldName>,
    top: usize,
    error: Option<BitmapError>,
}

impl<'l> Expander<'l> {
    /// An expander over `layout`, with no element yet.
    pub fn new(layout: &'l FieldLayout) -> Self {
        Expander {
            layout,
            names: Vec::new(),
            top: 0,
            error: None,
        }
    }

    /// Expands the next element of the array.
    pub fn push(&mut self, value: &str) {
        if self.error.is_none()
            && let Err(e) = self.element(value)
        {
            self.error = Some(e);
        }
    }

    /// The names, top-level fields first, or the first element's error.
    pub fn finish(self) -> Result<Vec<FieldName>, BitmapError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.names),
        }
    }

    fn element(&mut self, value: &str) -> Result<(), BitmapError> {
        let layout = self.layout;
        if let Some(hex) = strip_hex_prefix(value) {
            self.names.reserve(bits_set(hex).min(layout.len()));
            let (names, top) = (&mut self.names, &mut self.top);
            for_each_bit(hex, value, |i| {
                if let Some(name) = layout.name(i) {
                    // Before the nested names, which Salesforce sends after this element.
                    if *top == names.len() {
                        names.push(name.clone());
                    } else {
                        names.insert(*top, name.clone());
                    }
                    *top += 1;
                }
            })?;
        } else if let Some(dash) = value.bytes().position(|b| b == b'-') {
            // `split_once('-')`, without a char searcher for these few bytes.
            let (parent, rest) = (&value[..dash], &value[dash + 1..]);
            let position: usize = parent.parse().map_err(|_| BitmapError::BadParent {
                element: value.to_owned(),
            })?;
            let hex = strip_hex_prefix(rest).unwrap_or(rest);
            let Some(parent_name) = layout.name(position) else {
                // A parent beyond the schema is ignored, like any bit beyond it; the hex must
                // still be well formed.
                return for_each_bit(hex, value, |_| {});
            };
            let names = &mut self.names;
            match layout.nested(position) {
                Some(children) => {
                    names.reserve(bits_set(hex).min(children.len()));
                    for_each_bit(hex, value, |i| {
                        if let Some((_, path)) = children.get(i) {
                            names.push(path.clone());
                        }
                    })?
                }
                // A nested entry on a scalar field still says the field changed.
                None => {
                    for_each_bit(hex, value, |_| {})?;
                    names.push(parent_name.clone());
                }
            }
        } else {
            // Defensive, as in the reference decoders: a plain field name passes through.
            self.names.push(FieldName::from(value));
        }
        Ok(())
    }
}

/// Formats a bit set as upper-case hex with an even digit count (`"00"` for no bits).
fn hex_even_upper(bits: &[usize]) -> String {
    let max = bits.iter().copied().max();
    let digits = max.map_or(1, |m| m / 4 + 1);
    let mut nibbles = vec![0u8; digits];
    for &b in bits {
        nibbles[b / 4] |= 1 << (b % 4);
    }
    let mut s = String::with_capacity(digits + 1);
    if digits % 2 == 1 {
        s.push('0');
    }
    for n in nibbles.iter().rev() {
        s.push(
            char::from_digit(u32::from(*n), 16)
                .expect("nibble")
                .to_ascii_uppercase(),
        );
    }
    s
}

/// Encodes field paths (`Name` or `Parent.Child`) as Salesforce does: the top-level element first,
/// then one `"<p>-0x<hex>"` element per compound parent, in position order. Unknown paths are
/// ignored; no paths give an empty array.
pub fn encode<'a>(layout: &FieldLayout, paths: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut top = Vec::new();
    let mut nested: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for path in paths {
        match path.split_once('.') {
            Some((parent, child)) => {
                let Some(p) = layout.position(parent) else {
                    continue;
                };
                let Some(c) = layout
                    .nested(p)
                    .and_then(|cs| cs.iter().position(|(n, _)| &**n == child))
                else {
                    continue;
                };
                nested.entry(p).or_default().push(c);
            }
            None => {
                if let Some(p) = layout.position(path) {
                    top.push(p);
                }
            }
        }
    }
    if top.is_empty() && nested.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(1 + nested.len());
    out.push(format!("0x{}", hex_even_upper(&top)));
    for (p, bits) in nested {
        out.push(format!("{p}-0x{}", hex_even_upper(&bits)));
    }
    out
}

/// The fields of schema A in the reference's §4.4 test vectors (Account, whose addresses are
/// compound), for the tests and the bitmap fuzz target.
pub const REFERENCE_ACCOUNT_FIELDS: [&str; 35] = [
    "ChangeEventHeader",
    "Name",
    "Type",
    "ParentId",
    "BillingAddress",
    "ShippingAddress",
    "Phone",
    "Fax",
    "AccountNumber",
    "Website",
    "Sic",
    "Industry",
    "AnnualRevenue",
    "NumberOfEmployees",
    "Ownership",
    "TickerSymbol",
    "Description",
    "Rating",
    "Site",
    "OwnerId",
    "CreatedDate",
    "CreatedById",
    "LastModifiedDate",
    "LastModifiedById",
    "Jigsaw",
    "JigsawCompanyId",
    "CleanStatus",
    "AccountSource",
    "DunsNumber",
    "Tradestyle",
    "NaicsCode",
    "NaicsDesc",
    "YearStarted",
    "SicDesc",
    "DandbCompanyId",
];

#[cfg(test)]
mod tests {
    use super::*;

    const ADDRESS: [&str; 11] = [
        "Street",
        "City",
        "State",
        "PostalCode",
        "Country",
        "StateCode",
        "CountryCode",
        "Latitude",
        "Longitude",
        "Xyz",
        "GeocodeAccuracy",
    ];

    fn address() -> Option<Vec<String>> {
        Some(ADDRESS.iter().map(|s| s.to_string()).collect())
    }

    /// Schema A of reference §4.4 (Account).
    fn schema_a() -> FieldLayout {
        let names = super::REFERENCE_ACCOUNT_FIELDS;
        let mut l = FieldLayout::new();
        for n in names {
            let children = if n.ends_with("Address") {
                address()
            } else {
                None
            };
            l.push(n, children);
        }
        l
    }

    /// Schema D of reference §4.4 (the documentation example).
    fn schema_d() -> FieldLayout {
        let small: Vec<String> = ["Street", "City", "State", "PostalCode", "Country"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut l = FieldLayout::new();
        l.push("ChangeEventHeader", Some(vec![]));
        for i in 1..=31 {
            match i {
                4 => l.push("AddrA", Some(small.clone())),
                7 => l.push("AddrB", Some(small.clone())),
                _ => l.push(format!("F{i}"), None),
            }
        }
        l
    }

    /// The §5.2 Order schema positions that V15 uses.
    fn schema_order() -> FieldLayout {
        let names = [
            "ChangeEventHeader",
            "OwnerId",
            "ContractId",
            "AccountId",
            "Pricebook2Id",
            "OriginalOrderId",
            "EffectiveDate",
            "EndDate",
            "IsReductionOrder",
            "Status",
            "Description",
            "CustomerAuthorizedById",
            "CompanyAuthorizedById",
            "Type",
            "BillingAddress",
            "ShippingAddress",
            "Name",
            "PoDate",
            "PoNumber",
            "OrderReferenceNumber",
            "BillToContactId",
            "ShipToContactId",
            "ActivatedDate",
            "ActivatedById",
            "StatusCode",
            "OrderNumber",
            "TotalAmount",
            "CreatedDate",
            "CreatedById",
            "LastModifiedDate",
            "LastModifiedById",
        ];
        let mut l = FieldLayout::new();
        for n in names {
            l.push(n, n.ends_with("Address").then(address).flatten());
        }
        l
    }

    fn dec(layout: &FieldLayout, input: &[&str]) -> Vec<String> {
        let v: Vec<String> = input.iter().map(|s| s.to_string()).collect();
        decode(layout, &v)
            .unwrap()
            .iter()
            .map(|n| n.to_string())
            .collect()
    }

    #[test]
    fn reference_vectors_v1_to_v13_and_v15() {
        let a = schema_a();
        assert_eq!(
            dec(&a, &["0x400000", "4-0x06"]),
            [
                "LastModifiedDate",
                "BillingAddress.City",
                "BillingAddress.State"
            ]
        );
        assert_eq!(dec(&a, &["0x02"]), ["Name"]);
        assert_eq!(dec(&a, &["0x2000"]), ["NumberOfEmployees"]);
        assert_eq!(
            dec(&a, &["0xC00000"]),
            ["LastModifiedDate", "LastModifiedById"]
        );
        let v5 = dec(&a, &["0x400000", "4-0x07FF"]);
        let mut expected_v5 = vec!["LastModifiedDate".to_string()];
        expected_v5.extend(ADDRESS.iter().map(|c| format!("BillingAddress.{c}")));
        assert_eq!(v5, expected_v5);
        assert_eq!(
            dec(&a, &["0x400000", "4-0x06", "5-0x01"]),
            [
                "LastModifiedDate",
                "BillingAddress.City",
                "BillingAddress.State",
                "ShippingAddress.Street"
            ]
        );
        assert_eq!(dec(&a, &["4-0x02"]), ["BillingAddress.City"]);
        assert_eq!(
            dec(&a, &["0x4000e0"]),
            ["ShippingAddress", "Phone", "Fax", "LastModifiedDate"]
        );
        assert_eq!(
            dec(&schema_d(), &["0x650004E0", "4-0x10", "7-0x06"]),
            [
                "F5",
                "F6",
                "AddrB",
                "F10",
                "F24",
                "F26",
                "F29",
                "F30",
                "AddrA.Country",
                "AddrB.City",
                "AddrB.State"
            ]
        );
        assert!(dec(&a, &[]).is_empty());
        assert!(dec(&a, &["0x00"]).is_empty());
        assert_eq!(dec(&a, &["0x0400000000"]), ["DandbCompanyId"]);
        assert_eq!(dec(&a, &["0x100"]), ["AccountNumber"]);
        assert_eq!(
            dec(&schema_order(), &["0x20000200", "14-0x02"]),
            ["Status", "LastModifiedDate", "BillingAddress.City"]
        );
    }

    #[test]
    fn v14_real_payload_bitmap_names_fields_7_and_13() {
        let mut l = FieldLayout::new();
        for i in 0..20 {
            l.push(format!("F{i}"), None);
        }
        assert_eq!(dec(&l, &["0x2080"]), ["F7", "F13"]);
    }

    #[test]
    fn top_level_names_come_first_whatever_the_order_of_the_elements() {
        let a = schema_a();
        assert_eq!(
            dec(&a, &["4-0x02", "0x400002", "5-0x01", "0x2000"]),
            [
                "Name",
                "LastModifiedDate",
                "NumberOfEmployees",
                "BillingAddress.City",
                "ShippingAddress.Street"
            ]
        );
        assert_eq!(dec(&a, &["Foo", "0x02"]), ["Name", "Foo"]);
        // A long run of set bits reserves no more than the schema has fields.
        let long = format!("0x{}", "F".repeat(10_000));
        assert_eq!(dec(&a, &[long.as_str()]).len(), a.len());
    }

    #[test]
    fn bits_beyond_the_schema_are_ignored() {
        let a = schema_a();
        assert_eq!(dec(&a, &["0xFF00000000000002"]), ["Name"]);
        assert!(dec(&a, &["99-0x01"]).is_empty());
        assert_eq!(dec(&a, &["4-0xF800"]), Vec::<String>::new());
    }

    #[test]
    fn malformed_elements_are_typed_errors() {
        let a = schema_a();
        for bad in ["0x", "0xZZ", "x-0x01", "4-0xG1", "-0x01"] {
            let err = decode(&a, &[bad.to_string()]).unwrap_err();
            assert!(
                matches!(
                    err,
                    BitmapError::NotHex { .. } | BitmapError::BadParent { .. }
                ),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn encoding_matches_salesforce_formatting() {
        let a = schema_a();
        assert_eq!(
            encode(
                &a,
                [
                    "LastModifiedDate",
                    "BillingAddress.City",
                    "BillingAddress.State"
                ]
            ),
            ["0x400000", "4-0x06"]
        );
        assert_eq!(encode(&a, ["AccountNumber"]), ["0x0100"]);
        assert_eq!(encode(&a, ["BillingAddress.City"]), ["0x00", "4-0x02"]);
        assert!(encode(&a, []).is_empty());
        assert_eq!(
            encode(
                &schema_order(),
                ["Status", "LastModifiedDate", "BillingAddress.City"]
            ),
            ["0x20000200", "14-0x02"]
        );
    }
}
