//! Structure-aware mutations of qcow2 images: header fields, L1 and L2 entries (offsets,
//! the compressed/zero/copied bits, compressed sizes), and compressed data.

use super::{mutate_bytes, Rng, Sources};

pub const COPIED: u64 = 1 << 63;
pub const COMPRESSED: u64 = 1 << 62;
pub const ZERO: u64 = 1;

pub fn be32(d: &[u8], at: usize) -> u32 {
    d.get(at..at + 4)
        .map_or(0, |b| u32::from_be_bytes(b.try_into().unwrap()))
}
pub fn be64(d: &[u8], at: usize) -> u64 {
    d.get(at..at + 8)
        .map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap()))
}
fn put32(d: &mut [u8], at: usize, v: u32) {
    if let Some(b) = d.get_mut(at..at + 4) {
        b.copy_from_slice(&v.to_be_bytes());
    }
}
fn put64(d: &mut [u8], at: usize, v: u64) {
    if let Some(b) = d.get_mut(at..at + 8) {
        b.copy_from_slice(&v.to_be_bytes());
    }
}

/// The header fields the converter reads.
#[derive(Debug, Clone, Copy)]
pub struct Fields {
    pub version: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub l1_size: u32,
    pub l1_offset: u64,
}

pub fn fields(d: &[u8]) -> Fields {
    Fields {
        version: be32(d, 4),
        cluster_bits: be32(d, 20),
        size: be64(d, 24),
        l1_size: be32(d, 36),
        l1_offset: be64(d, 40),
    }
}

/// Byte offsets of the L1 entries that lie inside the image.
fn l1_slots(d: &[u8]) -> Vec<usize> {
    let f = fields(d);
    (0..u64::from(f.l1_size).min(1 << 16))
        .filter_map(|i| f.l1_offset.checked_add(i * 8))
        .filter(|&o| o + 8 <= d.len() as u64)
        .map(|o| o as usize)
        .collect()
}

/// Byte offsets of the L2 entries of every L2 table inside the image.
fn l2_slots(d: &[u8]) -> Vec<usize> {
    let f = fields(d);
    if !(9..=21).contains(&f.cluster_bits) {
        return Vec::new();
    }
    let cluster = 1usize << f.cluster_bits;
    let mut out = Vec::new();
    for slot in l1_slots(d) {
        let table = (be64(d, slot) & !COPIED & !COMPRESSED) as usize;
        if table != 0 && table.checked_add(cluster).is_some_and(|e| e <= d.len()) {
            out.extend((0..cluster / 8).map(|j| table + j * 8));
        }
    }
    out
}

/// A hostile offset into (or just out of) an image of `len` bytes.
fn offset(rng: &mut Rng, len: usize, cluster: u64) -> u64 {
    let len = len as u64;
    match rng.below(8) {
        0 => 0,
        1 => len,
        2 => len.saturating_sub(cluster),
        3 => len.saturating_sub(rng.between(1, 600) as u64),
        4 => (rng.below((len / cluster.max(1)).max(1) as usize) as u64) * cluster,
        5 => rng.below(len.max(1) as usize) as u64,
        6 => (1u64 << 56) - cluster,
        _ => rng.interesting_u64() & ((1 << 62) - 1),
    }
}

