//! The field bitmaps the emulator writes into a ChangeEventHeader (`changedFields`,
//! `nulledFields`), following the Pub/Sub API reference §4.1 and §4.5.
//!
//! A bitmap array names fields by their position in the event's writer schema. Its first element
//! is `0x` and a hexadecimal number whose bit *i* (from the least significant bit of the whole
//! number) stands for top-level field *i*. Each later element `"<p>-0x<hex>"` does the same for
//! the nested fields of the compound (record) field at top-level position *p*, which are reported
//! as `Parent.Child`. The emulator writes what Salesforce writes: the top-level element always
//! first (even when only nested fields changed), then the nested elements in position order, all
//! digits upper case and an even number of them (`00` for no bits).
//!
//! The emulator only encodes; decoding is the subscriber's business. Its tests pin the
//! reference's test vectors, so a subscriber that reads them right reads the emulator right.

use std::collections::BTreeMap;

/// The names a bitmap indexes: the top-level fields of one schema, in order, and for each
/// compound field the names of its nested fields, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldLayout {
    fields: Vec<(String, Option<Vec<String>>)>,
}

impl FieldLayout {
    /// A layout with no fields.
    pub fn new() -> FieldLayout {
        FieldLayout::default()
    }

    /// Adds the next top-level field; `children` names the fields of a compound one.
    pub fn push(&mut self, name: impl Into<String>, children: Option<Vec<String>>) {
        self.fields.push((name.into(), children));
    }

    /// Number of top-level fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The position of a field path: `(top-level position, None)` for `Name`,
    /// `(parent position, Some(child position))` for `Parent.Child`; `None` when the schema
    /// has no such field.
    fn locate(&self, path: &str) -> Option<(usize, Option<usize>)> {
        let top = |name: &str| self.fields.iter().position(|(n, _)| n == name);
        match path.split_once('.') {
            None => top(path).map(|p| (p, None)),
            Some((parent, child)) => {
                let p = top(parent)?;
                let children = self.fields[p].1.as_ref()?;
                let c = children.iter().position(|n| n == child)?;
                Some((p, Some(c)))
            }
        }
    }
}

/// A set of bit positions, as the bytes of an unbounded unsigned number, least significant
/// byte first.
#[derive(Debug, Default)]
struct Bits(Vec<u8>);

impl Bits {
    fn set(&mut self, bit: usize) {
        let byte = bit / 8;
        if self.0.len() <= byte {
            self.0.resize(byte + 1, 0);
        }
        self.0[byte] |= 1 << (bit % 8);
    }

    /// `0x` and the number in upper-case hex, two digits per byte, without leading zero bytes;
    /// `0x00` for no bits.
    fn to_hex(&self) -> String {
        let significant = self.0.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
        if significant == 0 {
            return "0x00".to_owned();
        }
        let mut out = String::with_capacity(2 + 2 * significant);
        out.push_str("0x");
        for b in self.0[..significant].iter().rev() {
            out.push_str(&format!("{b:02X}"));
        }
        out
    }
}

