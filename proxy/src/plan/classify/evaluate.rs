//! Measuring the classifier: labelled rows in, macro accuracy, a confusion matrix and
//! calibration out. Used by `thinkgate classify --eval` (a team's own traffic), by
//! `--cross-validate` (k folds of the config's own examples, the only data constants may be
//! tuned on) and by the held-out test. Pure computation, no IO.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{json, Value};
use thinkgate_config::Domain;

use super::Classifier;
use crate::ingress::parse_chat;

/// One labelled request: the last user turn's text, earlier user turns, and its structure.
#[derive(Debug, Clone)]
pub struct LabeledRow {
    pub domain: String,
    pub text: String,
    pub turns: Vec<String>,
    pub image: bool,
    pub tools: bool,
    /// ISO 639-1 code; `en` when absent.
    pub lang: String,
}

impl LabeledRow {
    /// Reads JSON lines: `{"domain", "text", "turns"?, "image"?, "tools"?, "lang"?}`.
    pub fn parse_lines(text: &str) -> Result<Vec<LabeledRow>, String> {
        let mut rows = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let at = |what: &str| format!("line {}: {what}", n + 1);
            let v: Value = serde_json::from_str(line).map_err(|e| at(&e.to_string()))?;
            let string = |key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
            rows.push(LabeledRow {
                domain: string("domain").ok_or_else(|| at("no \"domain\" string"))?,
                text: string("text").ok_or_else(|| at("no \"text\" string"))?,
                turns: match v.get("turns") {
                    None => Vec::new(),
                    Some(t) => t
                        .as_array()
                        .and_then(|a| a.iter().map(|s| s.as_str().map(str::to_string)).collect())
                        .ok_or_else(|| at("\"turns\" must be an array of strings"))?,
                },
                image: v.get("image") == Some(&Value::Bool(true)),
                tools: v.get("tools") == Some(&Value::Bool(true)),
                lang: string("lang").unwrap_or_else(|| "en".to_string()),
            });
        }
        Ok(rows)
    }

    /// Decided by structure (an image or tools), not by the text model.
    pub fn structural(&self) -> bool {
        self.image || self.tools
    }

    /// The chat request a client would send for this row.
    pub fn request_body(&self) -> Value {
        let mut messages = Vec::new();
        for turn in &self.turns {
            messages.push(json!({"role": "user", "content": turn}));
            messages.push(json!({"role": "assistant", "content": "Sure, go on."}));
        }
        let content = if self.image {
            json!([{"type": "text", "text": self.text},
                   {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}])
        } else {
            json!(self.text)
        };
        messages.push(json!({"role": "user", "content": content}));
        let mut body = json!({"model": "auto", "messages": messages});
        if self.tools {
            body["tools"] = json!([{"type": "function", "function": {
                "name": "act", "parameters": {"type": "object"}}}]);
        }
        body
    }
}

/// What the classifier did with one row.
#[derive(Debug, Clone)]
struct Outcome {
    want: String,
    /// The decision (after the confidence threshold).
    got: String,
    /// The most probable domain and its probability (before the threshold).
    top: String,
    confidence: f32,
    structural: bool,
    english: bool,
}

/// The outcomes of a set of rows, with the figures drawn from them.
#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    outcomes: Vec<Outcome>,
    /// Rows whose text no request could be made of (counted as misses).
    pub errors: Vec<String>,
}

/// Confidence bins for calibration: [lower, upper).
const BINS: [(f32, f32); 5] = [(0.0, 0.3), (0.3, 0.5), (0.5, 0.7), (0.7, 0.9), (0.9, 1.01)];

impl Evaluation {
    /// Classifies every row as the server would.
    pub fn run(classifier: &Classifier, rows: &[LabeledRow]) -> Evaluation {
        let mut eval = Evaluation::default();
        for row in rows {
            let body = row.request_body().to_string();
            match parse_chat(body.as_bytes()) {
                Ok(req) => {
                    let d = classifier.classify(&req);
                    let (top, confidence) = d.scores.iter().fold(("", -1.0f32), |acc, (k, p)| {
                        if *p > acc.1 {
                            (k.as_str(), *p)
                        } else {
                            acc
                        }
                    });
                    eval.outcomes.push(Outcome {
                        want: row.domain.clone(),
                        top: top.to_string(),
                        got: d.domain,
                        confidence,
                        structural: row.structural(),
                        english: row.lang == "en",
                    });
                }
                Err(e) => eval.errors.push(format!("{}: {}", row.text, e.message)),
            }
        }
        eval
    }

