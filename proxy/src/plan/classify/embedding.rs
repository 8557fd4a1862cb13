//! Static token embeddings: what a sentence encoder knows about words, as a lookup table.
//!
//! The table (`proxy/assets/static-embeddings.bin`, built by `proxy/assets/distill/`) holds
//! 160-dimensional int4 vectors, reduced by PCA, of the encoder's output for ~147,000
//! frequent words of 20 languages, each alone, and for ~51,000 SentencePiece pieces of
//! multilingual-e5-small's vocabulary. A text is read word by word (lowercased, letters and marks): a listed word is
//! one lookup; another is segmented into pieces (the model's normalization map, `▁` at word
//! start, the most probable segmentation); a run of Chinese or Japanese characters, which
//! has no spaces, is matched greedily against the word list. The vectors are pooled with
//! weights that favour rare entries (smooth inverse frequency), so "port 8080" or "sistine
//! chapel" land where the encoder put them.
//!
//! Parsed once per process ([`StaticEmbeddings::builtin`]); read-only afterwards, no IO.
//! Reading is bounded by the caller (it passes clipped text) and by [`MAX_PIECES`].

use std::sync::OnceLock;

/// The distilled table, compiled into the binary so `thinkgate classify` and every server
/// start have it without a file to find.
static BUILTIN: &[u8] = include_bytes!("../../../assets/static-embeddings.bin");
const MAGIC: &[u8; 8] = b"TGSE0003";
/// Word entries are keyed with this byte before the word, apart from pieces.
const WORD_TAG: u8 = 0x01;
/// Longest word matched inside a run of characters without spaces.
const MAX_RUN_WORD_CHARS: usize = 4;
/// SentencePiece's word-start marker.
const WORD_START: char = '\u{2581}';
/// Pieces pooled per text at most.
pub const MAX_PIECES: usize = 384;
/// Characters of a word read at most (the rest of a longer one is skipped).
const MAX_WORD_CHARS: usize = 64;
/// Characters segmented at once: a longer run without spaces (Chinese, a hash, a URL) is cut
/// into windows of this many, so segmentation stays linear.
const WINDOW_CHARS: usize = 32;
/// The smooth-inverse-frequency constant: a piece of probability `p` weighs `a / (a + p)`.
const SIF_A: f32 = 1e-4;

/// Why the table could not be read (only a corrupt build produces one).
#[derive(Debug)]
pub struct BadTable(&'static str);

impl std::fmt::Display for BadTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the static embedding table is malformed: {}", self.0)
    }
}

/// The parsed table.
pub struct StaticEmbeddings {
    dims: usize,
    /// Bits per value: 8 (one int8 a value) or 4 (two per byte: dimension j in byte j's low
    /// nibble, dimension j + dims/2 in its high one).
    bits: usize,
    /// Piece `i` is `blob[offsets[i]..offsets[i + 1]]` (UTF-8).
    offsets: Vec<u32>,
    blob: &'static [u8],
    /// Per piece: the quantization scale times its frequency weight.
    weights: Vec<f32>,
    /// Log-probability of each piece (the segmentation's score).
    scores: Vec<f32>,
    /// `pieces × dims` signed values of `bits` bits.
    vectors: &'static [u8],
    /// Open addressing over piece bytes: the hash's top 32 bits, then the piece index + 1
    /// (0 is empty). A probe compares hashes, not bytes: a hit costs no read of the piece
    /// table, which is out of cache (51 of the 64 bits decide, a false match among 200,000
    /// entries is vanishingly rare, and would only pool a neighbour's vector).
    slots: Vec<u64>,
    /// The normalization map, sorted by code point: (code point, start, end) into `norm_out`.
    norm: Vec<(u32, u32, u32)>,
    norm_out: Vec<char>,
    max_piece_bytes: usize,
}

