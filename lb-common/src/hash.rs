//! The hash both sides agree on: MurmurHash3 (x86, 32-bit) over 32-bit words.
//!
//! The XDP program hashes a flow to pick its Maglev table entry; the agent and the tests compute
//! the same value to predict that choice, and every node of a cluster uses the same seed so they
//! all choose the same backend for a flow. Small enough for the verifier: no loops over
//! variable lengths, only multiplies, rotates and xors.

use crate::FlowKey;

/// Seed for flow hashing. Fixed: nodes must agree.
pub const FLOW_SEED: u32 = 0x5851_f42d;

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

#[inline(always)]
fn round(h: u32, word: u32) -> u32 {
    let k = word.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    (h ^ k).rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64)
}

#[inline(always)]
fn finish(mut h: u32, len_bytes: u32) -> u32 {
    h ^= len_bytes;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[inline(always)]
fn word(b: &[u8; 16], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

#[inline(always)]
fn addr_rounds(h: u32, a: &[u8; 16]) -> u32 {
    let h = round(h, word(a, 0));
    let h = round(h, word(a, 4));
    let h = round(h, word(a, 8));
    round(h, word(a, 12))
}

/// Hash of the whole 5-tuple (a new flow's default choice). Fragments use it with both ports 0.
#[inline(always)]
pub fn flow_hash(key: &FlowKey) -> u32 {
    let h = addr_rounds(FLOW_SEED, &key.src);
    let h = addr_rounds(h, &key.dst);
    let h = round(h, (key.sport as u32) | ((key.dport as u32) << 16));
    let h = round(h, (key.proto as u32) | ((key.family as u32) << 8));
    finish(h, 40)
}

/// Hash of the source address alone (source persistence).
#[inline(always)]
pub fn source_hash(key: &FlowKey) -> u32 {
    let h = addr_rounds(FLOW_SEED, &key.src);
    let h = round(h, key.family as u32);
    finish(h, 20)
}

/// Hash of an arbitrary byte string (the agent uses it for Maglev offsets and skips).
pub fn hash_bytes(seed: u32, bytes: &[u8]) -> u32 {
    let mut h = seed;
    let mut chunks = bytes.chunks_exact(4);
    for c in &mut chunks {
        h = round(h, u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut tail = [0u8; 4];
        tail[..rest.len()].copy_from_slice(rest);
        let k = u32::from_le_bytes(tail).wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
    }
    finish(h, bytes.len() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_murmur3_reference_vectors() {
        // Published MurmurHash3_x86_32 vectors.
        assert_eq!(hash_bytes(0, b""), 0);
        assert_eq!(hash_bytes(1, b""), 0x514e_28b7);
        assert_eq!(hash_bytes(0, b"test"), 0xba6b_d213);
        assert_eq!(hash_bytes(0x9747_b28c, b"Hello, world!"), 0x2488_4cba);
        assert_eq!(hash_bytes(0, b"The quick brown fox jumps over the lazy dog"), 0x2e4f_f723);
    }

    #[test]
    fn flow_hash_depends_on_every_field() {
        let base = FlowKey {
            src: [203, 0, 113, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            dst: [203, 0, 113, 100, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            sport: 40000u16.to_be(),
            dport: 80u16.to_be(),
            proto: crate::PROTO_TCP,
            family: crate::FAMILY_V4,
            _pad: [0; 2],
        };
        let h = flow_hash(&base);
        let variants = [
            FlowKey { sport: 40001u16.to_be(), ..base },
            FlowKey { dport: 81u16.to_be(), ..base },
            FlowKey { proto: crate::PROTO_UDP, ..base },
            FlowKey { family: crate::FAMILY_V6, ..base },
            FlowKey { src: [203, 0, 113, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], ..base },
            FlowKey { dst: [203, 0, 113, 101, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], ..base },
        ];
        for v in variants {
            assert_ne!(flow_hash(&v), h, "{v:?}");
        }
        // Source hashing ignores everything but the source address and family.
        let other_ports = FlowKey { sport: 1, dport: 2, ..base };
        assert_eq!(source_hash(&base), source_hash(&other_ports));
    }
}
