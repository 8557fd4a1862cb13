//! The domain classifier: which task domain a request belongs to, with a confidence.
//!
//! Structure first — an image in the last user turn is `vision`, a `tools` array is
//! `agentic` — then a text model: multinomial logistic regression over two kinds of feature
//! of the last user turn (earlier user turns count at a fraction of the weight):
//!
//! - [`ngrams`]: hashed words, word pairs, character n-grams and punctuation — what the
//!   config's own examples and keywords say, so a domain a user adds is learnt from its
//!   examples alone;
//! - [`embedding`]: a static token-embedding table distilled from a multilingual sentence
//!   encoder — what the language says, so "port 8080", "sistine chapel" or a question in
//!   Hindi land near the examples they mean, though no example shares their words.
//!
//! Trained from the config's domain examples, descriptions and keywords when the config
//! loads (milliseconds, deterministic, no download); read-only afterwards, no IO.

pub mod embedding;
pub mod evaluate;
pub mod ngrams;

use thinkgate_config::Domain;

use crate::canonical::{ChatRequest, Message};
use embedding::StaticEmbeddings;
use ngrams::{clip, each_feature, features, Features, BUCKETS};

/// Weight of earlier user turns relative to the last one.
const CONTEXT_WEIGHT: f32 = 0.3;
/// Length of the pooled embedding fed to its head (the head's effective learning rate).
const EMBEDDING_NORM: f32 = 3.0;
/// Bytes of a turn's start and end the embedding reads: the topic is set early, and half of
/// what the n-grams read keeps a 2,000-token request near a short one's cost.
const EMBEDDING_HEAD_BYTES: usize = 768;
const EMBEDDING_TAIL_BYTES: usize = 256;
/// The embedding head: full-batch gradient descent steps, step size, L2.
const HEAD_STEPS: usize = 100;
const HEAD_MOMENTUM: f32 = 0.8;
const HEAD_RATE: f32 = 0.5;
const HEAD_L2: f32 = 1e-4;
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
    /// `BUCKETS` n-gram rows of `domains.len()` weights each, while training (emptied after).
    weights: Vec<f32>,
    /// The same weights as int8 times `scale`: a quarter of the bytes, so the rows a request
    /// touches at random stay in the core's cache (the f32 rows missed it and cost a third of
    /// a decision).
    quantized: Vec<i8>,
    scale: f32,
    embeddings: &'static StaticEmbeddings,
    bias: Vec<f32>,
    /// The embedding head: one row of `dims` weights per domain, then the biases. Its
    /// logits add to the n-gram model's (a product of the two experts).
    dense: Vec<f32>,
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

impl Classifier {
    /// Trains on the domains' examples, descriptions and keywords. `general` must be one of
    /// them (the config guarantees it).
    pub fn train(domains: &[Domain], threshold: f32) -> Classifier {
        let names: Vec<String> = domains.iter().map(|d| d.name.clone()).collect();
        let n = names.len().max(1);
        let general = names.iter().position(|d| d == "general").unwrap_or(0);
        let embeddings = StaticEmbeddings::builtin();
        let mut data: Vec<(Features, usize, f32)> = Vec::new();
        let mut dense_data: Vec<(Vec<f32>, usize, f32)> = Vec::new();
        for (label, d) in domains.iter().enumerate() {
            for e in &d.examples {
                dense_data.push((pooled(embeddings, &[(e.as_str(), 1.0)]), label, 1.0));
            }
            if !d.description.is_empty() {
                dense_data.push((
                    pooled(embeddings, &[(d.description.as_str(), 1.0)]),
                    label,
                    0.5,
                ));
            }
            for k in &d.keywords {
                dense_data.push((pooled(embeddings, &[(k.as_str(), 1.0)]), label, 0.5));
            }
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
            quantized: Vec::new(),
            scale: 0.0,
            embeddings,
            bias: vec![0.0; n],
            threshold,
            general,
            dense: dense_head(&dense_data, embeddings.dims(), n),
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
                for (k, p) in probs.iter_mut().enumerate() {
                    // `probs` becomes the gradient of the loss in each domain's logit.
                    *p = (*p - if k == *label { 1.0 } else { 0.0 }) * weight;
                    c.bias[k] -= 0.05 * *p;
                }
                // Feature-major: a feature's row of weights is contiguous.
                for (bucket, v) in x {
                    let at = *bucket as usize * n;
                    let rows = c.weights[at..at + n]
                        .iter_mut()
                        .zip(&mut grad_sq[at..at + n]);
                    for ((w, sq), g) in rows.zip(&probs) {
                        let gw = g * v + L2 * *w;
                        *sq += gw * gw;
                        *w -= LEARNING_RATE * gw / sq.sqrt();
                    }
                }
            }
        }
        let max = c.weights.iter().fold(0f32, |m, w| m.max(w.abs()));
        c.scale = max / 127.0;
        let inverse = if max > 0.0 { 127.0 / max } else { 0.0 };
        c.quantized = c
            .weights
            .iter()
            .map(|w| (w * inverse).round() as i8)
            .collect();
        c.weights = Vec::new();
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

    /// The n-gram model's probabilities for training features (no embedding head).
    fn probabilities(&self, x: &Features, out: &mut [f32]) {
        out.copy_from_slice(&self.bias);
        for (bucket, v) in x {
            self.add_row(*bucket, *v, out);
        }
        softmax(out);
    }

