//! For the property tests: a text cut into chunks at arbitrary character boundaries, as an
//! agent may stream it.

use proptest::sample::Index;

/// `text` cut at the char boundaries `cuts` pick (in any order, repeats allowed); the chunks
/// joined are `text` again.
pub(crate) fn split_at<'a>(text: &'a str, cuts: &[Index]) -> Vec<&'a str> {
    let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    let mut points: Vec<usize> = if boundaries.is_empty() {
        Vec::new()
    } else {
        cuts.iter()
            .map(|c| boundaries[c.index(boundaries.len())])
            .collect()
    };
    points.push(text.len());
    points.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for point in points {
        chunks.push(&text[start..point]);
        start = point;
    }
    chunks
}
