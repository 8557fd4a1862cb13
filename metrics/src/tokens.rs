//! Token counting behind one small interface, so the backend can change if a faster exact
//! one is measured.
//!
//! tiktoken's encoders cost 100+ ms to build, so each is built once per process (lazily, on
//! first use, or up front with [`TokenCounter::warm_up`]) and shared read-only after that.

use thinkgate_config::Encoding;
use tiktoken_rs::CoreBPE;

/// Counts tokens with one tiktoken encoding. Cheap to copy; the encoder is a process-wide
/// singleton.
#[derive(Clone, Copy)]
pub struct TokenCounter {
    bpe: &'static CoreBPE,
}

impl std::fmt::Debug for TokenCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCounter")
    }
}

impl TokenCounter {
    pub fn new(encoding: Encoding) -> Self {
        let bpe = match encoding {
            Encoding::O200kBase => tiktoken_rs::o200k_base_singleton(),
            Encoding::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
        };
        TokenCounter { bpe }
    }

    /// Builds the encoders now rather than on the first request.
    pub fn warm_up(encodings: impl IntoIterator<Item = Encoding>) {
        for e in encodings {
            TokenCounter::new(e).count("warm up");
        }
    }

    /// Tokens in `text`, special-token text counted as ordinary text (it is user input).
    pub fn count(&self, text: &str) -> usize {
        self.bpe.encode_ordinary(text).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_known_strings() {
        let c = TokenCounter::new(Encoding::O200kBase);
        assert_eq!(c.count(""), 0);
        assert_eq!(c.count("hello world"), 2);
        let c = TokenCounter::new(Encoding::Cl100kBase);
        assert_eq!(c.count("hello world"), 2);
        // Special-token text is user text, not a control token.
        assert!(c.count("<|endoftext|>") > 1);
    }
}
