//! SplitMix64's output function: a fast bijective 64-bit mixer. Deterministic pseudo-random
//! numbers from a seed and a counter, for the offline model's call ids, the test mock's fault
//! draws and replies, and the fuzz checks' generators. Not for secrets.

/// Mixes `x` into a well-spread 64-bit value (a bijection: distinct inputs, distinct outputs).
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