impl std::fmt::Debug for StaticEmbeddings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticEmbeddings")
            .field("pieces", &self.scores.len())
            .field("dims", &self.dims)
            .finish_non_exhaustive()
    }
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BadTable> {
        let end = self.at.checked_add(n).ok_or(BadTable("length overflow"))?;
        let out = self.data.get(self.at..end).ok_or(BadTable("truncated"))?;
        self.at = end;
        Ok(out)
    }
    fn u32(&mut self) -> Result<u32, BadTable> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u32s(&mut self, n: usize) -> Result<Vec<u32>, BadTable> {
        let bytes = self.take(n.checked_mul(4).ok_or(BadTable("length overflow"))?)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }
    fn f32s(&mut self, n: usize) -> Result<Vec<f32>, BadTable> {
        Ok(self.u32s(n)?.into_iter().map(f32::from_bits).collect())
    }
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a, continued from `h`: a string's hash extends its prefix's, so segmentation hashes
/// every substring it tries in one step each.
fn fnv_extend(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn fnv(bytes: &[u8]) -> u64 {
    fnv_extend(FNV_START, bytes)
}

impl StaticEmbeddings {
    /// The table compiled into the binary, parsed on first use.
    pub fn builtin() -> &'static StaticEmbeddings {
        static TABLE: OnceLock<StaticEmbeddings> = OnceLock::new();
        TABLE.get_or_init(|| match StaticEmbeddings::parse(BUILTIN) {
            Ok(t) => t,
            // The bytes are part of the build; a test parses them, so this cannot ship.
            Err(e) => panic!("{e}"),
        })
    }

    /// Parses a table in the format `distill.py` writes (see its README).
    pub fn parse(data: &'static [u8]) -> Result<StaticEmbeddings, BadTable> {
        let mut r = Reader { data, at: 0 };
        if r.take(8)? != MAGIC {
            return Err(BadTable("wrong magic"));
        }
        let dims = r.u32()? as usize;
        let bits = r.u32()? as usize;
        let pieces = r.u32()? as usize;
        let blob_len = r.u32()? as usize;
        let norm_len = r.u32()? as usize;
        let norm_out_len = r.u32()? as usize;
        if dims == 0 || pieces == 0 {
            return Err(BadTable("empty"));
        }
        if !(bits == 8 || bits == 4 && dims.is_multiple_of(2)) {
            return Err(BadTable("values are neither int8 nor int4 in pairs"));
        }
        let offsets = r.u32s(pieces + 1)?;
        if offsets.windows(2).any(|w| w[0] > w[1]) || offsets[pieces] as usize != blob_len {
            return Err(BadTable("piece offsets out of order"));
        }
        let blob = r.take(blob_len)?;
        let scores = r.f32s(pieces)?;
        let scales = r.f32s(pieces)?;
        let row_bytes = dims * bits / 8;
        let vectors = r.take(
            pieces
                .checked_mul(row_bytes)
                .ok_or(BadTable("length overflow"))?,
        )?;
        let norm_cp = r.u32s(norm_len)?;
        let norm_off = r.u32s(norm_len + 1)?;
        let norm_out: Vec<char> = r
            .u32s(norm_out_len)?
            .into_iter()
            .map(|c| char::from_u32(c).ok_or(BadTable("normalization to a non-character")))
            .collect::<Result<_, _>>()?;
        if norm_off.windows(2).any(|w| w[0] > w[1]) || norm_off[norm_len] as usize != norm_out_len {
            return Err(BadTable("normalization offsets out of order"));
        }
        let norm = (0..norm_len)
            .map(|i| (norm_cp[i], norm_off[i], norm_off[i + 1]))
            .collect();
        let weights = scores
            .iter()
            .zip(&scales)
            .map(|(s, q)| q * SIF_A / (SIF_A + s.exp()))
            .collect();
        let size = (pieces * 2).next_power_of_two();
        let mut slots = vec![0u64; size];

        let mut max_piece_bytes = 1;
        for i in 0..pieces {
            let piece = &blob[offsets[i] as usize..offsets[i + 1] as usize];
            max_piece_bytes = max_piece_bytes.max(piece.len());
            let h = fnv(piece);
            let mut at = h as usize & (size - 1);
            while slots[at] != 0 {
                if slots[at] >> 32 == h >> 32 && piece == blob_piece(blob, &offsets, slots[at]) {
                    return Err(BadTable("a piece is listed twice"));
                }
                at = (at + 1) & (size - 1);
            }
            slots[at] = (h >> 32) << 32 | (i as u64 + 1);
        }
        Ok(StaticEmbeddings {
            dims,
            bits,
            offsets,
            blob,
            weights,
            scores,
            vectors,
            slots,
            norm,
            norm_out,
            max_piece_bytes,
        })
    }

    pub fn dims(&self) -> usize {
        self.dims
    }

    fn piece(&self, i: usize) -> &[u8] {
        &self.blob[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    fn lookup(&self, bytes: &[u8]) -> Option<usize> {
        self.lookup_hash(fnv(bytes))
    }

    /// The entry whose bytes hash to `h` ([`fnv`]).
    fn lookup_hash(&self, h: u64) -> Option<usize> {
        let mask = self.slots.len() - 1;
        let mut at = h as usize & mask;
        loop {
            match self.slots[at] {
                0 => return None,
                v if v >> 32 == h >> 32 => return Some((v as u32) as usize - 1),
                _ => at = (at + 1) & mask,
            }
        }
    }

    fn normalize(&self, c: char, out: &mut String) {
        // Printable ASCII is never remapped; skip the search for it.
        if (' '..='~').contains(&c) {
            out.push(c);
            return;
        }
        match self.norm.binary_search_by_key(&(c as u32), |n| n.0) {
            Ok(i) => {
                let (_, start, end) = self.norm[i];
                out.extend(&self.norm_out[start as usize..end as usize]);
            }
            Err(_) => out.push(c),
        }
    }

    /// Adds the pooled vector of `text`'s entries, times `weight`, into `out` (`dims` long),
    /// and returns how many entries it read.
    pub fn pool_into(&self, text: &str, weight: f32, out: &mut [f32]) -> usize {
        let mut sum = vec![0f32; self.dims];
        let count = self.entries(text, |id| self.add(id, &mut sum));
        let norm = sum.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            for (o, v) in out.iter_mut().zip(&sum) {
                *o += weight * v / norm;
            }
        }
        count
    }

    /// Calls `each` with the entry of every word of `text` (or its pieces), at most
    /// [`MAX_PIECES`] times; returns how many.
    fn entries(&self, text: &str, mut each: impl FnMut(usize)) -> usize {
        let mut count = 0;
        let mut emit = |id: usize, count: &mut usize| {
            if *count < MAX_PIECES {
                each(id);
                *count += 1;
            }
        };
        let mut word: Vec<char> = Vec::with_capacity(MAX_WORD_CHARS);
        let mut key: Vec<u8> = Vec::with_capacity(4 * MAX_WORD_CHARS + 1);
        let mut ids = Vec::new();
        let mut piece = String::new();
        let mut chars = text.chars().peekable();
        while count < MAX_PIECES {
            // The next word: a run of letters, digits and marks, lowercased and bounded.
            while chars.next_if(|c| !word_char(*c)).is_some() {}
            word.clear();
            while let Some(c) = chars.next_if(|c| word_char(*c)) {
                if word.len() < MAX_WORD_CHARS {
                    // ASCII first: the common case, without Unicode tables.
                    if c.is_ascii() {
                        word.push(c.to_ascii_lowercase());
                    } else if caseless_letter(c) {
                        word.push(c);
                    } else if let Some(lower) = latin1_lowercase(c) {
                        word.push(lower);
                    } else {
                        word.extend(c.to_lowercase());
                    }
                }
            }
            if word.is_empty() {
                break;
            }
            if word.iter().any(|c| unspaced(*c)) {
                self.run_entries(&word, &mut |id| emit(id, &mut count));
                continue;
            }
            word_key(&word, &mut key);
            if let Some(id) = self.lookup(&key) {
                emit(id, &mut count);
                continue;
            }
            piece.clear();
            piece.push(WORD_START);
            for c in &word {
                self.normalize(*c, &mut piece);
            }
            ids.clear();
            self.segment(&piece, &mut ids);
            for &id in &ids {
                emit(id, &mut count);
            }
        }
        count
    }

    /// A run of characters written without spaces: the longest listed word at each position
    /// (up to [`MAX_RUN_WORD_CHARS`]), else the character's piece.
    fn run_entries(&self, run: &[char], each: &mut impl FnMut(usize)) {
        let mut at = 0;
        while at < run.len() {
            let longest = (at + MAX_RUN_WORD_CHARS).min(run.len());
            let mut h = fnv(&[WORD_TAG]);
            let mut hit = None;
            let mut buf = [0u8; 4];
            for end in at + 1..=longest {
                h = fnv_extend(h, run[end - 1].encode_utf8(&mut buf).as_bytes());
                if let Some(id) = self.lookup_hash(h) {
                    hit = Some((id, end));
                }
            }
            match hit {
                Some((id, end)) => {
                    each(id);
                    at = end;
                }
                None => {
                    let mut buf = [0u8; 4];
                    if let Some(id) = self.lookup(run[at].encode_utf8(&mut buf).as_bytes()) {
                        each(id);
                    }
                    at += 1;
                }
            }
        }
    }

    fn add(&self, id: usize, sum: &mut [f32]) {
        let w = self.weights[id];
        let row_bytes = self.dims * self.bits / 8;
        let row = &self.vectors[id * row_bytes..][..row_bytes];
        if self.bits == 8 {
            for (s, q) in sum.iter_mut().zip(row) {
                *s += w * (*q as i8) as f32;
            }
            return;
        }
        // Byte j holds dimension j (low nibble) and j + dims/2 (high): two contiguous halves.
        let (low, high) = sum.split_at_mut(self.dims / 2);
        for ((l, h), q) in low.iter_mut().zip(high.iter_mut()).zip(row) {
            // Each nibble sign-extended: shift it to the top of an i8, then back down.
            *l += w * (((*q << 4) as i8) >> 4) as f32;
            *h += w * ((*q as i8) >> 4) as f32;
        }
    }

    /// The most probable segmentation of one word (it starts with the marker) into known
    /// pieces; characters no piece covers are skipped. A whole-word hit costs one lookup.
    fn segment(&self, word: &str, ids: &mut Vec<usize>) {
        if let Some(id) = self.lookup(word.as_bytes()) {
            ids.push(id);
            return;
        }
        // Windows of at most WINDOW_CHARS characters, their bounds on the stack.
        let mut bounds = [0usize; WINDOW_CHARS + 1];
        let mut len = 1;
        for (at, _) in word.char_indices().skip(1) {
            bounds[len] = at;
            len += 1;
            if len == WINDOW_CHARS + 1 {
                self.viterbi(word, &bounds[..len], ids);
                bounds[0] = at;
                len = 1;
            }
        }
        bounds[len] = word.len();
        self.viterbi(word, &bounds[..=len], ids);
    }

    /// Viterbi over the characters between `bounds` (byte offsets into `word`).
    fn viterbi(&self, word: &str, bounds: &[usize], ids: &mut Vec<usize>) {
        let n = bounds.len() - 1;
        // best[i]: score of the best segmentation of the first i characters; from[i]: where
        // its last piece starts and which piece it is (None: an uncovered character).
        let mut best = [f32::NEG_INFINITY; WINDOW_CHARS + 1];
        let mut from = [(0usize, None::<usize>); WINDOW_CHARS + 1];
        best[0] = 0.0;
        let unknown = -30.0;
        for i in 0..n {
            if best[i] == f32::NEG_INFINITY {
                continue;
            }
            let mut h = FNV_START;
            for e in i + 1..=n {
                if bounds[e] - bounds[i] > self.max_piece_bytes {
                    break;
                }
                h = fnv_extend(h, &word.as_bytes()[bounds[e - 1]..bounds[e]]);
                if let Some(id) = self.lookup_hash(h) {
                    let s = best[i] + self.scores[id];
                    if s > best[e] {
                        best[e] = s;
                        from[e] = (i, Some(id));
                    }
                }
            }
            if best[i] + unknown > best[i + 1] {
                best[i + 1] = best[i] + unknown;
                from[i + 1] = (i, None);
            }
        }
        let first = ids.len();
        let mut at = n;
        while at > 0 {
            let (prev, id) = from[at];
            if let Some(id) = id {
                ids.push(id);
            }
            at = prev;
        }
        ids[first..].reverse();
    }

    /// The entries a text is read as (a word, or a piece with `▁` at word start), for tests
    /// and for checking the tokenizer by eye.
    pub fn pieces(&self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.entries(text, |id| {
            let bytes = self.piece(id);
            let bytes = bytes.strip_prefix(&[WORD_TAG]).unwrap_or(bytes);
            out.push(String::from_utf8_lossy(bytes).into_owned());
        });
        out
    }
}

/// The bytes of the piece a slot holds (while building the slots, before `self` exists).
fn blob_piece<'a>(blob: &'a [u8], offsets: &[u32], slot: u64) -> &'a [u8] {
    let i = (slot as u32) as usize - 1;
    &blob[offsets[i] as usize..offsets[i + 1] as usize]
}

