//! The snapshot as a tree of plain values (the `to_dict()` layout, format version 1, in
//! docs/ARCHITECTURE.md) and its validation. The binding only converts between this tree and
//! Python objects, so every check lives here and is tested without Python.

use crate::direction::Direction;
use crate::error::{KvoffError, Result};
use crate::stats::histogram::{DURATION_BOUNDS_SECONDS, SIZE_BOUNDS_BYTES, THROUGHPUT_BOUNDS_BPS};
use crate::stats::snapshot::{
    DirectionStats, LookupStats, ManagerStats, StatsSnapshot, FORMAT_VERSION,
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

const TOP_KEYS: [&str; 5] = ["version", "buckets", "transfers", "lookups", "manager"];
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
            ],
        )
    }

    /// Parses and validates a `to_dict()` tree: exact keys, version, bucket layout, and every
    /// count an int in `0..=2^64-1`. Errors name the key path at fault.
    pub fn from_value(v: &Value) -> Result<Self> {
        let [version, buckets, transfers, lookups, manager] = fields(v, "", TOP_KEYS)?;
        match version {
            Value::Int(n) if *n == i128::from(FORMAT_VERSION) => {}
            Value::Int(n) => {
                return Err(invalid(
                    "version",
                    format_args!(
                        "unsupported format version {n} (this build reads {FORMAT_VERSION})"
                    ),
                ))
            }
            Value::HugeInt { bits, .. } => {
                return Err(invalid(
                    "version",
                    format_args!(
                        "unsupported format version (an int of {bits} bits; this build reads \
                         {FORMAT_VERSION})"
                    ),
                ))
            }
            other => {
                return Err(invalid(
                    "version",
                    format_args!("expected int, got {}", type_name(other)),
                ))
            }
        }
        let layout = bucket_layout();
        let want = fields(&layout, "buckets", BUCKET_KEYS)?;
        let got = fields(buckets, "buckets", BUCKET_KEYS)?;
        for ((g, w), key) in got.iter().zip(want).zip(BUCKET_KEYS) {
            check_bounds(g, &join("buckets", key), w)?;
        }
        let [g2c, c2g] = fields(
            transfers,
            "transfers",
            Direction::ALL.map(Direction::as_str),
        )?;
        let transfers = [
            direction_from(g2c, "transfers.GPU_to_CPU")?,
            direction_from(c2g, "transfers.CPU_to_GPU")?,
        ];
        let l = fields(lookups, "lookups", LOOKUP_KEYS)?;
        let m = fields(manager, "manager", MANAGER_KEYS)?;
        let lp = |i: usize| join("lookups", LOOKUP_KEYS[i]);
        let mp = |i: usize| join("manager", MANAGER_KEYS[i]);
        Ok(StatsSnapshot {
            transfers,
            lookups: LookupStats {
                blocks_queried: count(l[0], &lp(0))?,
                blocks_hit: count(l[1], &lp(1))?,
                tokens_queried: count(l[2], &lp(2))?,
                tokens_hit: count(l[3], &lp(3))?,
            },
            manager: ManagerStats {
                blocks_stored: count(m[0], &mp(0))?,
                blocks_evicted: count(m[1], &mp(1))?,
                allocation_failures: count(m[2], &mp(2))?,
                capacity_blocks: count(m[3], &mp(3))?,
                resident_blocks: count(m[4], &mp(4))?,
                pinned_blocks: count(m[5], &mp(5))?,
            },
        })
    }
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
        let e = error_for(&["version"], Some(Value::Int(2)));
        assert!(e.contains("version: unsupported format version 2"), "{e}");
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
