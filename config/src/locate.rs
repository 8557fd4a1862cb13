//! Maps a key path back to the line of the TOML source that wrote it.
//!
//! serde tells us *which* key is wrong; only the document's spans tell us *where* it is.

use toml_edit::{ImDocument, Item};

/// Source text plus line starts, so byte offsets turn into 1-based line numbers.
pub struct SourceMap<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> SourceMap<'a> {
    pub fn new(text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        SourceMap { text, line_starts }
    }

    pub fn line_of(&self, offset: usize) -> usize {
        match self.line_starts.binary_search(&offset) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }

    /// The line of the deepest key of `path` that exists in the document (so that a
    /// missing key points at its table), or 0 when the text does not parse.
    pub fn line_of_key(&self, path: &[String]) -> usize {
        let Ok(doc) = ImDocument::parse(self.text) else {
            return 0;
        };
        let mut best = 0;
        let mut item: &Item = doc.as_item();
        for segment in path {
            let Some(table) = item.as_table_like() else {
                break;
            };
            let Some((key, next)) = table.get_key_value(segment) else {
                break;
            };
            if let Some(span) = key.span().or_else(|| next.span()) {
                best = self.line_of(span.start);
            }
            item = next;
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_keys_and_falls_back_to_parent() {
        let text = "[server]\nlisten = \"x\"\n\n[models.\"a.b\"]\nprovider = \"p\"\n";
        let map = SourceMap::new(text);
        assert_eq!(map.line_of_key(&["server".into(), "listen".into()]), 2);
        assert_eq!(
            map.line_of_key(&["models".into(), "a.b".into(), "provider".into()]),
            5
        );
        assert_eq!(
            map.line_of_key(&["models".into(), "a.b".into(), "missing".into()]),
            4
        );
    }
}
