//! A reader of `XREADGROUP` replies straight from RESP2 bytes.
//!
//! redis-rs parses every reply into a tree of [`redis::Value`]s with a
//! general parser combinator, one allocation per value; a stream entry is
//! five values (the entry, its id, its fields, the field name, the report),
//! and that parse was about a sixth of the aggregator's CPU in a backlog
//! drain. This module knows the one shape it reads and goes through the
//! bytes once, allocating only the id and the payload it keeps.
//!
//! Two steps, both pure: [`Scan`] says, as bytes arrive, whether the reply
//! is complete (resumable, so a large reply read in pieces is scanned once);
//! [`parse`] then reads the complete reply into entries.

use super::Entry;
use crowd_proto::layout::REPORT_FIELD;

/// Why a reply could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReplyError {
    /// Redis answered with an error line (without its `-`), e.g.
    /// `NOGROUP No such key...`.
    Server(String),
    /// The bytes are not the RESP2 shape of an `XREADGROUP` reply.
    Protocol(&'static str),
}

/// Follows a reply as its bytes arrive, to tell when it is complete.
///
/// It keeps the position reached and, for each array still open, how many
/// elements it still holds, so each byte is looked at once however many
/// pieces the reply comes in.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pos: usize,
    open: Vec<usize>,
    started: bool,
}

impl Scan {
    /// Scans `buf` (the reply so far; it only ever grows) from where the
    /// last call stopped: `Ok(Some(len))` once the reply is complete
    /// (`len` bytes long), `Ok(None)` if more bytes are needed.
    pub(crate) fn advance(&mut self, buf: &[u8]) -> Result<Option<usize>, ReplyError> {
        loop {
            if self.started && self.open.is_empty() {
                return Ok(Some(self.pos));
            }
            let Some((header, body)) = header_at(buf, self.pos)? else {
                return Ok(None);
            };
            match header {
                Header::Array(Some(n)) if n > 0 => {
                    // Counted in its parent once its own elements are in.
                    self.pos = body;
                    self.open.push(n);
                    self.started = true;
                    continue;
                }
                Header::Bulk(Some(len)) => {
                    let end = body + len + 2;
                    if buf.len() < end {
                        return Ok(None);
                    }
                    self.pos = end;
                }
                _ => self.pos = body,
            }
            self.value_done();
            self.started = true;
        }
    }

    /// Counts one value of the innermost open array, closing the arrays
    /// it completes.
    fn value_done(&mut self) {
        while let Some(left) = self.open.last_mut() {
            *left -= 1;
            if *left > 0 {
                return;
            }
            self.open.pop();
        }
    }
}

/// A value's first line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Header<'a> {
    /// `*n`, `None` for the null array `*-1`.
    Array(Option<usize>),
    /// `$n`, `None` for the null bulk string `$-1`.
    Bulk(Option<usize>),
    /// `+...`, `:...`: a line and nothing more.
    Line,
    /// `-...`: an error and its text.
    Error(&'a [u8]),
}

/// The header at `pos` and where its body starts, or `None` if its line is
/// not all there yet.
fn header_at(buf: &[u8], pos: usize) -> Result<Option<(Header<'_>, usize)>, ReplyError> {
    let Some(rest) = buf.get(pos..) else {
        return Ok(None);
    };
    let Some(nl) = rest.iter().position(|b| *b == b'\n') else {
        return Ok(None);
    };
    let line = rest[..nl]
        .strip_suffix(b"\r")
        .ok_or(ReplyError::Protocol("line not ended by CRLF"))?;
    let (kind, text) = line
        .split_first()
        .ok_or(ReplyError::Protocol("empty line"))?;
    let header = match kind {
        b'*' => Header::Array(length(text)?),
        b'$' => Header::Bulk(length(text)?),
        b'+' | b':' => Header::Line,
        b'-' => Header::Error(text),
        _ => return Err(ReplyError::Protocol("unknown value type")),
    };
    Ok(Some((header, pos + nl + 1)))
}

