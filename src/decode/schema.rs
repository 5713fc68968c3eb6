//! Facts derived once from a parsed writer schema: the field layout its bitmaps index.
//!
//! Salesforce schemas define a named record (such as `Address`) at its first use and refer to it
//! by name afterwards, so the layout resolves references against every record the schema
//! defines.

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::schema::RecordSchema;

use super::bitmap::FieldLayout;

/// Collects every named record a schema defines, by short name and full name.
fn named_records<'a>(schema: &'a Schema, out: &mut HashMap<String, &'a RecordSchema>) {
    match schema {
        Schema::Record(r) => {
            out.insert(r.name.name().to_owned(), r);
            out.insert(r.name.fullname(None), r);
            for f in &r.fields {
                named_records(&f.schema, out);
            }
        }
        Schema::Union(u) => u.variants().iter().for_each(|v| named_records(v, out)),
        Schema::Array(a) => named_records(&a.items, out),
        Schema::Map(m) => named_records(&m.types, out),
        _ => {}
    }
}

/// The record a field holds, unwrapping unions (`["null", R]`, `["null", "string", R]`) and
/// named references.
fn record_of<'a>(
    schema: &'a Schema,
    named: &HashMap<String, &'a RecordSchema>,
) -> Option<&'a RecordSchema> {
    match schema {
        Schema::Record(r) => Some(r),
        Schema::Ref { name } => named
            .get(&name.fullname(None))
            .or_else(|| named.get(name.name()))
            .copied(),
        Schema::Union(u) => u.variants().iter().find_map(|v| record_of(v, named)),
        _ => None,
    }
}

/// The bitmap layout of a top-level record schema, or `None` if the schema is not a record.
pub fn field_layout(schema: &Schema) -> Option<FieldLayout> {
    let Schema::Record(top) = schema else {
        return None;
    };
    let mut named = HashMap::new();
    named_records(schema, &mut named);
    let mut layout = FieldLayout::new();
    for field in &top.fields {
        let children = record_of(&field.schema, &named)
            .map(|r| r.fields.iter().map(|f| f.name.clone()).collect());
        layout.push(field.name.clone(), children);
    }
    Some(layout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_to_named_records_resolve() {
        let json = r#"{"type":"record","name":"E","namespace":"com.sforce.eventbus","fields":[
            {"name":"H","type":{"type":"record","name":"H","fields":[{"name":"x","type":"int"}]}},
            {"name":"A","type":["null",{"type":"record","name":"Address","fields":[{"name":"Street","type":["null","string"]},{"name":"City","type":["null","string"]}]}]},
            {"name":"B","type":["null","Address"]},
            {"name":"N","type":["null","string"]}]}"#;
        let schema = Schema::parse_str(json).unwrap();
        let l = field_layout(&schema).unwrap();
        assert_eq!(l.len(), 4);
        assert_eq!(l.children(1).unwrap(), ["Street", "City"]);
        assert_eq!(l.children(2).unwrap(), ["Street", "City"]);
        assert_eq!(l.children(3), None);
    }
}
