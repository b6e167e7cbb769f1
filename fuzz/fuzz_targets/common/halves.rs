//! How the stream-decoder targets feed their input: in two parts, cut where
//! the first byte says, so a decoder meets frames split at every offset
//! (one that gives different results for the same bytes arriving in two
//! reads is a bug).

/// `data` cut in two at `data[0] % (len + 1)` (an empty input: two empty parts).
pub fn halves(data: &[u8]) -> [&[u8]; 2] {
    let cut = data.first().map(|b| *b as usize % (data.len() + 1)).unwrap_or(0);
    [&data[..cut], &data[cut..]]
}