/// A length: `None` for `-1`.
fn length(text: &[u8]) -> Result<Option<usize>, ReplyError> {
    if text == b"-1" {
        return Ok(None);
    }
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Some)
        .ok_or(ReplyError::Protocol("bad length"))
}

/// Reads a complete reply (see [`Scan`]): each stream's key and entries.
/// An entry without the report field (trimmed away, or foreign) has no
/// payload, so that it is still acknowledged.
pub(crate) fn parse(reply: &[u8]) -> Result<Vec<(String, Vec<Entry>)>, ReplyError> {
    let mut c = Cursor { buf: reply, pos: 0 };
    let streams = match c.header()? {
        Header::Error(text) => {
            return Err(ReplyError::Server(
                String::from_utf8_lossy(text).into_owned(),
            ));
        }
        Header::Array(n) => n.unwrap_or(0),
        _ => return Err(ReplyError::Protocol("reply is not an array")),
    };
    let mut out = Vec::with_capacity(streams);
    for _ in 0..streams {
        if c.array()? != Some(2) {
            return Err(ReplyError::Protocol("stream is not a key and its entries"));
        }
        let key = text(c.bulk()?)?;
        let n = c.array()?.unwrap_or(0);
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            entries.push(c.entry()?);
        }
        out.push((key, entries));
    }
    Ok(out)
}

/// A position in a complete reply.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn header(&mut self) -> Result<Header<'a>, ReplyError> {
        let (h, body) =
            header_at(self.buf, self.pos)?.ok_or(ReplyError::Protocol("reply cut short"))?;
        self.pos = body;
        Ok(h)
    }

    fn array(&mut self) -> Result<Option<usize>, ReplyError> {
        match self.header()? {
            Header::Array(n) => Ok(n),
            Header::Bulk(None) => Ok(None),
            _ => Err(ReplyError::Protocol("expected an array")),
        }
    }

    fn bulk(&mut self) -> Result<Option<&'a [u8]>, ReplyError> {
        match self.header()? {
            Header::Bulk(Some(len)) => {
                let body = self
                    .buf
                    .get(self.pos..self.pos + len)
                    .ok_or(ReplyError::Protocol("reply cut short"))?;
                self.pos += len + 2;
                Ok(Some(body))
            }
            Header::Bulk(None) | Header::Array(None) => Ok(None),
            _ => Err(ReplyError::Protocol("expected a bulk string")),
        }
    }

    /// Skips one value of any kind.
    fn skip(&mut self) -> Result<(), ReplyError> {
        match self.header()? {
            Header::Array(Some(n)) => (0..n).try_for_each(|_| self.skip()),
            Header::Bulk(Some(len)) => {
                self.pos += len + 2;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// `[id, [field, value, ...]]`, the fields nil when the entry is gone.
    fn entry(&mut self) -> Result<Entry, ReplyError> {
        let parts = self.array()?.unwrap_or(0);
        if parts == 0 {
            return Err(ReplyError::Protocol("entry without an id"));
        }
        let id = text(self.bulk()?)?;
        let mut payload = None;
        if parts > 1 {
            let fields = self.array()?.unwrap_or(0);
            for _ in 0..fields / 2 {
                let name = self.bulk()?;
                let value = self.bulk()?;
                if payload.is_none() && name == Some(REPORT_FIELD.as_bytes()) {
                    payload = value.map(<[u8]>::to_vec);
                }
            }
            if fields % 2 == 1 {
                self.skip()?;
            }
        }
        for _ in 2..parts {
            self.skip()?;
        }
        Ok(Entry {
            id,
            payload,
            deliveries: 0,
        })
    }
}

fn text(b: Option<&[u8]>) -> Result<String, ReplyError> {
    b.and_then(|b| std::str::from_utf8(b).ok())
        .map(str::to_owned)
        .ok_or(ReplyError::Protocol("expected text"))
}

#[cfg(test)]
mod tests;
