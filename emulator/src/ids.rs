//! Salesforce record ids as the emulated org issues and checks them.
//!
//! An id is 15 case-sensitive letters and digits: a 3-character key prefix naming the object
//! type, a 2-character instance tag, a reserved `0` and a base-62 counter. The 18-character form
//! that every API returns adds a 3-character suffix so the id survives case-insensitive systems:
//! each suffix character encodes, for one block of five characters, which of them are upper case
//! (bit *i* for the *i*-th character of the block), as a letter `A`–`Z` for 0–25 and a digit
//! `0`–`5` for 26–31. The emulator holds every id in its 18-character form.
//!
//! This is the emulator's own implementation of the scheme, so a mistake in the subscriber's id
//! handling shows up against it instead of cancelling out.

use std::fmt;

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

/// A valid Salesforce id in its 18-character form.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SfId(String);

impl SfId {
    /// Parses a 15- or 18-character id, checking the suffix of an 18-character one.
    pub fn parse(s: &str) -> Result<SfId, IdError> {
        to_18(s).map(SfId)
    }

    /// The 18-character form.
    pub fn as_str(&self) -> &str {
        &self.0
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
    fn try_from(s: String) -> Result<SfId, IdError> {
        SfId::parse(&s)
    }
}

impl From<SfId> for String {
    fn from(id: SfId) -> String {
        id.0
    }
}

/// The suffix character for one block of five characters.
fn block_checksum(block: &str) -> char {
    let mask = block
        .char_indices()
        .filter(|(_, c)| c.is_ascii_uppercase())
        .map(|(i, _)| 1u8 << i)
        .sum::<u8>();
    if mask < 26 {
        char::from(b'A' + mask)
    } else {
        char::from(b'0' + (mask - 26))
    }
}

/// The 18-character form of a 15- or 18-character id.
pub fn to_18(s: &str) -> Result<String, IdError> {
    // The length is checked in bytes (so a multi-byte character fails the character check
    // below) but reported in characters.
    if s.len() != 15 && s.len() != 18 {
        return Err(IdError::Length(s.chars().count()));
    }
    if !s.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(IdError::Charset);
    }
    let (id15, given) = s.split_at(15);
    let suffix: String = [&id15[0..5], &id15[5..10], &id15[10..15]]
        .into_iter()
        .map(block_checksum)
        .collect();
    // The suffix is what a case-insensitive system may have lower-cased, so it compares
    // without case.
    if !given.is_empty() && !given.eq_ignore_ascii_case(&suffix) {
        return Err(IdError::Checksum);
    }
    Ok(format!("{id15}{suffix}"))
}

/// The id numbered `n` for a 3-character key prefix and a 2-character instance tag: the prefix,
/// the tag, a reserved `0`, then `n` as nine base-62 digits (`0-9`, `A-Z`, `a-z`).
pub fn generate(prefix: &str, instance: &str, n: u64) -> SfId {
    debug_assert_eq!((prefix.len(), instance.len()), (3, 2));
    let digit = |d: u64| -> char {
        let d = d as u8;
        char::from(match d {
            0..=9 => b'0' + d,
            10..=35 => b'A' + (d - 10),
            _ => b'a' + (d - 36),
        })
    };
    let mut counter = [0u64; 9];
    let mut rest = n;
    for slot in counter.iter_mut().rev() {
        *slot = rest % 62;
        rest /= 62;
    }
    let id15: String = format!("{prefix}{instance}0")
        .chars()
        .chain(counter.iter().map(|d| digit(*d)))
        .collect();
    SfId::parse(&id15).expect("a generated id is well formed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_ids_get_their_published_suffix() {
        // 15/18-character pairs from Salesforce documentation and real orgs.
        assert_eq!(to_18("0055J000001D89M").unwrap(), "0055J000001D89MQAS");
        assert_eq!(to_18("a21AU000000FSC5").unwrap(), "a21AU000000FSC5YAO");
        // Every block all upper case: mask 31, the last suffix character.
        assert_eq!(to_18("ABCDEFGHIJKLMNO").unwrap(), "ABCDEFGHIJKLMNO555");
        assert_eq!(to_18("abcdefghijklmno").unwrap(), "abcdefghijklmnoAAA");
    }

    #[test]
    fn the_suffix_is_checked_without_case() {
        assert!(SfId::parse("0055J000001D89MQAS").is_ok());
        assert!(SfId::parse("0055J000001D89Mqas").is_ok());
        assert_eq!(SfId::parse("0055J000001D89MQAA"), Err(IdError::Checksum));
        assert!(SfId::parse("0055j000001d89mqas").is_err());
    }

    #[test]
    fn malformed_ids_are_refused() {
        assert_eq!(SfId::parse("801"), Err(IdError::Length(3)));
        assert_eq!(SfId::parse("801Hs0000000-01"), Err(IdError::Charset));
        assert_eq!(SfId::parse("801Hs0000000é1"), Err(IdError::Charset));
    }

    #[test]
    fn generated_ids_follow_the_real_layout() {
        assert_eq!(generate("801", "Hs", 0).as_str(), "801Hs0000000000IAA");
        assert_eq!(generate("801", "Hs", 61).as_str(), "801Hs000000000zIAA");
        // 62 is "10" in base 62; 100_001 is "Q0v" (26·62² + 0·62 + 57).
        assert_eq!(&generate("801", "Hs", 62).as_str()[..15], "801Hs0000000010");
        assert_eq!(
            &generate("801", "Hs", 100_001).as_str()[..15],
            "801Hs0000000Q0v"
        );
        let id = generate("00D", "Hs", 1_042);
        assert_eq!(SfId::parse(&id.as_str()[..15]).unwrap(), id);
    }
}
