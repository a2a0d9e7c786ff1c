//! The snapshot as a tree of plain values (the `to_dict()` layout, format version 2, in
//! docs/ARCHITECTURE.md) and its validation, which also reads version-1 trees. The binding only converts between this tree and
//! Python objects, so every check lives here and is tested without Python.

use crate::direction::Direction;
use crate::error::{KvoffError, Result};
use crate::stats::histogram::{DURATION_BOUNDS_SECONDS, SIZE_BOUNDS_BYTES, THROUGHPUT_BOUNDS_BPS};
use crate::stats::snapshot::{
    DirectionStats, HitStats, LookupStats, ManagerStats, RemoteErrorKind, RemoteTierStats,
    StatsSnapshot, FORMAT_VERSION, FORMAT_VERSION_1,
};

/// A plain value as it crosses a process boundary.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An integer (never a bool); wide enough to carry negative or oversized input to the check.
    Int(i128),
    /// An integer beyond `i128` (its sign and bit length), kept apart so a message can say what
    /// it was without printing thousands of digits.
    HugeInt {
        negative: bool,
        bits: u64,
    },
    Float(f64),
    List(Vec<Value>),
    Map(Vec<(String, Value)>),
    /// Anything else; the string names its type for the error message.
    Other(String),
}

const TOP_KEYS_V1: [&str; 5] = ["version", "buckets", "transfers", "lookups", "manager"];
const TOP_KEYS: [&str; 7] = [
    "version",
    "buckets",
    "transfers",
    "lookups",
    "manager",
    "hits",
    "remote",
];
const TIER_KEYS: [&str; 2] = ["cpu", "remote"];
const HIT_KEYS: [&str; 2] = ["blocks", "tokens"];
const REMOTE_KEYS: [&str; 4] = ["lookups", "errors", "writes_dropped", "write_queue_blocks"];
const REMOTE_LOOKUP_KEYS: [&str; 2] = ["blocks_queried", "blocks_hit"];
const ERROR_KEYS: [&str; 8] = RemoteErrorKind::ALL_NAMES;
const BUCKET_KEYS: [&str; 3] = [
    "size_bytes",
    "duration_seconds",
    "throughput_bytes_per_second",
];
const DIRECTION_KEYS: [&str; 10] = [
    "ops",
    "failed_ops",
    "blocks",
    "bytes",
    "failed_bytes",
    "time_ns",
    "size_counts",
    "duration_counts",
    "throughput_counts",
    "throughput_sum",
];
const LOOKUP_KEYS: [&str; 4] = [
    "blocks_queried",
    "blocks_hit",
    "tokens_queried",
    "tokens_hit",
];
const MANAGER_KEYS: [&str; 6] = [
    "blocks_stored",
    "blocks_evicted",
    "allocation_failures",
    "capacity_blocks",
    "resident_blocks",
    "pinned_blocks",
];

fn int(v: u64) -> Value {
    Value::Int(i128::from(v))
}

fn ints(vs: &[u64]) -> Value {
    Value::List(vs.iter().map(|&v| int(v)).collect())
}

fn map(entries: &[&str], values: Vec<Value>) -> Value {
    Value::Map(
        entries
            .iter()
            .map(|k| (*k).to_owned())
            .zip(values)
            .collect(),
    )
}

fn bucket_layout() -> Value {
    map(
        &BUCKET_KEYS,
        vec![
            ints(&SIZE_BOUNDS_BYTES),
            Value::List(
                DURATION_BOUNDS_SECONDS
                    .iter()
                    .map(|&s| Value::Float(s))
                    .collect(),
            ),
            // Written as floats (1e8 ...), as the bounds are listed in the format.
            Value::List(
                THROUGHPUT_BOUNDS_BPS
                    .iter()
                    .map(|&b| Value::Float(b as f64))
                    .collect(),
            ),
        ],
    )
}

fn direction_value(d: &DirectionStats) -> Value {
    map(
        &DIRECTION_KEYS,
        vec![
            int(d.ops),
            int(d.failed_ops),
            int(d.blocks),
            int(d.bytes),
            int(d.failed_bytes),
            int(d.time_ns),
            ints(&d.size_counts),
            ints(&d.duration_counts),
            ints(&d.throughput_counts),
            int(d.throughput_sum),
        ],
    )
}

