//! Inputs tests and the bench share.

/// A zip archive holding `content` as `app.py` (stored, not compressed): kaws refuses a
/// `zipFile` that is not a zip archive.
pub fn zip(content: &[u8]) -> Vec<u8> {
    crate::chaos::zip_file("app.py", content)
}
