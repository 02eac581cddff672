//! A reader for R's lazy-load databases (`Rdata.rdx` + `Rdata.rdb`), enough for named character
//! vectors: how the Debian package r-cran-janeaustenr ships Jane Austen's six novels, one line per
//! element (ASSETS.md).
//!
//! `.rdx` is a gzip file holding the XDR serialization of `list(variables = <named list of
//! c(offset, length)>, references, compressed)`; `.rdb` holds, at each offset, a 4-byte big-endian
//! uncompressed length followed by a zlib stream of the object's serialization. Serialization
//! (formats 2 and 3): `X\n`, the format version, two R versions, (3:) the native encoding, then
//! items, each a 32-bit flags word — the type in the low byte, bit 9 "has attributes", bit 10 "has
//! tag" — and its payload. Only the types these files use are read; anything else is an error.

use std::io::Read;

use crate::error::{CliError, Result};

/// The subset of R objects the reader understands.
#[derive(Debug, Clone, PartialEq)]
pub enum RObject {
    Null,
    Symbol(String),
    /// A CHARSXP: one string, None for NA.
    Char(Option<String>),
    Strings(Vec<Option<String>>),
    Ints(Vec<i32>),
    Logicals(Vec<i32>),
    Doubles(Vec<f64>),
    List(Vec<RObject>, Vec<(String, RObject)>),
    /// A pairlist's (tag, value) cells.
    Pairs(Vec<(Option<String>, RObject)>),
}

const NILVALUE: u32 = 254;
const REFSXP: u32 = 255;

fn bad(what: impl std::fmt::Display) -> CliError {
    CliError::Io(format!("R data: {what}"))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    /// Symbols in the order they appeared (REFSXP points back into this table).
    refs: Vec<RObject>,
}