/// The table key of a listed word.
fn word_key(word: &[char], key: &mut Vec<u8>) {
    key.clear();
    key.push(WORD_TAG);
    let mut buf = [0u8; 4];
    for c in word {
        if c.is_ascii() {
            key.push(*c as u8);
        } else {
            key.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
}

/// Characters words are made of: letters, digits and combining marks (Devanagari's vowel
/// signs are marks, not letters; so are the accents of decomposed Latin text).
fn word_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric();
    }
    caseless_letter(c)
        || latin1_lowercase(c).is_some()
        || c.is_alphanumeric()
        || matches!(c as u32, 0x0300..=0x036F | 0x0900..=0x0DFF | 0x0E00..=0x0EFF | 0x1000..=0x109F | 0x3099..=0x309A)
}

/// A Latin-1 letter's lowercase, without Unicode tables (`None`: not a Latin-1 letter; `×`
/// and `÷` are symbols; `ª`, `µ`, `º`, `ß` and `ÿ` are their own lowercase).
pub(super) fn latin1_lowercase(c: char) -> Option<char> {
    match c as u32 {
        0xAA | 0xB5 | 0xBA => Some(c),
        0xD7 | 0xF7 => None,
        0xC0..=0xDE => char::from_u32(c as u32 + 0x20),
        0xDF..=0xFF => Some(c),
        _ => None,
    }
}

