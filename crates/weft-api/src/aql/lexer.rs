//! The AQL lexer: one token at a byte offset, on demand. The parser re-lexes
//! at its position rather than buffering, so value positions (JSON literals)
//! can switch to serde_json's reader at the exact byte.

use super::ParseError;

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// `[A-Za-z_][A-Za-z0-9_-]*`; keywords are idents compared case-insensitively.
    Ident(String),
    /// `"name"`: a quoted name (table, topic or field segment).
    QName(String),
    /// `'text'`.
    Str(String),
    /// `x'hex'`.
    Bytes(Vec<u8>),
    /// Unsigned decimal integer.
    Int(u64),
    Punct(&'static str),
    Eof,
}

impl Tok {
    pub fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("'{s}'"),
            Tok::QName(s) => format!("\"{s}\""),
            Tok::Str(_) => "a string".into(),
            Tok::Bytes(_) => "a byte string".into(),
            Tok::Int(n) => format!("{n}"),
            Tok::Punct(p) => format!("'{p}'"),
            Tok::Eof => "end of input".into(),
        }
    }
}

const PUNCTS: [&str; 14] = ["!=", "<=", ">=", "=", "<", ">", "(", ")", "{", "}", ",", ".", ";", "*"];

/// Skips whitespace and `-- comments`; returns the offset of the next token.
pub fn skip_ws(src: &str, mut pos: usize) -> usize {
    let b = src.as_bytes();
    loop {
        while pos < b.len() && b[pos].is_ascii_whitespace() {
            pos += 1;
        }
        if b.get(pos) == Some(&b'-') && b.get(pos + 1) == Some(&b'-') {
            while pos < b.len() && b[pos] != b'\n' {
                pos += 1;
            }
            continue;
        }
        return pos;
    }
}

pub fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

pub fn is_ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

/// Lexes one token at `pos` (after whitespace). Returns the token, its start
/// and its end offset.
pub fn lex(src: &str, pos: usize) -> Result<(Tok, usize, usize), ParseError> {
    let start = skip_ws(src, pos);
    let b = src.as_bytes();
    let Some(&c) = b.get(start) else {
        return Ok((Tok::Eof, start, start));
    };
    if (c == b'x' || c == b'X') && b.get(start + 1) == Some(&b'\'') {
        let (s, end) = quoted(src, start + 1, b'\'')?;
        let bytes = hex_decode(&s).ok_or_else(|| ParseError::at(src, start, "a byte string x'..' holds an even number of hex digits"))?;
        return Ok((Tok::Bytes(bytes), start, end));
    }
    if is_ident_start(c) {
        let mut end = start + 1;
        while end < b.len() && is_ident_char(b[end]) {
            // `a--b` would start a comment inside a name: stop at `--`.
            if b[end] == b'-' && b.get(end + 1) == Some(&b'-') {
                break;
            }
            end += 1;
        }
        return Ok((Tok::Ident(src[start..end].to_owned()), start, end));
    }
    if c.is_ascii_digit() {
        let mut end = start;
        while end < b.len() && b[end].is_ascii_digit() {
            end += 1;
        }
        let n = src[start..end].parse::<u64>().map_err(|_| ParseError::at(src, start, "integer out of range (at most 2^64-1)"))?;
        return Ok((Tok::Int(n), start, end));
    }
    if c == b'\'' {
        let (s, end) = quoted(src, start, b'\'')?;
        return Ok((Tok::Str(s), start, end));
    }
    if c == b'"' {
        let (s, end) = quoted(src, start, b'"')?;
        return Ok((Tok::QName(s), start, end));
    }
    for p in PUNCTS {
        if src[start..].starts_with(p) {
            return Ok((Tok::Punct(p), start, start + p.len()));
        }
    }
    let ch = src[start..].chars().next().unwrap_or('?');
    Err(ParseError::at(src, start, format!("unexpected character {ch:?}")))
}

/// Reads a quoted string starting at `open` (the quote). Escapes: `\\`,
/// `\'`, `\"`, `\n`, `\r`, `\t`, `\0`, `\u{hex}`.
fn quoted(src: &str, open: usize, q: u8) -> Result<(String, usize), ParseError> {
    let mut out = String::new();
    let mut chars = src[open + 1..].char_indices();
    while let Some((i, ch)) = chars.next() {
        let at = open + 1 + i;
        if ch as u32 == q as u32 {
            return Ok((out, at + 1));
        }
        if ch != '\\' {
            out.push(ch);
            continue;
        }
        let Some((_, e)) = chars.next() else { break };
        match e {
            '\\' => out.push('\\'),
            '\'' => out.push('\''),
            '"' => out.push('"'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            '0' => out.push('\0'),
            'u' => {
                let rest = &src[at + 2..];
                let close = rest.find('}').filter(|_| rest.starts_with('{'));
                let Some(close) = close.filter(|&c| c <= 7) else {
                    return Err(ParseError::at(src, at, "expected \\u{hex} with 1 to 6 hex digits"));
                };
                let cp = u32::from_str_radix(&rest[1..close], 16).ok().and_then(char::from_u32);
                let Some(cp) = cp else {
                    return Err(ParseError::at(src, at, "\\u{..} is not a Unicode scalar value"));
                };
                out.push(cp);
                // Skip `{hex}`: all ASCII, one char per byte.
                for _ in 0..=close {
                    chars.next();
                }
            }
            other => return Err(ParseError::at(src, at, format!("unknown escape \\{other}"))),
        }
    }
    Err(ParseError::at(src, open, "unterminated string"))
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks(2)
        .map(|p| {
            let hi = (p[0] as char).to_digit(16)?;
            let lo = (p[1] as char).to_digit(16)?;
            Some((hi * 16 + lo) as u8)
        })
        .collect()
}
