//! Deterministic test and benchmark data without a dependency: a xorshift64* generator, shared
//! by unit tests and the criterion benches (not part of goprox's interface).

/// xorshift64*: the same sequence for the same seed on every run.
pub struct Rng(pub u64);

impl Rng {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// `n` bytes of text-like lines: indented words from a small vocabulary.
    pub fn text(&mut self, n: usize) -> Vec<u8> {
        const WORDS: &[&str] = &[
            "fn", "let", "mut", "self", "return", "match", "Some", "None", "if", "else", "for",
            "in", "=>", "{", "}", "(", ")", ";", "x", "y", "len", "data", "out", "pos", "0", "1",
            "+=", "==", "&", "Vec<u8>",
        ];
        let mut v = Vec::with_capacity(n + 64);
        while v.len() < n {
            for _ in 0..self.below(4) {
                v.extend_from_slice(b"    ");
            }
            for _ in 0..1 + self.below(10) {
                v.extend_from_slice(WORDS[self.below(WORDS.len())].as_bytes());
                v.push(b' ');
            }
            v.push(b'\n');
        }
        v.truncate(n);
        v
    }
}