    /// `folds`-fold cross-validation over the domains' examples: each fold's examples are
    /// held out, the rest (with every description and keyword) trains a classifier, and the
    /// held-out examples are classified as plain requests.
    pub fn cross_validate(domains: &[Domain], threshold: f32, folds: usize) -> Evaluation {
        let folds = folds.max(2);
        let mut eval = Evaluation::default();
        for fold in 0..folds {
            let mut held = Vec::new();
            let train: Vec<Domain> = domains
                .iter()
                .map(|d| {
                    let mut d = d.clone();
                    let (out, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut d.examples)
                        .into_iter()
                        .enumerate()
                        .partition(|(i, _)| i % folds == fold);
                    held.extend(out.into_iter().map(|(_, text)| LabeledRow {
                        domain: d.name.clone(),
                        text,
                        turns: Vec::new(),
                        image: false,
                        tools: false,
                        lang: "en".to_string(),
                    }));
                    d.examples = keep.into_iter().map(|(_, t)| t).collect();
                    d
                })
                .collect();
            let classifier = Classifier::train(&train, threshold);
            let part = Evaluation::run(&classifier, &held);
            eval.outcomes.extend(part.outcomes);
            eval.errors.extend(part.errors);
        }
        eval
    }

    pub fn rows(&self) -> usize {
        self.outcomes.len() + self.errors.len()
    }

    /// Mean per-domain recall of the decisions over the rows `keep` selects.
    fn macro_over(&self, keep: impl Fn(&Outcome) -> bool) -> Option<f64> {
        let mut per: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for o in self.outcomes.iter().filter(|o| keep(o)) {
            let e = per.entry(o.want.as_str()).or_default();
            e.1 += 1;
            if o.got == o.want {
                e.0 += 1;
            }
        }
        if per.is_empty() {
            return None;
        }
        let sum: f64 = per.values().map(|(r, n)| *r as f64 / *n as f64).sum();
        Some(sum / per.len() as f64)
    }

    /// Macro accuracy on rows decided by their text.
    pub fn text_macro_accuracy(&self) -> Option<f64> {
        self.macro_over(|o| !o.structural)
    }

    /// Macro accuracy on rows with an image or tools.
    pub fn structural_macro_accuracy(&self) -> Option<f64> {
        self.macro_over(|o| o.structural)
    }

    /// Macro accuracy on text rows not in English.
    pub fn other_languages_macro_accuracy(&self) -> Option<f64> {
        self.macro_over(|o| !o.structural && !o.english)
    }
}

fn percent(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{:.1} %", v * 100.0))
}

impl fmt::Display for Evaluation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text: Vec<&Outcome> = self.outcomes.iter().filter(|o| !o.structural).collect();
        let structural = self.outcomes.len() - text.len();
        let other = text.iter().filter(|o| !o.english).count();
        writeln!(
            f,
            "macro accuracy, text rows:       {} ({} rows, {} not in English: {})",
            percent(self.text_macro_accuracy()),
            text.len(),
            other,
            percent(self.other_languages_macro_accuracy()),
        )?;
        writeln!(
            f,
            "macro accuracy, structural rows: {} ({} rows with an image or tools)",
            percent(self.structural_macro_accuracy()),
            structural,
        )?;
        if !self.errors.is_empty() {
            writeln!(f, "rows that are not valid requests: {}", self.errors.len())?;
        }
        let mut domains: Vec<&str> = text
            .iter()
            .flat_map(|o| [o.want.as_str(), o.got.as_str()])
            .collect();
        domains.sort_unstable();
        domains.dedup();
        writeln!(f, "\nconfusion, text rows (row: labelled, column: decided)")?;
        write!(f, "{:>10}", "")?;
        for d in &domains {
            write!(f, " {:>9}", &d[..d.len().min(9)])?;
        }
        writeln!(f, " {:>7}", "recall")?;
        for want in &domains {
            let row: Vec<&&Outcome> = text.iter().filter(|o| o.want == *want).collect();
            if row.is_empty() {
                continue;
            }
            write!(f, "{:>10}", &want[..want.len().min(10)])?;
            for got in &domains {
                write!(f, " {:>9}", row.iter().filter(|o| o.got == *got).count())?;
            }
            let right = row.iter().filter(|o| o.got == o.want).count();
            writeln!(f, " {:>6.1}%", right as f64 * 100.0 / row.len() as f64)?;
        }
        writeln!(
            f,
            "\ncalibration, text rows (the most probable domain before the threshold)"
        )?;
        writeln!(f, "{:>12} {:>6} {:>9}", "confidence", "rows", "accuracy")?;
        for (lo, hi) in BINS {
            let bin: Vec<&&Outcome> = text
                .iter()
                .filter(|o| o.confidence >= lo && o.confidence < hi)
                .collect();
            let right = bin.iter().filter(|o| o.top == o.want).count();
            let acc = if bin.is_empty() {
                "-".to_string()
            } else {
                format!("{:.1} %", right as f64 * 100.0 / bin.len() as f64)
            };
            writeln!(
                f,
                "{:>5.1}–{:<5.1} {:>6} {:>9}",
                lo,
                hi.min(1.0),
                bin.len(),
                acc
            )?;
        }
        Ok(())
    }
}