/// Kana and the common ideographs: letters without case, told apart without Unicode tables.
pub(super) fn caseless_letter(c: char) -> bool {
    matches!(c as u32, 0x3041..=0x3096 | 0x30A1..=0x30FA | 0x4E00..=0x9FFF)
}

/// Scripts written without spaces between words (kana and CJK ideographs).
fn unspaced(c: char) -> bool {
    matches!(c as u32, 0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &str, b: &str) -> f32 {
        let t = StaticEmbeddings::builtin();
        let mut x = vec![0.0; t.dims()];
        let mut y = vec![0.0; t.dims()];
        t.pool_into(a, 1.0, &mut x);
        t.pool_into(b, 1.0, &mut y);
        x.iter().zip(&y).map(|(a, b)| a * b).sum()
    }

    #[test]
    fn the_builtin_table_parses_and_segments_like_sentencepiece() {
        let t = StaticEmbeddings::builtin();
        assert_eq!(t.dims(), 160);
        // Listed words are one entry each, whatever their case; punctuation is not read.
        assert_eq!(t.pieces("Hello, world!"), ["hello", "world"]);
        // A word not in the lists is split into known pieces.
        let p = t.pieces("kubeletconfigurationx");
        assert!(p.len() > 1 && p[0].starts_with('▁'), "{p:?}");
        assert_eq!(p.concat().trim_start_matches('▁'), "kubeletconfigurationx");
        // Chinese has no spaces: the run is matched against the word list.
        let zh = t.pieces("预算五千想买一台轻薄笔记本");
        assert!(
            zh.len() > 3 && zh.iter().any(|w| w.chars().count() > 1),
            "{zh:?}"
        );
        // Hindi's vowel signs are marks: listed words stay whole, another is pieces.
        let hi = t.pieces("मुझे सिरदर्द है");
        assert_eq!(
            (hi[0].as_str(), hi[hi.len() - 1].as_str()),
            ("मुझे", "है"),
            "{hi:?}"
        );
        assert_eq!(hi[1..hi.len() - 1].concat(), "▁सिरदर्द");
    }

    #[test]
    fn related_texts_are_closer_than_unrelated_ones() {
        let near = cosine(
            "my knee hurts after running",
            "pain in the joint when jogging",
        );
        let far = cosine("my knee hurts after running", "git rebase onto main");
        assert!(near > far + 0.1, "near {near}, far {far}");
        // Across languages: the same question in German is nearer than another topic.
        let de = cosine(
            "which laptop should I buy",
            "welchen Laptop soll ich kaufen",
        );
        let other = cosine("which laptop should I buy", "the mitochondria makes energy");
        assert!(de > other, "de {de}, other {other}");
    }

    #[test]
    fn the_fast_paths_agree_with_unicode() {
        for c in (0x80..=0xFFu32).filter_map(char::from_u32) {
            let expected = c.is_alphabetic().then(|| c.to_lowercase().next());
            assert_eq!(latin1_lowercase(c).map(Some), expected, "{c:?}");
        }
        for c in ['あ', 'ン', '中', '龍'] {
            assert!(caseless_letter(c) && c.is_alphabetic() && c.to_lowercase().eq([c]));
        }
        assert!(!caseless_letter('・') && !caseless_letter('。'));
    }

    #[test]
    fn malformed_tables_are_errors_not_panics() {
        assert!(StaticEmbeddings::parse(b"nope").is_err());
        // Odd dimensions cannot pair int4 values into bytes; 3 bits is not a format.
        for (dims, bits) in [(3u32, 4u32), (4, 3)] {
            let mut t = BUILTIN[..8].to_vec();
            for v in [dims, bits, 1, 0, 0, 0, 0, 0] {
                t.extend(v.to_le_bytes());
            }
            let leaked: &'static [u8] = Box::leak(t.into_boxed_slice());
            let err = StaticEmbeddings::parse(leaked).unwrap_err();
            assert!(err.0.contains("int4"), "{err}");
        }
        assert!(StaticEmbeddings::parse(&BUILTIN[..1000]).is_err());
        let mut wrong = BUILTIN[..64].to_vec();
        wrong[0] = b'X';
        let leaked: &'static [u8] = Box::leak(wrong.into_boxed_slice());
        assert!(StaticEmbeddings::parse(leaked).is_err());
    }

    /// A one-entry table (the word "a") with these values, stored in `bits` bits.
    fn one_word_table(values: &[i8], bits: u32) -> &'static [u8] {
        let mut t = MAGIC.to_vec();
        let word = [WORD_TAG, b'a'];
        for v in [values.len() as u32, bits, 1, word.len() as u32, 0, 0, 0, 2] {
            t.extend(v.to_le_bytes());
        }
        t.extend(word);
        t.extend(0f32.to_le_bytes()); // log-probability
        t.extend(1f32.to_le_bytes()); // scale
        if bits == 8 {
            t.extend(values.iter().map(|v| *v as u8));
        } else {
            let half = values.len() / 2;
            let nibble = |v: i8| v as u8 & 0x0F;
            t.extend((0..half).map(|j| nibble(values[j]) | nibble(values[j + half]) << 4));
        }
        t.extend(0u32.to_le_bytes()); // norm_off[0]
        Box::leak(t.into_boxed_slice())
    }

    #[test]
    fn int4_and_int8_rows_read_back_as_written() {
        let values = [1i8, -2, 7, -7, 0, -8, 3, 5];
        let norm = values
            .iter()
            .map(|v| (*v as f32).powi(2))
            .sum::<f32>()
            .sqrt();
        for bits in [4, 8] {
            let t = StaticEmbeddings::parse(one_word_table(&values, bits)).unwrap();
            let mut v = vec![0.0; t.dims()];
            assert_eq!(t.pool_into("a", 1.0, &mut v), 1);
            for (got, want) in v.iter().zip(values) {
                assert!(
                    (got - want as f32 / norm).abs() < 1e-6,
                    "{bits} bits: {v:?}"
                );
            }
        }
    }

    #[test]
    fn pooling_reads_a_bounded_number_of_pieces() {
        let t = StaticEmbeddings::builtin();
        let long = "word ".repeat(10_000);
        let mut v = vec![0.0; t.dims()];
        assert_eq!(t.pool_into(&long, 1.0, &mut v), MAX_PIECES);
        let unspaced = "字".repeat(10_000);
        assert!(t.pool_into(&unspaced, 1.0, &mut v) <= MAX_PIECES);
    }
}
