//! Hashed n-gram features of a text: lowercase words, word pairs, character 3- and 4-grams
//! inside words (inflections and compounds share evidence), and punctuation marks (`=`, `^`,
//! `{`, `;` tell math and code apart). Digit runs become `#`, so a dose and an equation
//! differ by their words, not their numbers. These carry what the config's own examples and
//! keywords say; the static embeddings beside them carry what the language says.
//!
//! Reading is bounded: the first `HEAD_WORDS` and last `TAIL_WORDS` words of a turn (from
//! at most `HEAD_BYTES` and `TAIL_BYTES`), character n-grams from the first
//! `CHAR_WORDS`, so a long request costs what a short one does.

/// Hashed feature space (a power of two): 2^16 rows of per-domain weights, int8 once trained.
pub const BUCKETS: usize = 1 << 16;
const HEAD_WORDS: usize = 128;
const TAIL_WORDS: usize = 48;
const CHAR_WORDS: usize = 48;
/// Bytes read from the start and the end of a turn (comfortably more than the words used).
pub const HEAD_BYTES: usize = 1536;
pub const TAIL_BYTES: usize = 512;
/// Character positions read per word for n-grams.
const MAX_GRAMS_PER_WORD: usize = 24;
/// Weight of a character n-gram relative to a word.
const CHAR_WEIGHT: f32 = 0.25;

/// Sparse features: (index, value).
pub type Features = Vec<(u32, f32)>;

/// FNV-1a over bytes with a kind tag, folded into the bucket range.
fn hash(kind: u8, parts: &[&[u8]]) -> u32 {
    let mut h = hash_start(kind);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h = hash_extend(h, &[0xff]);
        }
        h = hash_extend(h, p);
    }
    bucket(h)
}

fn hash_start(kind: u8) -> u64 {
    0xcbf2_9ce4_8422_2325 ^ kind as u64
}

/// FNV-1a continued: a string's state extends its prefix's, so a 4-gram costs one character
/// more than the 3-gram it starts with.
fn hash_extend(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn bucket(h: u64) -> u32 {
    ((h ^ (h >> 29)) as usize & (BUCKETS - 1)) as u32
}

/// Lowercased words of a text (digit runs as `#`) in one buffer, and its punctuation marks:
/// reused across calls so reading a turn allocates nothing once warm.
#[derive(Default)]
struct Words {
    text: String,
    /// Byte ranges of the words in `text`.
    spans: Vec<(u32, u32)>,
    marks: Vec<char>,
}

impl Words {
    fn get(&self, i: usize) -> &str {
        let (a, b) = self.spans[i];
        &self.text[a as usize..b as usize]
    }

    /// Appends the first `max` words of `text`; marks only when `marks` is set.
    fn read(&mut self, text: &str, max: usize, marks: bool) {
        let limit = self.spans.len().saturating_add(max);
        let mut start = self.text.len();
        let mut in_digits = false;
        for c in text.chars() {
            if self.spans.len() >= limit {
                break;
            }
            // ASCII first: the common case, without Unicode tables; then the ideographs and
            // kana, which are letters without case.
            let caseless = super::embedding::caseless_letter(c);
            let latin1 = super::embedding::latin1_lowercase(c);
            let (letter, digit) = if c.is_ascii() {
                (c.is_ascii_alphabetic(), c.is_ascii_digit())
            } else if caseless || latin1.is_some() {
                (true, false)
            } else {
                (c.is_alphabetic(), c.is_numeric())
            };
            if letter {
                in_digits = false;
                if c.is_ascii() {
                    self.text.push(c.to_ascii_lowercase());
                } else if caseless {
                    self.text.push(c);
                } else if let Some(lower) = latin1 {
                    self.text.push(lower);
                } else {
                    self.text.extend(c.to_lowercase());
                }
            } else if digit {
                if !in_digits {
                    self.text.push('#');
                    in_digits = true;
                }
            } else {
                in_digits = false;
                self.flush(&mut start);
                if marks && !c.is_whitespace() && self.marks.len() < 64 {
                    self.marks.push(c);
                }
            }
        }
        self.flush(&mut start);
        self.spans.truncate(limit);
    }

    fn flush(&mut self, start: &mut usize) {
        if self.text.len() > *start {
            self.spans.push((*start as u32, self.text.len() as u32));
            *start = self.text.len();
        }
    }
}

/// At most `max` bytes from the start (`from_end`: from the end) of `text`, on a char boundary.
pub fn clip(text: &str, max: usize, from_end: bool) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut at = if from_end { text.len() - max } else { max };
    while !text.is_char_boundary(at) {
        at = if from_end { at + 1 } else { at - 1 };
    }
    if from_end {
        &text[at..]
    } else {
        &text[..at]
    }
}

