//! Salesforce record ids: validation, the 15 → 18 character case-safe form, and generation.
//!
//! A Salesforce id is 15 case-sensitive alphanumeric characters; the 18-character form appends a
//! three-character checksum that encodes which of the first 15 characters are upper case, so the
//! id survives case-insensitive systems. Ids are compared in their 18-character form everywhere in
//! sfcdc; a 15-character id from a user is normalised with [`to_18`].

use std::fmt;

use compact_str::CompactString;

/// Characters of the checksum suffix, indexed by a 5-bit upper-case mask.
const SUFFIX_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
/// Base-62 digits used for the counter part of generated ids.
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a string is not a Salesforce id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Ids are 15 or 18 characters long.
    #[error("a Salesforce id has 15 or 18 characters, this one has {0}")]
    Length(usize),
    /// Ids are ASCII letters and digits only.
    #[error("a Salesforce id contains only letters and digits")]
    Charset,
    /// The last three characters of an 18-character id do not match its first fifteen.
    #[error("the checksum of this 18-character id does not match its first 15 characters")]
    Checksum,
}

/// A validated Salesforce id, always held in its 18-character form, inline (an id is copied
/// from events into rules, jobs, cache keys and invalidations: no allocation for any of them).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SfId(CompactString);

impl SfId {
    /// Parses a 15- or 18-character id; the checksum of an 18-character id is verified.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let suffix = checked_suffix(s)?;
        let mut id = [0u8; 18];
        id[..15].copy_from_slice(&s.as_bytes()[..15]);
        id[15..].copy_from_slice(&suffix);
        let id = std::str::from_utf8(&id).expect("ids are ASCII letters and digits");
        Ok(SfId(CompactString::new(id)))
    }

    /// The 18-character form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The case-sensitive 15-character form.
    pub fn short(&self) -> &str {
        &self.0[..15]
    }

    /// The three-character key prefix that names the object type (`801` is Order).
    pub fn key_prefix(&self) -> &str {
        &self.0[..3]
    }
}

impl fmt::Display for SfId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SfId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SfId({})", self.0)
    }
}

impl TryFrom<String> for SfId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        SfId::parse(&s)
    }
}

impl From<SfId> for String {
    fn from(id: SfId) -> String {
        id.0.into_string()
    }
}

impl std::str::FromStr for SfId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        SfId::parse(s)
    }
}

/// Returns the checksum suffix for a 15-character id.
fn suffix(id15: &[u8]) -> [u8; 3] {
    let mut out = [0u8; 3];
    for (chunk_index, chunk) in id15.chunks_exact(5).enumerate() {
        let mut mask = 0usize;
        for (i, c) in chunk.iter().enumerate() {
            mask |= usize::from(c.is_ascii_uppercase()) << i;
        }
        out[chunk_index] = SUFFIX_ALPHABET[mask];
    }
    out
}

/// Normalises a 15- or 18-character id to its 18-character form.
pub fn to_18(s: &str) -> Result<String, IdError> {
    SfId::parse(s).map(String::from)
}

/// The checksum suffix of a well-formed 15- or 18-character id (verified against an
/// 18-character id's own).
fn checked_suffix(s: &str) -> Result<[u8; 3], IdError> {
    let bytes = s.as_bytes();
    if bytes.len() != 15 && bytes.len() != 18 {
        return Err(IdError::Length(s.chars().count()));
    }
    if !bytes.iter().all(u8::is_ascii_alphanumeric) {
        return Err(IdError::Charset);
    }
    let sfx = suffix(&bytes[..15]);
    if bytes.len() == 18 {
        // The suffix is case-insensitive by design.
        if !bytes[15..].eq_ignore_ascii_case(&sfx) {
            return Err(IdError::Checksum);
        }
    }
    Ok(sfx)
}

/// Builds the id numbered `n` for a key prefix (3 chars) and an instance tag (2 chars).
///
/// The layout follows real ids: prefix, instance, a reserved `0`, then a base-62 counter.
pub fn generate(prefix: &str, instance: &str, n: u64) -> SfId {
    debug_assert_eq!(prefix.len(), 3);
    debug_assert_eq!(instance.len(), 2);
    let mut digits = [b'0'; 9];
    let mut rest = n;
    for d in digits.iter_mut().rev() {
        *d = BASE62[(rest % 62) as usize];
        rest /= 62;
    }
    let mut id15 = String::with_capacity(15);
    id15.push_str(prefix);
    id15.push_str(instance);
    id15.push('0');
    id15.push_str(std::str::from_utf8(&digits).expect("base62 alphabet is ASCII"));
    SfId::parse(&id15).expect("generated ids are well formed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_ids_get_their_published_suffix() {
        // Pairs seen in real orgs and Salesforce documentation.
        assert_eq!(to_18("0055J000001D89M").unwrap(), "0055J000001D89MQAS");
        assert_eq!(to_18("a21AU000000FSC5").unwrap(), "a21AU000000FSC5YAO");
    }

    #[test]
    fn eighteen_char_ids_are_checked() {
        assert!(SfId::parse("0055J000001D89MQAS").is_ok());
        assert!(SfId::parse("0055j000001d89mqas").is_err());
        assert_eq!(SfId::parse("0055J000001D89MQAA"), Err(IdError::Checksum));
        // The suffix itself may be lower case.
        assert!(SfId::parse("0055J000001D89Mqas").is_ok());
    }

    #[test]
    fn bad_shapes_are_rejected() {
        assert_eq!(SfId::parse("801"), Err(IdError::Length(3)));
        assert_eq!(SfId::parse("801'; DROP TABLE"), Err(IdError::Length(16)));
        assert_eq!(SfId::parse("801Hs0000000-01"), Err(IdError::Charset));
    }

    #[test]
    fn generated_ids_round_trip_and_are_distinct() {
        let a = generate("801", "Hs", 1);
        let b = generate("801", "Hs", 62);
        assert_eq!(a.as_str().len(), 18);
        assert_eq!(a.key_prefix(), "801");
        assert_ne!(a, b);
        assert_eq!(SfId::parse(a.short()).unwrap(), a);
    }
}
