//! Hashed n-gram features of a text: lowercase words, word pairs, character 3- and 4-grams
//! inside words (inflections and compounds share evidence), and punctuation marks (`=`, `^`,
//! `{`, `;` tell math and code apart). Digit runs become `#`, so a dose and an equation
//! differ by their words, not their numbers. These carry what the config's own examples and
//! keywords say; the static embeddings beside them carry what the language says.
//!
//! Reading is bounded: the first [`HEAD_WORDS`] and last [`TAIL_WORDS`] words of a turn (from
//! at most [`HEAD_BYTES`] and [`TAIL_BYTES`]), character n-grams from the first
//! [`CHAR_WORDS`], so a long request costs what a short one does.

/// Hashed feature space (a power of two). 2^16 rows of per-domain weights stay in cache.
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
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ kind as u64;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0xff;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for b in *p {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    ((h ^ (h >> 29)) as usize & (BUCKETS - 1)) as u32
}

/// The first `max` words of a text, lowercased, digit runs as `#`, and its punctuation marks.
fn words(text: &str, max: usize) -> (Vec<String>, Vec<char>) {
    let mut out = Vec::new();
    let mut marks = Vec::new();
    let mut word = String::new();
    let mut in_digits = false;
    let flush = |word: &mut String, out: &mut Vec<String>| {
        if !word.is_empty() {
            out.push(std::mem::take(word));
        }
    };
    for c in text.chars() {
        if out.len() >= max {
            break;
        }
        // ASCII first: the common case, without Unicode tables.
        let (letter, digit) = if c.is_ascii() {
            (c.is_ascii_alphabetic(), c.is_ascii_digit())
        } else {
            (c.is_alphabetic(), c.is_numeric())
        };
        if letter {
            in_digits = false;
            if c.is_ascii() {
                word.push(c.to_ascii_lowercase());
            } else {
                word.extend(c.to_lowercase());
            }
        } else if digit {
            if !in_digits {
                word.push('#');
                in_digits = true;
            }
        } else {
            in_digits = false;
            flush(&mut word, &mut out);
            if !c.is_whitespace() && marks.len() < 64 {
                marks.push(c);
            }
        }
    }
    flush(&mut word, &mut out);
    (out, marks)
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

/// The hashed features of weighted texts, each L2-normalised.
pub fn features(texts: &[(&str, f32)]) -> Features {
    let mut out: Features = Vec::new();
    let mut padded = String::new();
    let mut bounds: Vec<usize> = Vec::new();
    for (text, weight) in texts {
        let start = out.len();
        // Read a bounded head and tail: a long request costs what a short one does.
        let (mut picked, marks) = words(clip(text, HEAD_BYTES, false), HEAD_WORDS);
        if text.len() > HEAD_BYTES + TAIL_BYTES {
            picked.truncate(HEAD_WORDS);
            let (tail, _) = words(clip(text, TAIL_BYTES, true), usize::MAX);
            let skip = tail.len().saturating_sub(TAIL_WORDS);
            picked.extend(tail.into_iter().skip(skip));
        }
        for (i, w) in picked.iter().enumerate() {
            out.push((hash(b'w', &[w.as_bytes()]), 1.0));
            if let Some(next) = picked.get(i + 1) {
                out.push((hash(b'b', &[w.as_bytes(), next.as_bytes()]), 1.0));
            }
            if i < CHAR_WORDS {
                padded.clear();
                padded.push('^');
                padded.push_str(w);
                padded.push('$');
                bounds.clear();
                // Long runs (unspaced scripts, hashes) give their first n-grams only.
                bounds.extend(
                    padded
                        .char_indices()
                        .map(|(at, _)| at)
                        .take(MAX_GRAMS_PER_WORD),
                );
                if bounds.len() < MAX_GRAMS_PER_WORD {
                    bounds.push(padded.len());
                }
                for n in [3usize, 4] {
                    for pair in bounds.windows(n + 1) {
                        let gram = &padded.as_bytes()[pair[0]..pair[n]];
                        out.push((hash(b'c' + n as u8, &[gram]), CHAR_WEIGHT));
                    }
                }
            }
        }
        for m in marks {
            let mut buf = [0u8; 4];
            out.push((hash(b'p', &[m.encode_utf8(&mut buf).as_bytes()]), 0.5));
        }
        let norm: f32 = out[start..].iter().map(|(_, v)| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            for f in &mut out[start..] {
                f.1 *= weight / norm;
            }
        }
    }
    out
}
