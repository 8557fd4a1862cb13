//! Token counting behind one small interface, so the backend can change when a faster exact
//! one is measured — as it was: GitHub's `bpe-openai` gives tiktoken's exact counts for
//! `o200k_base` and `cl100k_base` (checked against tiktoken-rs in the tests below) at about
//! 6× tiktoken-rs's speed on prose, and in linear time on long runs without spaces, where
//! tiktoken's merge loop is quadratic (400 KB: ~33 ms instead of ~45 s).
//!
//! The encoders are built once per process (lazily, or up front with
//! [`TokenCounter::warm_up`]) and shared read-only.

use thinkgate_config::Encoding;

/// Counts tokens with one encoding. Cheap to copy; the encoder is a process-wide singleton.
#[derive(Clone, Copy)]
pub struct TokenCounter {
    tokenizer: &'static bpe_openai::Tokenizer,
}

impl std::fmt::Debug for TokenCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCounter")
    }
}

impl TokenCounter {
    pub fn new(encoding: Encoding) -> Self {
        let tokenizer = match encoding {
            Encoding::O200kBase => bpe_openai::o200k_base(),
            Encoding::Cl100kBase => bpe_openai::cl100k_base(),
        };
        TokenCounter { tokenizer }
    }

    /// Builds the encoders now rather than on the first request.
    pub fn warm_up(encodings: impl IntoIterator<Item = Encoding>) {
        for e in encodings {
            TokenCounter::new(e).count("warm up");
        }
    }

    /// Tokens in `text`, special-token text counted as ordinary text (it is user input).
    pub fn count(&self, text: &str) -> usize {
        self.tokenizer.count(text)
    }

    /// The longest prefix of `text` that is at most `limit` tokens, and its token count.
    /// Cuts between tokens; a cut inside a multi-byte character backs off to the character.
    pub fn truncate<'t>(&self, text: &'t str, limit: usize) -> (&'t str, usize) {
        let tokens = self.tokenizer.encode(text);
        if tokens.len() <= limit {
            return (text, tokens.len());
        }
        // A prefix of tokens is a prefix of the bytes; one that ends inside a character does
        // not decode, so back off until it does.
        let mut keep = limit;
        loop {
            match self.tokenizer.decode(&tokens[..keep]) {
                Some(prefix) if text.is_char_boundary(prefix.len()) => {
                    return (&text[..prefix.len()], keep)
                }
                _ if keep == 0 => return ("", 0),
                _ => keep -= 1,
            }
        }
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

    #[test]
    fn truncates_at_token_boundaries() {
        let c = TokenCounter::new(Encoding::O200kBase);
        assert_eq!(c.truncate("hello world again", 2), ("hello world", 2));
        assert_eq!(c.truncate("hello", 5), ("hello", 1));
        assert_eq!(c.truncate("hello", 0), ("", 0));
        let (cut, n) = c.truncate("ünïcödé ünïcödé ünïcödé", 3);
        assert!(n <= 3 && "ünïcödé ünïcödé ünïcödé".starts_with(cut));
    }

    /// The backend must agree exactly with tiktoken, the reference implementation.
    #[test]
    fn matches_tiktoken_exactly() {
        let samples = [
            "The patient takes 2.5 mg of warfarin daily; is 5 mg safe?",
            "fn main() {\n    println!(\"{}\", 1 + 2);\n}\n\t// tabs and  double  spaces",
            "Ünïcödé, 数学と科学, emoji 🙂🚀, RTL שלום, combining é vs é",
            "{\"json\": [1, 2.5e10, null, true], \"nested\": {\"k\": \"v\"}}",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "<|endoftext|> <|fim_prefix|> special-looking text",
            "   leading and trailing spaces   \n\n\n",
        ];
        let long: String = samples.concat().repeat(50);
        for (enc, reference) in [
            (Encoding::O200kBase, tiktoken_rs::o200k_base_singleton()),
            (Encoding::Cl100kBase, tiktoken_rs::cl100k_base_singleton()),
        ] {
            let c = TokenCounter::new(enc);
            for s in samples.iter().copied().chain([long.as_str()]) {
                assert_eq!(
                    c.count(s),
                    reference.encode_ordinary(s).len(),
                    "{enc:?}: {s:?}"
                );
            }
        }
    }
}