    /// `out += value × ` the n-gram weights of `bucket`.
    fn add_row(&self, bucket: u32, value: f32, out: &mut [f32]) {
        let n = out.len();
        let row = &self.weights[bucket as usize * n..][..n];
        for (o, w) in out.iter_mut().zip(row) {
            *o += w * value;
        }
    }

    /// Both models' probabilities for weighted texts. The n-gram logits are summed straight
    /// from the hashed features, without collecting them: normalising a text's features
    /// scales its logits, so the division comes once, at the end of the text.
    fn probabilities_of(&self, texts: &[(&str, f32)], out: &mut [f32]) {
        let n = out.len();
        out.copy_from_slice(&self.bias);
        let v = pooled(self.embeddings, texts);
        // One row of `dims` per domain, then the biases: as the head was trained.
        let (rows, bias) = self.dense.split_at(v.len() * n);
        for ((o, row), b) in out.iter_mut().zip(rows.chunks_exact(v.len())).zip(bias) {
            *o += b + dot(row, &v);
        }
        let mut text_logits = vec![0f32; n];
        for (text, weight) in texts {
            text_logits.iter_mut().for_each(|l| *l = 0.0);
            let squares = each_feature(text, |bucket, value| {
                let row = &self.quantized[bucket as usize * n..][..n];
                for (l, w) in text_logits.iter_mut().zip(row) {
                    *l += *w as f32 * value;
                }
            });
            if squares > 0.0 {
                let scale = self.scale * weight / squares.sqrt();
                for (o, l) in out.iter_mut().zip(&text_logits) {
                    *o += l * scale;
                }
            }
        }
        softmax(out);
    }

    /// Classifies text (the last user turn first, then earlier turns as context).
    pub fn classify_text(&self, last: &str, context: &[&str]) -> Decision {
        let mut parts: Vec<(&str, f32)> = vec![(last, 1.0)];
        parts.extend(context.iter().map(|t| (*t, CONTEXT_WEIGHT)));
        let mut probs = vec![0.0f32; self.domains.len()];
        self.probabilities_of(&parts, &mut probs);
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

/// Logits to probabilities, in place.
fn softmax(out: &mut [f32]) {
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

/// The pooled, unit-length embedding of weighted texts, scaled.
fn pooled(embeddings: &StaticEmbeddings, texts: &[(&str, f32)]) -> Vec<f32> {
    let mut v = vec![0f32; embeddings.dims()];
    for (text, weight) in texts {
        embeddings.pool_into(clip(text, EMBEDDING_HEAD_BYTES, false), *weight, &mut v);
        if text.len() > EMBEDDING_HEAD_BYTES + EMBEDDING_TAIL_BYTES {
            let tail = clip(text, EMBEDDING_TAIL_BYTES, true);
            embeddings.pool_into(tail, weight * 0.5, &mut v);
        }
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x *= EMBEDDING_NORM / norm);
    }
    v
}

/// Multinomial logistic regression on the pooled embeddings: full-batch gradient descent
/// with L2 and momentum (dense features want it; AdaGrad suits the sparse ones).
fn dense_head(data: &[(Vec<f32>, usize, f32)], d: usize, n: usize) -> Vec<f32> {
    let (iters, lr, l2) = (HEAD_STEPS, HEAD_RATE, HEAD_L2);
    let total: f32 = data.iter().map(|r| r.2).sum::<f32>().max(1e-9);
    // Domain-major (one row of `d` weights per domain, then the `n` biases), so every
    // inner loop runs over the dimensions and vectorizes.
    let mut w = vec![0f32; (d + 1) * n];
    let mut grad = vec![0f32; (d + 1) * n];
    let mut velocity = vec![0f32; (d + 1) * n];
    let mut z = vec![0f32; n];
    for _ in 0..iters {
        grad.iter_mut().for_each(|g| *g = 0.0);
        for (x, label, weight) in data {
            let (rows, bias) = w.split_at(d * n);
            for ((zk, row), b) in z.iter_mut().zip(rows.chunks_exact(d)).zip(bias) {
                *zk = b + dot(row, x);
            }
            let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for v in z.iter_mut() {
                *v = (*v - max).exp();
                sum += *v;
            }
            for (k, zk) in z.iter_mut().enumerate() {
                *zk = (*zk / sum - if k == *label { 1.0 } else { 0.0 }) * weight / total;
            }
            let (rows, bias) = grad.split_at_mut(d * n);
            for ((row, zk), b) in rows.chunks_exact_mut(d).zip(&z).zip(bias) {
                for (g, xj) in row.iter_mut().zip(x) {
                    *g += zk * xj;
                }
                *b += zk;
            }
        }
        // Heavy-ball momentum: close to the optimum in a sixth of the steps.
        for i in 0..(d + 1) * n {
            let decay = if i < d * n { l2 * w[i] } else { 0.0 };
            velocity[i] = HEAD_MOMENTUM * velocity[i] - lr * (grad[i] + decay);
            w[i] += velocity[i];
        }
    }
    w
}

/// `a · b` in eight independent sums, which the compiler keeps in vector registers (one
/// running sum would fix the order of the additions and keep the loop scalar).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (xa, xb) in ca.zip(cb) {
        for i in 0..8 {
            lanes[i] += xa[i] * xb[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
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
