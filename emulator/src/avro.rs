//! A minimal Avro binary writer for the emulator's own event schemas.
//!
//! The emulator encodes every change event it emits, including millions for bulk benchmarks, so
//! it writes the few Avro primitives Salesforce schemas use (long, int, string, double, boolean,
//! enum index, array of strings, `["null", T]` unions) straight into a byte buffer. The encoding is
//! the plain Avro binary encoding of one datum (no container header), as the Pub/Sub API sends it.
//! Tests decode every shape with apache-avro against the served schema JSON, so this writer is
//! checked by an independent implementation.

/// Appends a zig-zag varint `long` (also used for `int`, enum indexes, lengths and counts).
pub fn long(buf: &mut Vec<u8>, v: i64) {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    while n >= 0x80 {
        buf.push((n as u8) | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

/// Appends a length-prefixed UTF-8 string.
pub fn string(buf: &mut Vec<u8>, s: &str) {
    long(buf, s.len() as i64);
    buf.extend_from_slice(s.as_bytes());
}

/// Appends an IEEE-754 double, little-endian.
pub fn double(buf: &mut Vec<u8>, v: f64) {
    buf.extend_from_slice(&v.to_le_bytes());
}

/// Appends a boolean byte.
pub fn boolean(buf: &mut Vec<u8>, v: bool) {
    buf.push(u8::from(v));
}

/// Appends an array of strings as one block followed by the terminating zero count.
pub fn string_array<S: AsRef<str>>(buf: &mut Vec<u8>, items: &[S]) {
    if !items.is_empty() {
        long(buf, items.len() as i64);
        for s in items {
            string(buf, s.as_ref());
        }
    }
    long(buf, 0);
}

/// Appends the branch index of a union (`0` is `null` in every Salesforce union).
pub fn union_branch(buf: &mut Vec<u8>, index: i64) {
    long(buf, index);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zigzag_matches_the_avro_specification() {
        let cases: [(i64, &[u8]); 6] = [
            (0, &[0x00]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
            (1_709_303_151_000, &[0xb0, 0xe6, 0xc1, 0xa6, 0xbf, 0x63]),
        ];
        for (v, bytes) in cases {
            let mut buf = Vec::new();
            long(&mut buf, v);
            assert_eq!(buf, bytes, "{v}");
        }
    }

    #[test]
    fn arrays_end_with_a_zero_block() {
        let mut buf = Vec::new();
        string_array(&mut buf, &["0x2080"]);
        assert_eq!(buf, [0x02, 0x0c, b'0', b'x', b'2', b'0', b'8', b'0', 0x00]);
        let mut empty = Vec::new();
        string_array::<&str>(&mut empty, &[]);
        assert_eq!(empty, [0x00]);
    }
}
