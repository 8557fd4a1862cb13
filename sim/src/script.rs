//! What a simulated model will say: a deterministic script of tokens for one request.

use thinkgate_config::{ReasoningStyle, SimProfile};

/// Words that are one token each in both `o200k_base` and `cl100k_base`, so the simulator's
/// usage is exact and tests can check counting against it.
pub const WORDS: [&str; 48] = [
    " the", " model", " answer", " think", " step", " value", " first", " then", " result",
    " check", " so", " we", " have", " this", " is", " a", " number", " next", " case", " and",
    " it", " that", " for", " with", " can", " be", " now", " more", " test", " data", " time",
    " all", " one", " two", " three", " good", " way", " idea", " plan", " list", " point",
    " part", " line", " word", " end", " true", " also", " here",
];

/// SplitMix64: tiny, fast, and stable across versions (unlike `rand`'s generators).
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn word(&mut self) -> &'static str {
        WORDS[(self.next_u64() % WORDS.len() as u64) as usize]
    }
}

/// FNV-1a, to fold the request into the seed.
pub fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The tokens of one response, and how it ends.
#[derive(Debug, Clone)]
pub struct Script {
    pub reasoning: Vec<&'static str>,
    pub answer: Vec<&'static str>,
    /// A tool call instead of (after) the answer: name and JSON arguments split in pieces.
    pub tool_call: Option<(String, Vec<String>)>,
    pub finish_reason: &'static str,
    pub style: ReasoningStyle,
}

impl Script {
    pub fn new(
        profile: &SimProfile,
        rng: &mut Rng,
        cap: Option<u64>,
        tool: Option<String>,
    ) -> Script {
        let mut reasoning_n = if profile.reasoning == ReasoningStyle::None {
            0
        } else {
            profile.reasoning_tokens as u64
        };
        let mut answer_n = if tool.is_some() {
            0
        } else {
            profile.answer_tokens as u64
        };
        let tool_call = tool.map(|name| {
            let words: Vec<&str> = (0..3).map(|_| rng.word().trim_start()).collect();
            let args = format!("{{\"query\": \"{}\"}}", words.join(" "));
            // Split the arguments the way servers stream them: a few characters at a time.
            let pieces = args
                .as_bytes()
                .chunks(6)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect();
            (name, pieces)
        });
        let mut finish_reason = if tool_call.is_some() {
            "tool_calls"
        } else {
            "stop"
        };
        if let Some(cap) = cap {
            if reasoning_n + answer_n > cap {
                reasoning_n = reasoning_n.min(cap);
                answer_n = cap - reasoning_n;
                finish_reason = "length";
            }
        }
        let reasoning = (0..reasoning_n).map(|_| rng.word()).collect();
        let answer = (0..answer_n).map(|_| rng.word()).collect();
        Script {
            reasoning,
            answer,
            tool_call: if finish_reason == "length" {
                None
            } else {
                tool_call
            },
            finish_reason,
            style: profile.reasoning,
        }
    }

    /// Ends the answer the way a safety filter does: half of it shown, no tool call.
    pub fn filter(&mut self) {
        self.answer.truncate(self.answer.len() / 2);
        self.tool_call = None;
        self.finish_reason = "content_filter";
    }

    pub fn answer_text(&self) -> String {
        self.answer.concat()
    }

    pub fn reasoning_text(&self) -> String {
        self.reasoning.concat()
    }

    pub fn tool_arguments(&self) -> Option<String> {
        self.tool_call.as_ref().map(|(_, p)| p.concat())
    }
}