/// Encodes field paths (`Name`, `Parent.Child`) as a bitmap array. Paths the layout does not
/// know are left out; no known path gives an empty array.
pub fn encode<'a>(layout: &FieldLayout, paths: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut top = Bits::default();
    let mut nested: BTreeMap<usize, Bits> = BTreeMap::new();
    let mut any = false;
    for path in paths {
        match layout.locate(path) {
            Some((p, None)) => top.set(p),
            Some((p, Some(c))) => nested.entry(p).or_default().set(c),
            None => continue,
        }
        any = true;
    }
    if !any {
        return Vec::new();
    }
    std::iter::once(top.to_hex())
        .chain(
            nested
                .iter()
                .map(|(p, bits)| format!("{p}-{}", bits.to_hex())),
        )
        .collect()
}

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
        Some(ADDRESS.map(String::from).to_vec())
    }

    /// Schema A of reference §4.4: Account, whose two addresses are compound.
    fn schema_a() -> FieldLayout {
        let names = "ChangeEventHeader Name Type ParentId BillingAddress ShippingAddress Phone Fax \
            AccountNumber Website Sic Industry AnnualRevenue NumberOfEmployees Ownership \
            TickerSymbol Description Rating Site OwnerId CreatedDate CreatedById LastModifiedDate \
            LastModifiedById Jigsaw JigsawCompanyId CleanStatus AccountSource DunsNumber \
            Tradestyle NaicsCode NaicsDesc YearStarted SicDesc DandbCompanyId";
        let mut l = FieldLayout::new();
        for n in names.split_whitespace() {
            l.push(n, n.ends_with("Address").then(address).flatten());
        }
        assert_eq!(l.len(), 35);
        l
    }

    /// Schema D of reference §4.4, which makes the documentation's example resolvable.
    fn schema_d() -> FieldLayout {
        let small = || {
            Some(
                ["Street", "City", "State", "PostalCode", "Country"]
                    .map(String::from)
                    .to_vec(),
            )
        };
        let mut l = FieldLayout::new();
        l.push("ChangeEventHeader", Some(Vec::new()));
        for i in 1..=31 {
            match i {
                4 => l.push("AddrA", small()),
                7 => l.push("AddrB", small()),
                _ => l.push(format!("F{i}"), None),
            }
        }
        l
    }

    /// The Order positions of reference §5.2 that vector V15 uses.
    fn schema_order() -> FieldLayout {
        let mut l = FieldLayout::new();
        for i in 0..31 {
            match i {
                9 => l.push("Status", None),
                14 | 15 => l.push(format!("Address{i}"), address()),
                29 => l.push("LastModifiedDate", None),
                _ => l.push(format!("F{i}"), None),
            }
        }
        l
    }

    #[test]
    fn reference_vectors_encode_as_salesforce_writes_them() {
        let a = schema_a();
        // V1, V2, V3, V4, V6, V12.
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
        assert_eq!(encode(&a, ["Name"]), ["0x02"]);
        assert_eq!(encode(&a, ["NumberOfEmployees"]), ["0x2000"]);
        assert_eq!(
            encode(&a, ["LastModifiedById", "LastModifiedDate"]),
            ["0xC00000"]
        );
        assert_eq!(
            encode(
                &a,
                [
                    "LastModifiedDate",
                    "ShippingAddress.Street",
                    "BillingAddress.City",
                    "BillingAddress.State"
                ]
            ),
            ["0x400000", "4-0x06", "5-0x01"]
        );
        assert_eq!(encode(&a, ["DandbCompanyId"]), ["0x0400000000"]);
        // V5: every nested field of the billing address.
        let all: Vec<String> = ADDRESS
            .iter()
            .map(|c| format!("BillingAddress.{c}"))
            .collect();
        let mut v5 = vec!["LastModifiedDate"];
        v5.extend(all.iter().map(String::as_str));
        assert_eq!(encode(&a, v5), ["0x400000", "4-0x07FF"]);
        // V8 in upper case, and V9, the documentation's example.
        assert_eq!(
            encode(&a, ["ShippingAddress", "Phone", "Fax", "LastModifiedDate"]),
            ["0x4000E0"]
        );
        assert_eq!(
            encode(
                &schema_d(),
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
            ),
            ["0x650004E0", "4-0x10", "7-0x06"]
        );
        // V15.
        assert_eq!(
            encode(
                &schema_order(),
                ["Status", "LastModifiedDate", "Address14.City"]
            ),
            ["0x20000200", "14-0x02"]
        );
    }

    #[test]
    fn digits_are_even_and_the_top_level_element_comes_first() {
        let a = schema_a();
        // V13's field: one significant digit is written as two.
        assert_eq!(encode(&a, ["AccountNumber"]), ["0x0100"]);
        // V7's field: only a nested field changed, yet the top-level element leads.
        assert_eq!(encode(&a, ["BillingAddress.City"]), ["0x00", "4-0x02"]);
        assert!(encode(&a, []).is_empty());
    }

    #[test]
    fn unknown_paths_are_left_out_and_repeats_count_once() {
        let a = schema_a();
        assert!(
            encode(
                &a,
                ["Nope", "Phone.City", "BillingAddress.Nope", "Nope.City"]
            )
            .is_empty()
        );
        assert_eq!(encode(&a, ["Name", "Name", "Nope"]), ["0x02"]);
    }
}