impl Reader<'_> {
    fn int(&mut self) -> Result<i32> {
        let b = self
            .bytes
            .get(self.at..self.at + 4)
            .ok_or_else(|| bad("truncated"))?;
        self.at += 4;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn length(&mut self) -> Result<usize> {
        match self.int()? {
            -1 => {
                // Long vectors: two more words.
                let (hi, lo) = (self.int()? as u64, self.int()? as u32 as u64);
                Ok(((hi << 32) | lo) as usize)
            }
            n if n >= 0 => Ok(n as usize),
            n => Err(bad(format!("negative length {n}"))),
        }
    }

    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let b = self
            .bytes
            .get(self.at..self.at + n)
            .ok_or_else(|| bad("truncated"))?;
        self.at += n;
        Ok(b)
    }

    fn header(&mut self) -> Result<()> {
        if self.take(2)? != b"X\n" {
            return Err(bad("not an XDR serialization"));
        }
        let version = self.int()?;
        self.int()?;
        self.int()?;
        match version {
            2 => Ok(()),
            3 => {
                let n = self.length()?;
                self.take(n)?;
                Ok(())
            }
            v => Err(bad(format!("serialization format {v} is not supported"))),
        }
    }

    fn attributes(&mut self, flags: u32) -> Result<Vec<(String, RObject)>> {
        if flags & (1 << 9) == 0 {
            return Ok(Vec::new());
        }
        match self.item()? {
            RObject::Pairs(cells) => Ok(cells
                .into_iter()
                .map(|(tag, v)| (tag.unwrap_or_default(), v))
                .collect()),
            other => Err(bad(format!("attributes are not a pairlist: {other:?}"))),
        }
    }

    fn item(&mut self) -> Result<RObject> {
        let flags = self.int()? as u32;
        let kind = flags & 0xff;
        match kind {
            NILVALUE => Ok(RObject::Null),
            REFSXP => {
                let mut index = (flags >> 8) as usize;
                if index == 0 {
                    index = self.int()? as usize;
                }
                self.refs
                    .get(index.wrapping_sub(1))
                    .cloned()
                    .ok_or_else(|| bad(format!("reference {index} before its definition")))
            }
            // SYMSXP: its name follows as a CHARSXP item.
            1 => match self.item()? {
                RObject::Char(Some(name)) => {
                    let sym = RObject::Symbol(name);
                    self.refs.push(sym.clone());
                    Ok(sym)
                }
                other => Err(bad(format!("symbol name {other:?}"))),
            },
            // LISTSXP (a pairlist): attributes and tag come before the value, then the rest.
            2 => {
                let mut cells = Vec::new();
                let mut flags = flags;
                loop {
                    self.attributes(flags)?;
                    let tag = if flags & (1 << 10) != 0 {
                        match self.item()? {
                            RObject::Symbol(s) => Some(s),
                            other => return Err(bad(format!("pairlist tag {other:?}"))),
                        }
                    } else {
                        None
                    };
                    cells.push((tag, self.item()?));
                    // The next cell, read in place so long pairlists do not recurse.
                    flags = self.int()? as u32;
                    match flags & 0xff {
                        NILVALUE => break,
                        2 => continue,
                        other => return Err(bad(format!("pairlist continues with type {other}"))),
                    }
                }
                Ok(RObject::Pairs(cells))
            }
            // CHARSXP
            9 => match self.int()? {
                -1 => Ok(RObject::Char(None)),
                n if n >= 0 => {
                    let b = self.take(n as usize)?;
                    let s =
                        String::from_utf8(b.to_vec()).map_err(|_| bad("string is not UTF-8"))?;
                    Ok(RObject::Char(Some(s)))
                }
                n => Err(bad(format!("string length {n}"))),
            },
            10 | 13 => {
                let n = self.length()?;
                let v = (0..n).map(|_| self.int()).collect::<Result<Vec<_>>>()?;
                self.attributes(flags)?;
                Ok(if kind == 10 {
                    RObject::Logicals(v)
                } else {
                    RObject::Ints(v)
                })
            }
            14 => {
                let n = self.length()?;
                let v = (0..n)
                    .map(|_| {
                        let b = self.take(8)?;
                        Ok(f64::from_be_bytes(b.try_into().expect("8 bytes")))
                    })
                    .collect::<Result<Vec<_>>>()?;
                self.attributes(flags)?;
                Ok(RObject::Doubles(v))
            }
            16 => {
                let n = self.length()?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    match self.item()? {
                        RObject::Char(s) => v.push(s),
                        other => return Err(bad(format!("string vector element {other:?}"))),
                    }
                }
                self.attributes(flags)?;
                Ok(RObject::Strings(v))
            }
            19 => {
                let n = self.length()?;
                let v = (0..n).map(|_| self.item()).collect::<Result<Vec<_>>>()?;
                let attrs = self.attributes(flags)?;
                Ok(RObject::List(v, attrs))
            }
            other => Err(bad(format!("object type {other} is not supported"))),
        }
    }
}

/// Parses one serialized object.
pub fn unserialize(bytes: &[u8]) -> Result<RObject> {
    let mut r = Reader {
        bytes,
        at: 0,
        refs: Vec::new(),
    };
    r.header()?;
    r.item()
}

fn names_of(attrs: &[(String, RObject)]) -> Option<Vec<String>> {
    attrs
        .iter()
        .find(|(k, _)| k == "names")
        .and_then(|(_, v)| match v {
            RObject::Strings(s) => Some(s.iter().map(|x| x.clone().unwrap_or_default()).collect()),
            _ => None,
        })
}