/// Calls `each(bucket, value)` for every hashed feature of one text, unnormalised (a
/// feature can come more than once), and returns the sum of the squared values.
pub fn each_feature(text: &str, mut each: impl FnMut(u32, f32)) -> f32 {
    let mut words = Words::default();
    // Read a bounded head and tail: a long request costs what a short one does.
    words.read(clip(text, HEAD_BYTES, false), HEAD_WORDS, true);
    if text.len() > HEAD_BYTES + TAIL_BYTES {
        let head = words.spans.len();
        words.read(clip(text, TAIL_BYTES, true), usize::MAX, false);
        let tail = words.spans.len() - head;
        words
            .spans
            .drain(head..head + tail.saturating_sub(TAIL_WORDS));
    }
    let mut squares = 0.0;
    let mut emit = |bucket: u32, value: f32| {
        squares += value * value;
        each(bucket, value);
    };
    let mut padded = String::new();
    let mut bounds = [0usize; MAX_GRAMS_PER_WORD + 1];
    for i in 0..words.spans.len() {
        let w = words.get(i);
        emit(hash(b'w', &[w.as_bytes()]), 1.0);
        if i + 1 < words.spans.len() {
            emit(
                hash(b'b', &[w.as_bytes(), words.get(i + 1).as_bytes()]),
                1.0,
            );
        }
        if i < CHAR_WORDS {
            padded.clear();
            padded.push('^');
            padded.push_str(w);
            padded.push('$');
            // Long runs (unspaced scripts, hashes) give their first n-grams only.
            let mut len = 0;
            for (at, _) in padded.char_indices().take(MAX_GRAMS_PER_WORD) {
                bounds[len] = at;
                len += 1;
            }
            if len < MAX_GRAMS_PER_WORD {
                bounds[len] = padded.len();
                len += 1;
            }
            // The 3-gram at each position, then the 4-gram that extends it.
            let bytes = padded.as_bytes();
            for at in 0..len.saturating_sub(3) {
                let h = hash_extend(hash_start(b'c'), &bytes[bounds[at]..bounds[at + 3]]);
                emit(bucket(h), CHAR_WEIGHT);
                if at + 4 < len {
                    emit(
                        bucket(hash_extend(h, &bytes[bounds[at + 3]..bounds[at + 4]])),
                        CHAR_WEIGHT,
                    );
                }
            }
        }
    }
    for m in &words.marks {
        let mut buf = [0u8; 4];
        emit(hash(b'p', &[m.encode_utf8(&mut buf).as_bytes()]), 0.5);
    }
    squares
}

/// The hashed features of weighted texts, each L2-normalised (for training, which visits
/// each example many times).
pub fn features(texts: &[(&str, f32)]) -> Features {
    let mut out: Features = Vec::new();
    for (text, weight) in texts {
        let start = out.len();
        let norm = each_feature(text, |bucket, value| out.push((bucket, value))).sqrt();
        if norm > 0.0 {
            for f in &mut out[start..] {
                f.1 *= weight / norm;
            }
        }
    }
    out
}
