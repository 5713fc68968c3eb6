//! The emulator's wall clock: epoch milliseconds, the unit of every time in its events and
//! records (`commitTimestamp`, `CreatedDate`, audit fields).

/// Milliseconds since the Unix epoch (0 if the system clock is set before it).
pub fn now_ms() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_clock_reads_epoch_milliseconds() {
        // After 2020-01-01 and before 2100-01-01.
        let now = super::now_ms();
        assert!(
            (1_577_836_800_000..4_102_444_800_000).contains(&now),
            "{now}"
        );
    }
}