/// Every character vector of a lazy-load database, by variable name, in the index's order.
pub fn character_vectors(rdx_gz: &[u8], rdb: &[u8]) -> Result<Vec<(String, Vec<Option<String>>)>> {
    let mut index = Vec::new();
    flate2::read::GzDecoder::new(rdx_gz)
        .read_to_end(&mut index)
        .map_err(|e| bad(format!("index: {e}")))?;
    let RObject::List(parts, attrs) = unserialize(&index)? else {
        return Err(bad("the index is not a list"));
    };
    let part_names = names_of(&attrs).ok_or_else(|| bad("the index has no names"))?;
    let variables = part_names
        .iter()
        .position(|n| n == "variables")
        .and_then(|i| parts.get(i))
        .ok_or_else(|| bad("the index has no variables"))?;
    let RObject::List(places, attrs) = variables else {
        return Err(bad("variables are not a list"));
    };
    let names = names_of(attrs).ok_or_else(|| bad("variables have no names"))?;
    let mut out = Vec::new();
    for (name, place) in names.into_iter().zip(places) {
        let RObject::Ints(p) = place else {
            return Err(bad(format!("{name}: no (offset, length)")));
        };
        let (offset, len) = match p.as_slice() {
            [o, l] if *o >= 0 && *l >= 4 => (*o as usize, *l as usize),
            _ => return Err(bad(format!("{name}: bad (offset, length) {p:?}"))),
        };
        let blob = rdb
            .get(offset..offset + len)
            .ok_or_else(|| bad(format!("{name}: past the end of the database")))?;
        let expected = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
        let mut bytes = Vec::with_capacity(expected);
        flate2::read::ZlibDecoder::new(&blob[4..])
            .read_to_end(&mut bytes)
            .map_err(|e| bad(format!("{name}: {e}")))?;
        if bytes.len() != expected {
            return Err(bad(format!(
                "{name}: {} bytes inflated, {expected} expected",
                bytes.len()
            )));
        }
        if let RObject::Strings(lines) = unserialize(&bytes)? {
            out.push((name, lines));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-written serialization: list(a = c("x", NA), b = 7L), with a repeated symbol.
    fn sample() -> Vec<u8> {
        let mut b = b"X\n".to_vec();
        let int = |b: &mut Vec<u8>, v: i32| b.extend(v.to_be_bytes());
        let chars = |b: &mut Vec<u8>, s: &str| {
            b.extend(0x0004_0009u32.to_be_bytes());
            b.extend((s.len() as i32).to_be_bytes());
            b.extend(s.as_bytes());
        };
        for v in [3, 0x0004_0201, 0x0003_0500, 5] {
            int(&mut b, v);
        }
        b.extend(b"UTF-8");
        int(&mut b, 0x213); // VECSXP with attributes
        int(&mut b, 2);
        int(&mut b, 16); // STRSXP
        int(&mut b, 2);
        chars(&mut b, "x");
        int(&mut b, 9);
        int(&mut b, -1); // NA
        int(&mut b, 13); // INTSXP
        int(&mut b, 1);
        int(&mut b, 7);
        int(&mut b, 0x402); // pairlist cell with tag
        int(&mut b, 1); // SYMSXP "names"
        chars(&mut b, "names");
        int(&mut b, 16);
        int(&mut b, 2);
        chars(&mut b, "a");
        chars(&mut b, "b");
        int(&mut b, 0x402); // a second cell whose tag refers back to symbol 1
        int(&mut b, 0x1ff);
        int(&mut b, 254);
        int(&mut b, 254);
        b
    }

    #[test]
    fn reads_lists_strings_na_and_symbol_references() {
        let RObject::List(items, attrs) = unserialize(&sample()).unwrap() else {
            panic!("not a list")
        };
        assert_eq!(
            items,
            vec![
                RObject::Strings(vec![Some("x".into()), None]),
                RObject::Ints(vec![7])
            ]
        );
        assert_eq!(names_of(&attrs).unwrap(), vec!["a", "b"]);
        assert_eq!(attrs[1].0, "names");
        assert_eq!(attrs[1].1, RObject::Null);
    }

    #[test]
    fn truncated_or_foreign_input_is_an_error() {
        let s = sample();
        for cut in [0, 1, 5, 20, s.len() - 1] {
            assert!(unserialize(&s[..cut]).is_err(), "cut at {cut}");
        }
        assert!(unserialize(b"A\n\0\0\0\x03").is_err());
        assert!(character_vectors(b"not gzip", b"").is_err());
    }
}
