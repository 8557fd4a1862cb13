//! The domain classifier: which task domain a request belongs to, with a confidence.
//!
//! Structure first — an image in the last user turn is `vision`, a `tools` array is
//! `agentic` — then a text model: multinomial logistic regression over hashed features of the
//! last user turn (earlier user turns count at a third of the weight). Features are lowercase
//! words, word pairs, character 3- and 4-grams inside words (so inflections, compounds and
//! other languages share evidence with the training examples), and punctuation marks
//! (`=`, `^`, `{`, `;` tell math and code apart). Digit runs become `#`, so a dose and an
//! equation differ by their words, not their numbers.
//!
//! Trained from the config's domain examples, descriptions and keywords when the config
//! loads (milliseconds, deterministic, no download); read-only afterwards. Reading is
//! bounded: the first [`HEAD_WORDS`] and last [`TAIL_WORDS`] words of a turn (from at most
//! [`HEAD_BYTES`] and [`TAIL_BYTES`]), character n-grams from the first [`CHAR_WORDS`], so a
//! long request costs what a short one does.

use thinkgate_config::Domain;

use crate::canonical::{ChatRequest, Message};

/// Hashed feature space (a power of two). 2^16 rows of per-domain weights stay in cache.
const BUCKETS: usize = 1 << 16;
const HEAD_WORDS: usize = 128;
const TAIL_WORDS: usize = 48;
const CHAR_WORDS: usize = 48;
/// Bytes read from the start and the end of a turn (comfortably more than the words used).
const HEAD_BYTES: usize = 1536;
const TAIL_BYTES: usize = 512;
/// Character positions read per word for n-grams.
const MAX_GRAMS_PER_WORD: usize = 24;
/// Weight of a character n-gram relative to a word.
const CHAR_WEIGHT: f32 = 0.25;
/// Weight of earlier user turns relative to the last one.
const CONTEXT_WEIGHT: f32 = 0.3;
const EPOCHS: usize = 25;
const LEARNING_RATE: f32 = 0.4;
const L2: f32 = 1e-6;

/// One decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The chosen domain (`general` under the confidence threshold).
    pub domain: String,
    pub confidence: f32,
    /// Every domain's probability, in the classifier's domain order.
    pub scores: Vec<(String, f32)>,
    /// `image`, `tools`, `text` or `threshold` (the text model was not sure enough).
    pub by: &'static str,
}

/// A trained classifier; built once per config.
pub struct Classifier {
    domains: Vec<String>,
    /// `BUCKETS` rows of `domains.len()` weights.
    weights: Vec<f32>,
    bias: Vec<f32>,
    threshold: f32,
    general: usize,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("domains", &self.domains)
            .finish_non_exhaustive()
    }
}

/// Sparse features: (bucket, value).
type Features = Vec<(u32, f32)>;

impl Classifier {
    /// Trains on the domains' examples, descriptions and keywords. `general` must be one of
    /// them (the config guarantees it).
    pub fn train(domains: &[Domain], threshold: f32) -> Classifier {
        let names: Vec<String> = domains.iter().map(|d| d.name.clone()).collect();
        let n = names.len().max(1);
        let general = names.iter().position(|d| d == "general").unwrap_or(0);
        let mut data: Vec<(Features, usize, f32)> = Vec::new();
        for (label, d) in domains.iter().enumerate() {
            for e in &d.examples {
                data.push((features(&[(e.as_str(), 1.0)]), label, 1.0));
            }
            if !d.description.is_empty() {
                data.push((features(&[(d.description.as_str(), 1.0)]), label, 0.5));
            }
            for k in &d.keywords {
                data.push((features(&[(k.as_str(), 1.0)]), label, 0.5));
            }
        }
        let mut c = Classifier {
            domains: names,
            weights: vec![0.0; BUCKETS * n],
            bias: vec![0.0; n],
            threshold,
            general,
        };
        // AdaGrad on the softmax loss; a fixed shuffle so a config always trains the same.
        let mut grad_sq = vec![1e-8f32; BUCKETS * n];
        let mut order: Vec<usize> = (0..data.len()).collect();
        let mut rng = SplitMix(0x7468_696e_6b67_6174);
        let mut probs = vec![0.0f32; n];
        for _ in 0..EPOCHS {
            for i in (1..order.len()).rev() {
                let j = (rng.next_u64() % (i as u64 + 1)) as usize;
                order.swap(i, j);
            }
            for &i in &order {
                let (x, label, weight) = &data[i];
                c.probabilities(x, &mut probs);
                for (k, p) in probs.iter().enumerate() {
                    let g = (p - if k == *label { 1.0 } else { 0.0 }) * weight;
                    c.bias[k] -= 0.05 * g;
                    for (bucket, v) in x {
                        let w = *bucket as usize * n + k;
                        let gw = g * v + L2 * c.weights[w];
                        grad_sq[w] += gw * gw;
                        c.weights[w] -= LEARNING_RATE * gw / grad_sq[w].sqrt();
                    }
                }
            }
        }
        c
    }