/// One structure-aware mutation.
pub fn mutate_structure(rng: &mut Rng, d: &mut Vec<u8>, corpus: &[Vec<u8>], max_len: usize) {
    let f = fields(d);
    let cluster = if (9..=21).contains(&f.cluster_bits) {
        1u64 << f.cluster_bits
    } else {
        65536
    };
    match rng.below(12) {
        // Header fields.
        0..=2 => match rng.below(9) {
            0 => put32(d, 4, *rng.pick(&[0, 1, 2, 3, 4, u32::MAX])),
            1 => put32(
                d,
                20,
                *rng.pick(&[0, 8, 9, 12, 16, 20, 21, 22, 31, 32, 63, 64, 255]),
            ),
            2 => {
                let v = match rng.below(6) {
                    0 => f.size.wrapping_add(rng.between(1, 4096) as u64),
                    1 => f.size.saturating_sub(rng.between(1, 4096) as u64),
                    2 => f.size.wrapping_mul(1 << rng.below(20)),
                    3 => (rng.below(64) as u64) * cluster,
                    _ => rng.interesting_u64(),
                };
                put64(d, 24, v);
            }
            3 => put32(d, 32, *rng.pick(&[0, 1, 2])),
            4 => {
                let v = *rng.pick(&[
                    0,
                    1,
                    f.l1_size.wrapping_add(1),
                    f.l1_size.saturating_sub(1),
                    f.l1_size.wrapping_mul(64),
                    32 << 20,
                    (32 << 20) + 1,
                    u32::MAX,
                ]);
                put32(d, 36, v);
            }
            5 => {
                let v = offset(rng, d.len(), cluster);
                put64(d, 40, v);
            }
            6 => put64(d, 72, *rng.pick(&[0, 1, 2, 4, 8, 16, 1 << 63])),
            7 => put32(d, 100, *rng.pick(&[0, 72, 103, 104, 105, 112, u32::MAX])),
            _ => {
                // Fields the converter ignores (backing file, refcounts, snapshots).
                let at = *rng.pick(&[8usize, 16, 48, 56, 60, 64, 80, 88, 96]);
                let v = rng.interesting_u64();
                put64(d, at, v);
            }
        },
        // L1 entries.
        3..=4 => {
            let slots = l1_slots(d);
            if slots.is_empty() {
                return mutate_structure(rng, d, corpus, max_len);
            }
            let slot = *rng.pick(&slots);
            let other = be64(d, *rng.pick(&slots));
            let v = match rng.below(6) {
                0 => 0,
                1 => other,
                2 => offset(rng, d.len(), cluster) | if rng.chance(1, 2) { COPIED } else { 0 },
                3 => be64(d, slot) | COMPRESSED,
                4 => be64(d, slot) | ZERO,
                _ => rng.next_u64(),
            };
            put64(d, slot, v);
        }
        // L2 entries.
        5..=8 => {
            let slots = l2_slots(d);
            if slots.is_empty() {
                return mutate_structure(rng, d, corpus, max_len);
            }
            let slot = *rng.pick(&slots);
            let current = be64(d, slot);
            let bits = f.cluster_bits.clamp(9, 21);
            let size_shift = 62 - (bits - 8);
            let v = match rng.below(9) {
                0 => 0,
                1 => be64(d, *rng.pick(&slots)),
                2 => offset(rng, d.len(), cluster) | COPIED,
                3 => current | ZERO,
                4 => current ^ COMPRESSED,
                // Compressed: a sector count and an offset of our choosing.
                5 | 6 => {
                    let sectors = rng.below(1 << (bits - 8)) as u64;
                    let host = offset(rng, d.len(), 512) & ((1u64 << size_shift) - 1);
                    COMPRESSED | (sectors << size_shift) | host
                }
                7 if current & COMPRESSED != 0 => {
                    // Shift the compressed data start a little.
                    let host = current & ((1u64 << size_shift) - 1);
                    let moved = host
                        .wrapping_add(rng.between(1, 64) as u64)
                        .wrapping_sub(32);
                    (current & !((1u64 << size_shift) - 1)) | (moved & ((1u64 << size_shift) - 1))
                }
                _ => rng.next_u64(),
            };
            put64(d, slot, v);
        }
        // Corrupt the data a compressed cluster points at.
        9 => {
            let compressed: Vec<u64> = l2_slots(d)
                .into_iter()
                .map(|s| be64(d, s))
                .filter(|e| e & COMPRESSED != 0)
                .collect();
            if compressed.is_empty() {
                return mutate_structure(rng, d, corpus, max_len);
            }
            let e = *rng.pick(&compressed);
            let bits = f.cluster_bits.clamp(9, 21);
            let host = (e & ((1u64 << (62 - (bits - 8))) - 1)) as usize;
            for _ in 0..rng.small_len(8) {
                let at = host + rng.below(64);
                if at < d.len() {
                    d[at] ^= 1 << rng.below(8);
                }
            }
        }
        // Truncate at a cluster boundary (often where the data starts).
        10 => {
            let n = (d.len() as u64 / cluster).max(1);
            d.truncate((rng.below(n as usize) as u64 * cluster) as usize);
        }
        _ => {
            let src = Sources {
                corpus,
                dictionary: &[b"QFI\xfb"],
                max_len,
            };
            mutate_bytes(rng, d, &src, 4);
        }
    }
    d.truncate(max_len);
}

/// A mutated image: one corpus image and 1–5 structure-aware mutations.
pub fn mutate(rng: &mut Rng, corpus: &[Vec<u8>], max_len: usize) -> Vec<u8> {
    let mut d = rng.pick(corpus).clone();
    for _ in 0..rng.small_len(5) {
        mutate_structure(rng, &mut d, corpus, max_len);
    }
    d
}
