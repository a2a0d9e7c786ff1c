//! Allocating the manager's large arrays without aborting, and knowing when not to try.
//!
//! Rust's infallible allocations abort the process when the system refuses them, which from
//! Python is a dead interpreter. Every array sized by the tier is allocated here instead, with
//! `try_reserve`, and a refusal comes back as a value. Linux may also grant far more than it
//! can back (overcommit) and kill the process later, on first touch; so the manager first
//! compares what it would need against [`physical_memory_bytes`].

use hashbrown::HashTable;

use crate::hugepages;

/// An allocation the system refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AllocFailed {
    /// What the memory was for, for the message.
    pub(crate) what: &'static str,
    /// Bytes asked for.
    pub(crate) bytes: u64,
}

/// Bytes taken by `n` values of `T`.
pub(crate) fn array_bytes<T>(n: usize) -> u64 {
    (n as u64).saturating_mul(std::mem::size_of::<T>() as u64)
}

/// `n` copies of `value`, the buffer advised into huge pages before it is first written.
pub(crate) fn try_filled_vec<T: Clone>(
    n: usize,
    value: T,
    what: &'static str,
) -> Result<Vec<T>, AllocFailed> {
    let mut v = try_empty_vec(n, what)?;
    hugepages::advise_vec(&v);
    v.resize(n, value);
    Ok(v)
}

/// An empty vector with room for `n` values, so that it never reallocates while it holds at
/// most `n` (an empty buffer is not written, so the system backs it only as it fills).
pub(crate) fn try_empty_vec<T>(n: usize, what: &'static str) -> Result<Vec<T>, AllocFailed> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| AllocFailed {
        what,
        bytes: array_bytes::<T>(n),
    })?;
    Ok(v)
}

/// Buckets hashbrown allocates for a table with room for `capacity` entries: at most 7/8
/// full, a power of two (a test checks this against `HashTable::num_buckets`).
pub(crate) fn table_buckets(capacity: usize) -> u64 {
    match capacity {
        0 => 0,
        1..=3 => 4,
        4..=7 => 8,
        8..=14 => 16,
        _ => ((capacity as u64).saturating_mul(8) / 7)
            .checked_next_power_of_two()
            .unwrap_or(u64::MAX),
    }
}

/// Control bytes beyond one per bucket (a probe group's width: 16 with SSE2, 8 elsewhere).
const TABLE_CTRL_TAIL: u64 = 16;

/// Bytes a table with room for `capacity` entries of `T` takes: a slot and a control byte a
/// bucket.
pub(crate) fn table_bytes<T>(capacity: usize) -> u64 {
    let per_bucket = std::mem::size_of::<T>() as u64 + 1;
    table_buckets(capacity)
        .saturating_mul(per_bucket)
        .saturating_add(TABLE_CTRL_TAIL)
}

/// An empty table with room for `capacity` entries.
pub(crate) fn try_table<T>(
    capacity: usize,
    what: &'static str,
) -> Result<HashTable<T>, AllocFailed> {
    let mut table = HashTable::new();
    // The hasher is never called: an empty table has nothing to move.
    table
        .try_reserve(capacity, |_: &T| 0)
        .map_err(|_| AllocFailed {
            what,
            bytes: table_bytes::<T>(capacity),
        })?;
    Ok(table)
}

/// Total physical memory in bytes, or `None` where the system does not say.
#[must_use]
pub fn physical_memory_bytes() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: sysconf only reads system constants; it has no preconditions.
        let (pages, page_size) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let pages = u64::try_from(pages).ok().filter(|&p| p > 0)?;
        let page_size = u64::try_from(page_size).ok().filter(|&p| p > 0)?;
        pages.checked_mul(page_size)
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// `bytes` for a message: GiB with two decimals, then the exact count.
pub(crate) fn describe_bytes(bytes: u64) -> String {
    format!(
        "{:.2} GiB ({bytes} bytes)",
        bytes as f64 / f64::from(1u32 << 30)
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_impossible_array_is_refused_not_aborted() {
        let err = try_empty_vec::<u64>(usize::MAX / 4, "test array").unwrap_err();
        assert_eq!(err.what, "test array");
        assert_eq!(err.bytes, u64::MAX);
        let v = try_filled_vec(3, 7u32, "small").unwrap();
        assert_eq!((v, array_bytes::<u32>(3)), (vec![7, 7, 7], 12));
    }

    #[test]
    fn table_estimate_matches_hashbrown() {
        // Checked against the tables as built, for the entry sizes used (the index's 64-byte
        // slots and 4-byte ids), so a hashbrown upgrade that sizes differently fails here.
        for capacity in (1..200).chain([1000, 4095, 4096, 100_000, 1 << 20]) {
            let big: HashTable<[u64; 8]> = try_table(capacity, "t").unwrap();
            let small: HashTable<u32> = try_table(capacity, "t").unwrap();
            assert_eq!(
                table_buckets(capacity),
                big.num_buckets() as u64,
                "{capacity}"
            );
            assert_eq!(
                table_buckets(capacity),
                small.num_buckets() as u64,
                "{capacity}"
            );
            assert!(big.capacity() >= capacity);
        }
        assert_eq!(table_bytes::<u32>(100), 128 * 5 + 16);
        let err = try_table::<u64>(usize::MAX / 2, "huge").unwrap_err();
        assert_eq!((err.what, err.bytes), ("huge", u64::MAX));
    }

    #[test]
    fn bytes_read_in_gib_and_exactly() {
        assert_eq!(describe_bytes(3 << 29), "1.50 GiB (1610612736 bytes)");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn linux_reports_physical_memory() {
        assert!(physical_memory_bytes().unwrap() > 1 << 20);
    }
}