fn invalid(path: &str, why: impl std::fmt::Display) -> KvoffError {
    KvoffError::InvalidArgument(format!("invalid stats dict: {path}: {why}"))
}

fn type_name(v: &Value) -> &str {
    match v {
        Value::Int(_) | Value::HugeInt { .. } => "int",
        Value::Float(_) => "float",
        Value::List(_) => "list",
        Value::Map(_) => "dict",
        Value::Other(t) => t,
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// The values of exactly `keys` in `v`, in that order; a missing, unknown or repeated key is an
/// error naming it.
fn fields<'a, const N: usize>(v: &'a Value, path: &str, keys: [&str; N]) -> Result<[&'a Value; N]> {
    let shown = if path.is_empty() { "stats dict" } else { path };
    let Value::Map(entries) = v else {
        return Err(invalid(
            shown,
            format_args!("expected dict, got {}", type_name(v)),
        ));
    };
    let mut found: [Option<&Value>; N] = [None; N];
    for (k, val) in entries {
        let slot = keys
            .iter()
            .position(|want| want == k)
            .ok_or_else(|| invalid(shown, format_args!("unknown key {k:?} (expected {keys:?})")))?;
        if found[slot].replace(val).is_some() {
            return Err(invalid(shown, format_args!("key {k:?} given twice")));
        }
    }
    let mut out: [&Value; N] = [v; N];
    for (i, (slot, key)) in found.iter().zip(keys).enumerate() {
        out[i] = slot.ok_or_else(|| invalid(&join(path, key), "missing key"))?;
    }
    Ok(out)
}

fn count(v: &Value, path: &str) -> Result<u64> {
    match v {
        Value::Int(i) if *i < 0 => Err(invalid(path, format_args!("negative count {i}"))),
        Value::Int(i) => {
            u64::try_from(*i).map_err(|_| invalid(path, format_args!("count {i} exceeds 2^64 - 1")))
        }
        Value::HugeInt {
            negative: true,
            bits,
        } => Err(invalid(
            path,
            format_args!("negative count (an int of {bits} bits)"),
        )),
        Value::HugeInt { bits, .. } => Err(invalid(
            path,
            format_args!("count (an int of {bits} bits) exceeds 2^64 - 1"),
        )),
        other => Err(invalid(
            path,
            format_args!("expected int, got {}", type_name(other)),
        )),
    }
}

fn counts<const N: usize>(v: &Value, path: &str) -> Result<[u64; N]> {
    let Value::List(items) = v else {
        return Err(invalid(
            path,
            format_args!("expected list of {N} ints, got {}", type_name(v)),
        ));
    };
    if items.len() != N {
        return Err(invalid(
            path,
            format_args!(
                "expected {N} bucket counts (bounds + 1 for +Inf), got {}",
                items.len()
            ),
        ));
    }
    let mut out = [0u64; N];
    for (i, (slot, item)) in out.iter_mut().zip(items).enumerate() {
        *slot = count(item, &format!("{path}[{i}]"))?;
    }
    Ok(out)
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

/// The bounds must be this build's, value for value (ints and floats that are equal both pass).
fn check_bounds(v: &Value, path: &str, expected: &Value) -> Result<()> {
    let (Value::List(got), Value::List(want)) = (v, expected) else {
        return Err(invalid(
            path,
            format_args!("expected list of bounds, got {}", type_name(v)),
        ));
    };
    let same = got.len() == want.len()
        && got
            .iter()
            .zip(want)
            .all(|(g, w)| number(g).is_some() && number(g) == number(w));
    if same {
        Ok(())
    } else {
        let show: Vec<String> = want
            .iter()
            .filter_map(number)
            .map(|n| format!("{n:e}"))
            .collect();
        Err(invalid(
            path,
            format_args!(
                "bucket layout differs from this build's [{}]",
                show.join(", ")
            ),
        ))
    }
}

fn direction_from(v: &Value, path: &str) -> Result<DirectionStats> {
    let f = fields(v, path, DIRECTION_KEYS)?;
    let p = |k: &str| join(path, k);
    Ok(DirectionStats {
        ops: count(f[0], &p("ops"))?,
        failed_ops: count(f[1], &p("failed_ops"))?,
        blocks: count(f[2], &p("blocks"))?,
        bytes: count(f[3], &p("bytes"))?,
        failed_bytes: count(f[4], &p("failed_bytes"))?,
        time_ns: count(f[5], &p("time_ns"))?,
        size_counts: counts(f[6], &p("size_counts"))?,
        duration_counts: counts(f[7], &p("duration_counts"))?,
        throughput_counts: counts(f[8], &p("throughput_counts"))?,
        throughput_sum: count(f[9], &p("throughput_sum"))?,
    })
}

impl StatsSnapshot {
    /// The `to_dict()` tree.
    #[must_use]
    pub fn to_value(&self) -> Value {
        let l = &self.lookups;
        let m = &self.manager;
        let h = &self.hits;
        let r = &self.remote;
        map(
            &TOP_KEYS,
            vec![
                int(u64::from(FORMAT_VERSION)),
                bucket_layout(),
                Value::Map(
                    Direction::ALL
                        .iter()
                        .map(|d| (d.as_str().to_owned(), direction_value(self.direction(*d))))
                        .collect(),
                ),
                map(
                    &LOOKUP_KEYS,
                    vec![
                        int(l.blocks_queried),
                        int(l.blocks_hit),
                        int(l.tokens_queried),
                        int(l.tokens_hit),
                    ],
                ),
                map(
                    &MANAGER_KEYS,
                    [
                        m.blocks_stored,
                        m.blocks_evicted,
                        m.allocation_failures,
                        m.capacity_blocks,
                        m.resident_blocks,
                        m.pinned_blocks,
                    ]
                    .into_iter()
                    .map(int)
                    .collect(),
                ),
                map(
                    &TIER_KEYS,
                    vec![
                        map(&HIT_KEYS, vec![int(h.cpu_blocks), int(h.cpu_tokens)]),
                        map(&HIT_KEYS, vec![int(h.remote_blocks), int(h.remote_tokens)]),
                    ],
                ),
                map(
                    &REMOTE_KEYS,
                    vec![
                        map(
                            &REMOTE_LOOKUP_KEYS,
                            vec![int(r.lookup_blocks_queried), int(r.lookup_blocks_hit)],
                        ),
                        map(&ERROR_KEYS, r.errors.iter().map(|&e| int(e)).collect()),
                        int(r.writes_dropped),
                        int(r.write_queue_blocks),
                    ],
                ),
            ],
        )
    }

    /// Parses and validates a `to_dict()` tree of version 2, or of version 1 (whose remote
    /// directions, hits and remote counters are zero): exact keys for its version, bucket
    /// layout, and every count an int in `0..=2^64-1`. Errors name the key path at fault.
    pub fn from_value(v: &Value) -> Result<Self> {
        // The version decides which keys are expected, so it is checked first.
        let version = match v {
            Value::Map(entries) => entries.iter().find(|(k, _)| k == "version").map(|e| &e.1),
            _ => None,
        };
        if version.map(check_version).transpose()? == Some(FORMAT_VERSION_1) {
            let [_, buckets, transfers, lookups, manager] = fields(v, "", TOP_KEYS_V1)?;
            check_buckets(buckets)?;
            let mut snap = StatsSnapshot::default();
            transfers_from(transfers, Direction::GPU, &mut snap)?;
            snap.lookups = lookups_from(lookups)?;
            snap.manager = manager_from(manager)?;
            return Ok(snap);
        }
        let [_, buckets, transfers, lookups, manager, hits, remote] = fields(v, "", TOP_KEYS)?;
        check_buckets(buckets)?;
        let mut snap = StatsSnapshot::default();
        transfers_from(transfers, Direction::ALL, &mut snap)?;
        snap.lookups = lookups_from(lookups)?;
        snap.manager = manager_from(manager)?;
        snap.hits = hits_from(hits)?;
        snap.remote = remote_from(remote)?;
        Ok(snap)
    }
}

/// Reads exactly `directions` from the `transfers` map into `snap`.
fn transfers_from<const N: usize>(
    v: &Value,
    directions: [Direction; N],
    snap: &mut StatsSnapshot,
) -> Result<()> {
    let values = fields(v, "transfers", directions.map(Direction::as_str))?;
    for (d, value) in directions.into_iter().zip(values) {
        snap.transfers[d.index()] = direction_from(value, &join("transfers", d.as_str()))?;
    }
    Ok(())
}

/// The version, 1 or 2; anything else is an error naming what this build reads.
fn check_version(v: &Value) -> Result<u32> {
    let unsupported = |shown: String| {
        invalid(
            "version",
            format_args!(
                "unsupported format version {shown} (this build reads {FORMAT_VERSION_1} and \
                 {FORMAT_VERSION})"
            ),
        )
    };
    match v {
        Value::Int(n) if *n == i128::from(FORMAT_VERSION) => Ok(FORMAT_VERSION),
        Value::Int(n) if *n == i128::from(FORMAT_VERSION_1) => Ok(FORMAT_VERSION_1),
        Value::Int(n) => Err(unsupported(n.to_string())),
        Value::HugeInt { bits, .. } => Err(unsupported(format!("(an int of {bits} bits)"))),
        other => Err(invalid(
            "version",
            format_args!("expected int, got {}", type_name(other)),
        )),
    }
}

fn check_buckets(buckets: &Value) -> Result<()> {
    let layout = bucket_layout();
    let want = fields(&layout, "buckets", BUCKET_KEYS)?;
    let got = fields(buckets, "buckets", BUCKET_KEYS)?;
    for ((g, w), key) in got.iter().zip(want).zip(BUCKET_KEYS) {
        check_bounds(g, &join("buckets", key), w)?;
    }
    Ok(())
}

/// The counts of exactly `keys` under `path`, in that order.
fn counts_of<const N: usize>(v: &Value, path: &str, keys: [&str; N]) -> Result<[u64; N]> {
    let f = fields(v, path, keys)?;
    let mut out = [0u64; N];
    for ((slot, value), key) in out.iter_mut().zip(f).zip(keys) {
        *slot = count(value, &join(path, key))?;
    }
    Ok(out)
}

fn lookups_from(v: &Value) -> Result<LookupStats> {
    let [blocks_queried, blocks_hit, tokens_queried, tokens_hit] =
        counts_of(v, "lookups", LOOKUP_KEYS)?;
    Ok(LookupStats {
        blocks_queried,
        blocks_hit,
        tokens_queried,
        tokens_hit,
    })
}

fn manager_from(v: &Value) -> Result<ManagerStats> {
    let [blocks_stored, blocks_evicted, allocation_failures, capacity_blocks, resident_blocks, pinned_blocks] =
        counts_of(v, "manager", MANAGER_KEYS)?;
    Ok(ManagerStats {
        blocks_stored,
        blocks_evicted,
        allocation_failures,
        capacity_blocks,
        resident_blocks,
        pinned_blocks,
    })
}

fn hits_from(v: &Value) -> Result<HitStats> {
    let [cpu, remote] = fields(v, "hits", TIER_KEYS)?;
    let [cpu_blocks, cpu_tokens] = counts_of(cpu, "hits.cpu", HIT_KEYS)?;
    let [remote_blocks, remote_tokens] = counts_of(remote, "hits.remote", HIT_KEYS)?;
    Ok(HitStats {
        cpu_blocks,
        cpu_tokens,
        remote_blocks,
        remote_tokens,
    })
}

fn remote_from(v: &Value) -> Result<RemoteTierStats> {
    let [lookups, errors, dropped, queue] = fields(v, "remote", REMOTE_KEYS)?;
    let [lookup_blocks_queried, lookup_blocks_hit] =
        counts_of(lookups, "remote.lookups", REMOTE_LOOKUP_KEYS)?;
    Ok(RemoteTierStats {
        lookup_blocks_queried,
        lookup_blocks_hit,
        errors: counts_of(errors, "remote.errors", ERROR_KEYS)?,
        writes_dropped: count(dropped, "remote.writes_dropped")?,
        write_queue_blocks: count(queue, "remote.write_queue_blocks")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StatsSnapshot {
        let mut s = StatsSnapshot::default();
        for (i, c) in s.counters_mut().enumerate() {
            *c = (i as u64 + 1) * 1_000_000_007;
        }
        s
    }

    /// Replaces the value at a dotted path (list indices as numbers) in a tree.
    fn edit(v: &mut Value, path: &[&str], new: Option<Value>) {
        let (head, rest) = path.split_first().expect("non-empty path");
        match v {
            Value::Map(entries) => {
                let pos = entries
                    .iter()
                    .position(|(k, _)| k == head)
                    .expect("key exists");
                if rest.is_empty() {
                    match new {
                        Some(n) => entries[pos].1 = n,
                        None => {
                            entries.remove(pos);
                        }
                    }
                } else {
                    edit(&mut entries[pos].1, rest, new);
                }
            }
            Value::List(items) => {
                let i: usize = head.parse().expect("index");
                if rest.is_empty() {
                    items[i] = new.expect("lists only replace");
                } else {
                    edit(&mut items[i], rest, new);
                }
            }
            _ => panic!("cannot descend into {v:?}"),
        }
    }

    fn error_for(path: &[&str], new: Option<Value>) -> String {
        let mut v = sample().to_value();
        edit(&mut v, path, new);
        StatsSnapshot::from_value(&v)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn round_trips() {
        let s = sample();
        assert_eq!(StatsSnapshot::from_value(&s.to_value()), Ok(s));
    }

    #[test]
    fn every_kind_of_bad_input_names_its_key() {
        let e = error_for(&["version"], Some(Value::Int(3)));
        assert!(
            e.ends_with("version: unsupported format version 3 (this build reads 1 and 2)"),
            "{e}"
        );
    }

    #[test]
    fn bad_input_in_the_version_2_parts_names_its_key() {
        let e = error_for(&["hits"], None);
        assert!(e.ends_with("stats dict: hits: missing key"), "{e}");
        let e = error_for(&["remote", "errors", "oom"], Some(Value::Int(-1)));
        assert!(e.ends_with("remote.errors.oom: negative count -1"), "{e}");
        let e = error_for(&["hits", "remote", "tokens"], Some(Value::Float(2.0)));
        assert!(
            e.ends_with("hits.remote.tokens: expected int, got float"),
            "{e}"
        );
        let e = error_for(&["transfers", "REMOTE_to_CPU"], None);
        assert!(e.ends_with("transfers.REMOTE_to_CPU: missing key"), "{e}");
    }

    #[test]
    fn every_kind_of_bad_input_in_the_version_1_parts_names_its_key() {
        let e = error_for(&["version"], Some(Value::Other("str".into())));
        assert!(e.contains("version: expected int, got str"), "{e}");
        let e = error_for(&["lookups"], None);
        assert!(e.contains("lookups: missing key"), "{e}");
        let e = error_for(&["transfers", "CPU_to_GPU", "time_ns"], None);
        assert!(
            e.contains("transfers.CPU_to_GPU.time_ns: missing key"),
            "{e}"
        );
        let e = error_for(&["transfers", "GPU_to_CPU", "ops"], Some(Value::Int(-1)));
        assert!(
            e.contains("transfers.GPU_to_CPU.ops: negative count -1"),
            "{e}"
        );
        let e = error_for(
            &["transfers", "GPU_to_CPU", "bytes"],
            Some(Value::Float(1.0)),
        );
        assert!(
            e.contains("transfers.GPU_to_CPU.bytes: expected int, got float"),
            "{e}"
        );
        let e = error_for(&["manager", "pinned_blocks"], Some(Value::Int(1 << 64)));
        assert!(
            e.contains("manager.pinned_blocks: count 18446744073709551616 exceeds"),
            "{e}"
        );
        let e = error_for(
            &["transfers", "GPU_to_CPU", "size_counts", "3"],
            Some(Value::Int(-5)),
        );
        assert!(
            e.contains("transfers.GPU_to_CPU.size_counts[3]: negative count -5"),
            "{e}"
        );
        let e = error_for(
            &["transfers", "GPU_to_CPU", "duration_counts"],
            Some(ints(&[0; 18])),
        );
        assert!(
            e.contains("duration_counts: expected 19 bucket counts"),
            "{e}"
        );
        let e = error_for(&["buckets", "size_bytes", "0"], Some(Value::Int(4_095)));
        assert!(
            e.contains("buckets.size_bytes: bucket layout differs"),
            "{e}"
        );
        let e = error_for(
            &["buckets", "duration_seconds"],
            Some(Value::Other("str".into())),
        );
        assert!(
            e.contains("buckets.duration_seconds: expected list of bounds, got str"),
            "{e}"
        );
        let e = error_for(&["lookups"], Some(Value::List(vec![])));
        assert!(e.contains("lookups: expected dict, got list"), "{e}");
        let mut v = sample().to_value();
        if let Value::Map(entries) = &mut v {
            entries.push(("extra".into(), Value::Int(0)));
        }
        let e = StatsSnapshot::from_value(&v)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("stats dict: unknown key \"extra\""), "{e}");
        let e = error_for(
            &["transfers", "GPU_to_CPU", "ops"],
            Some(Value::HugeInt {
                negative: false,
                bits: 1329,
            }),
        );
        assert!(
            e.contains("transfers.GPU_to_CPU.ops: count (an int of 1329 bits) exceeds 2^64 - 1"),
            "{e}"
        );
        let e = error_for(
            &["lookups", "tokens_hit"],
            Some(Value::HugeInt {
                negative: true,
                bits: 200,
            }),
        );
        assert!(
            e.contains("lookups.tokens_hit: negative count (an int of 200 bits)"),
            "{e}"
        );
        let e = StatsSnapshot::from_value(&Value::Other("NoneType".into()))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("stats dict: expected dict, got NoneType"), "{e}");
    }

    /// `sample()`'s tree as version 1 wrote it: no remote directions, hits or remote section.
    fn version_1_tree() -> Value {
        let mut v = sample().to_value();
        edit(&mut v, &["version"], Some(Value::Int(1)));
        edit(&mut v, &["hits"], None);
        edit(&mut v, &["remote"], None);
        edit(&mut v, &["transfers", "CPU_to_REMOTE"], None);
        edit(&mut v, &["transfers", "REMOTE_to_CPU"], None);
        v
    }

    #[test]
    fn a_version_1_tree_reads_with_the_version_2_parts_zero() {
        let mut expected = sample();
        expected.transfers[2] = DirectionStats::default();
        expected.transfers[3] = DirectionStats::default();
        expected.hits = HitStats::default();
        expected.remote = RemoteTierStats::default();
        assert_eq!(StatsSnapshot::from_value(&version_1_tree()), Ok(expected));
        // Version 1's keys exactly: a version-2 part in a version-1 tree is an unknown key.
        let mut v = version_1_tree();
        if let Value::Map(entries) = &mut v {
            entries.push(("hits".into(), Value::Map(vec![])));
        }
        let e = StatsSnapshot::from_value(&v)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("stats dict: unknown key \"hits\""), "{e}");
        let mut v = version_1_tree();
        edit(
            &mut v,
            &["transfers", "GPU_to_CPU"],
            Some(sample().direction(Direction::GpuToCpu).clone()).map(|d| direction_value(&d)),
        );
        if let Value::Map(entries) = &mut v {
            if let Some((_, Value::Map(t))) = entries.iter_mut().find(|(k, _)| k == "transfers") {
                t.push((
                    "CPU_to_REMOTE".into(),
                    direction_value(&DirectionStats::default()),
                ));
            }
        }
        let e = StatsSnapshot::from_value(&v)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("transfers: unknown key \"CPU_to_REMOTE\""),
            "{e}"
        );
    }

    #[test]
    fn int_and_float_bounds_are_both_accepted() {
        let mut v = sample().to_value();
        let floats = Value::List(
            SIZE_BOUNDS_BYTES
                .iter()
                .map(|&b| Value::Float(b as f64))
                .collect(),
        );
        edit(&mut v, &["buckets", "size_bytes"], Some(floats));
        assert_eq!(StatsSnapshot::from_value(&v), Ok(sample()));
    }
}
