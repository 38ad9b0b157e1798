//! The PRNG and the byte and text mutations of the mutation engine.

/// splitmix64: tiny, fast, and good enough to drive mutations.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

/// splitmix64's increment (the golden ratio in 64 bits).
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// splitmix64's output function.
fn finalize(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One splitmix64 step from `z`: used to derive case seeds from a base seed.
pub fn mix(z: u64) -> u64 {
    finalize(z.wrapping_add(GAMMA))
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        finalize(self.state)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "below(0)");
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `num/den`.
    pub fn chance(&mut self, num: usize, den: usize) -> bool {
        self.below(den) < num
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }

    /// A length biased towards small values (most mutations should be local).
    pub fn small_len(&mut self, max: usize) -> usize {
        let max = max.max(1);
        match self.below(4) {
            0 => 1,
            1 => self.between(1, max.min(8)),
            2 => self.between(1, max.min(64)),
            _ => self.between(1, max),
        }
    }

    /// A number that is often on or next to a boundary.
    pub fn interesting_u64(&mut self) -> u64 {
        const VALUES: [u64; 16] = [
            0,
            1,
            7,
            8,
            511,
            512,
            513,
            4095,
            4096,
            65535,
            65536,
            u32::MAX as u64,
            1 << 32,
            i64::MAX as u64,
            1 << 63,
            u64::MAX,
        ];
        match self.below(3) {
            0 => *self.pick(&VALUES),
            1 => self.next_u64() >> self.below(64),
            _ => self
                .pick(&VALUES)
                .wrapping_add(self.below(5) as u64)
                .wrapping_sub(2),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Byte mutations
// ---------------------------------------------------------------------------------------

/// Byte values that tend to matter to parsers of text and tar headers.
pub const INTERESTING_BYTES: [u8; 16] = [
    0, 0xff, 0x7f, 0x80, b'/', b'.', b'0', b'1', b'2', b'3', b'4', b'5', b'6', b'7', b' ', b'\n',
];

/// What the byte mutations may use besides random bytes.
pub struct Sources<'a> {
    /// Other inputs, for splicing.
    pub corpus: &'a [Vec<u8>],
    /// Tokens worth inserting (keywords, magic numbers, path fragments).
    pub dictionary: &'a [&'a [u8]],
    /// Inputs never grow beyond this.
    pub max_len: usize,
}

/// Apply one classic mutation to `data`.
pub fn mutate_once(rng: &mut Rng, data: &mut Vec<u8>, src: &Sources<'_>) {
    let len = data.len();
    match rng.below(13) {
        // Bit flip.
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        // An interesting byte.
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = *rng.pick(&INTERESTING_BYTES);
        }
        // A random byte.
        2 if len > 0 => {
            let i = rng.below(len);
            data[i] = rng.byte();
        }
        // Insert random or interesting bytes.
        3 => {
            let n = rng.small_len(64).min(src.max_len.saturating_sub(len));
            let at = rng.below(len + 1);
            let fill: Vec<u8> = if rng.chance(1, 2) {
                rng.bytes(n)
            } else {
                vec![*rng.pick(&INTERESTING_BYTES); n]
            };
            data.splice(at..at, fill);
        }
        // Delete a range.
        4 if len > 0 => {
            let at = rng.below(len);
            let n = rng.small_len(len - at);
            data.drain(at..at + n);
        }
        // Duplicate a range in place.
        5 if len > 0 => {
            let at = rng.below(len);
            let n = rng.small_len(len - at).min(src.max_len.saturating_sub(len));
            let copy = data[at..at + n].to_vec();
            data.splice(at..at, copy);
        }
        // Copy a range over another place.
        6 if len > 1 => {
            let from = rng.below(len);
            let n = rng.small_len(len - from);
            let to = rng.below(len);
            let n = n.min(len - to);
            let copy = data[from..from + n].to_vec();
            data[to..to + n].copy_from_slice(&copy);
        }
        // Truncate.
        7 if len > 0 => data.truncate(rng.below(len)),
        // Splice: a prefix of this input and a suffix of another.
        8 if !src.corpus.is_empty() => {
            let other = rng.pick(src.corpus);
            let cut = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            data.truncate(cut);
            data.extend_from_slice(&other[from..]);
            data.truncate(src.max_len);
        }
        // A dictionary token, inserted or written over.
        9 | 10 if !src.dictionary.is_empty() => {
            let token = *rng.pick(src.dictionary);
            let at = rng.below(len + 1);
            if rng.chance(1, 2) && at + token.len() <= len {
                data[at..at + token.len()].copy_from_slice(token);
            } else if len + token.len() <= src.max_len {
                data.splice(at..at, token.iter().copied());
            }
        }
        // Arithmetic on a byte.
        11 if len > 0 => {
            let i = rng.below(len);
            let delta = rng.between(1, 35) as u8;
            data[i] = if rng.chance(1, 2) {
                data[i].wrapping_add(delta)
            } else {
                data[i].wrapping_sub(delta)
            };
        }
        // Repeat a byte run (long runs find length handling bugs).
        12 if len > 0 => {
            let i = rng.below(len);
            let n = rng.small_len(4096).min(src.max_len.saturating_sub(len));
            let b = data[i];
            data.splice(i..i, std::iter::repeat_n(b, n));
        }
        // The chosen mutation does not apply to this input: append a random byte.
        _ => {
            if len < src.max_len {
                data.push(rng.byte());
            }
        }
    }
}

/// Apply 1 to `max_rounds` classic mutations (fewer more often).
pub fn mutate_bytes(rng: &mut Rng, data: &mut Vec<u8>, src: &Sources<'_>, max_rounds: usize) {
    for _ in 0..rng.small_len(max_rounds) {
        mutate_once(rng, data, src);
    }
}

/// Arbitrary (mostly short) UTF-8 text mixed from a dictionary, random code points and
/// random ASCII.
pub fn random_text(rng: &mut Rng, dictionary: &[&str], max_len: usize) -> String {
    let mut s = String::new();
    let parts = rng.small_len(12);
    for _ in 0..parts {
        match rng.below(4) {
            0 if !dictionary.is_empty() => s.push_str(rng.pick::<&str>(dictionary)),
            1 => {
                let c = char::from_u32(rng.below(0x11_0000) as u32).unwrap_or('\u{fffd}');
                s.push(c);
            }
            2 => s.push(*rng.pick(&['\\', '"', '\'', '/', '.', ' ', '\t', '\n', '\0', '%'])),
            _ => {
                for _ in 0..rng.small_len(8) {
                    s.push((0x20 + rng.below(0x5f)) as u8 as char);
                }
            }
        }
        if s.len() > max_len {
            break;
        }
    }
    s
}

/// Mutate text as bytes and return it if the result is still UTF-8, else a lossy copy.
pub fn mutate_text(rng: &mut Rng, text: &str, src: &Sources<'_>, rounds: usize) -> String {
    let mut b = text.as_bytes().to_vec();
    mutate_bytes(rng, &mut b, src, rounds);
    match String::from_utf8(b) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}
