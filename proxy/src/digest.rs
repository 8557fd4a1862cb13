//! Length-prefixed fields into SHA-256, so that no two sequences of fields share a digest:
//! what the routing table's version, a route's serving digest and the response cache's
//! keys are made of. No IO.

use sha2::Digest;

/// A digest being written, field by field.
pub struct Fields(sha2::Sha256);

impl Default for Fields {
    fn default() -> Fields {
        Fields(sha2::Sha256::new())
    }
}

impl Fields {
    /// One field: its length, then its bytes.
    pub fn field(&mut self, bytes: &[u8]) {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }

    /// The first half: enough to tell configs apart, where nobody chooses the input to
    /// collide.
    pub fn finish16(self) -> [u8; 16] {
        let mut out = [0; 16];
        out.copy_from_slice(&self.finish()[..16]);
        out
    }
}

/// Bytes written as they are, for text that ends by itself (a JSON value) after a field.
impl std::io::Write for Fields {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