    /// The classifier for these domains: the last one trained when the domains and the
    /// threshold are unchanged (a reload that touches other keys retrains nothing), else a
    /// new one.
    pub fn shared(domains: &[Domain], threshold: f32) -> std::sync::Arc<Classifier> {
        use std::hash::{Hash, Hasher};
        use std::sync::{Arc, Mutex};
        static LAST: Mutex<Option<(u64, Arc<Classifier>)>> = Mutex::new(None);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for d in domains {
            (&d.name, &d.description, &d.examples, &d.keywords).hash(&mut h);
        }
        threshold.to_bits().hash(&mut h);
        let key = h.finish();
        if let Ok(last) = LAST.lock() {
            if let Some((k, c)) = last.as_ref() {
                if *k == key {
                    return c.clone();
                }
            }
        }
        let trained = Arc::new(Classifier::train(domains, threshold));
        if let Ok(mut last) = LAST.lock() {
            *last = Some((key, trained.clone()));
        }
        trained
    }

    pub fn domains(&self) -> &[String] {
        &self.domains
    }

    fn probabilities(&self, x: &Features, out: &mut [f32]) {
        let n = self.domains.len();
        out.copy_from_slice(&self.bias);
        for (bucket, v) in x {
            let row = &self.weights[*bucket as usize * n..][..n];
            for (o, w) in out.iter_mut().zip(row) {
                *o += w * v;
            }
        }
        let max = out.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for o in out.iter_mut() {
            *o = (*o - max).exp();
            sum += *o;
        }
        for o in out.iter_mut() {
            *o /= sum;
        }
    }

    /// Classifies text (the last user turn first, then earlier turns as context).
    pub fn classify_text(&self, last: &str, context: &[&str]) -> Decision {
        let mut parts: Vec<(&str, f32)> = vec![(last, 1.0)];
        parts.extend(context.iter().map(|t| (*t, CONTEXT_WEIGHT)));
        let x = features(&parts);
        let mut probs = vec![0.0f32; self.domains.len()];
        self.probabilities(&x, &mut probs);
        let (best, confidence) =
            probs
                .iter()
                .copied()
                .enumerate()
                .fold(
                    (self.general, 0.0f32),
                    |acc, (i, p)| if p > acc.1 { (i, p) } else { acc },
                );
        let (domain, by) = if confidence >= self.threshold {
            (self.domains[best].clone(), "text")
        } else {
            (self.domains[self.general].clone(), "threshold")
        };
        Decision {
            domain,
            confidence,
            scores: self.domains.iter().cloned().zip(probs).collect(),
            by,
        }
    }

    /// Classifies a chat request: structure first, then its user turns' text.
    pub fn classify(&self, req: &ChatRequest) -> Decision {
        self.classify_messages(&req.messages(), req.has_tools)
    }

    /// Classifies a conversation already read as messages (the planner reads them once).
    pub fn classify_messages(&self, messages: &[Message<'_>], has_tools: bool) -> Decision {
        let last_user = messages.iter().rposition(|m| m.role == "user");
        let structural = |domain: &str, by| {
            self.domains.iter().position(|d| d == domain).map(|i| {
                let scores = self
                    .domains
                    .iter()
                    .enumerate()
                    .map(|(j, d)| (d.clone(), if i == j { 1.0 } else { 0.0 }))
                    .collect();
                Decision {
                    domain: domain.to_string(),
                    confidence: 1.0,
                    scores,
                    by,
                }
            })
        };
        if last_user.is_some_and(|i| messages[i].has_image()) {
            if let Some(d) = structural("vision", "image") {
                return d;
            }
        }
        if has_tools {
            if let Some(d) = structural("agentic", "tools") {
                return d;
            }
        }
        let texts: Vec<_> = messages
            .iter()
            .filter(|m| m.role == "user")
            .map(|m| m.text())
            .collect();
        let Some((last, earlier)) = texts.split_last() else {
            return self.classify_text("", &[]);
        };
        let context: Vec<&str> = earlier.iter().rev().take(3).map(|t| t.as_ref()).collect();
        self.classify_text(last, &context)
    }
}

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
fn clip(text: &str, max: usize, from_end: bool) -> &str {
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
fn features(texts: &[(&str, f32)]) -> Features {
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

/// SplitMix64 for the training shuffle: tiny and stable across versions, so a config always
/// trains the same classifier.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}
