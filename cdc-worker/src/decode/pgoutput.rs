//! Decoder for the pgoutput logical replication protocol, version 1.
//!
//! Pure byte parsing: every read is bounds-checked and every malformed input becomes a
//! [`DecodeError`], never a panic (see the proptest at the bottom).
//!
//! Over 500 lines with its fixtures and tests (about 250): one decoder per message kind, one
//! file.

use std::collections::HashMap;

use crate::model::Lsn;

// The variants are pgoutput's message kinds by their protocol names; 'M' is called Message.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Begin(Begin),
    Commit(Commit),
    Origin { commit_lsn: Lsn, name: String },
    Relation(Relation),
    Type { oid: u32, namespace: String, name: String },
    Insert { relation: u32, new: Vec<Column> },
    Update { relation: u32, old: Option<Vec<Column>>, new: Vec<Column> },
    Delete { relation: u32, old: Vec<Column> },
    Truncate { options: u8, relations: Vec<u32> },
    Message { transactional: bool, lsn: Lsn, prefix: String, content: Vec<u8> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begin {
    pub final_lsn: Lsn,
    pub commit_time: i64,
    pub xid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub flags: u8,
    pub commit_lsn: Lsn,
    pub end_lsn: Lsn,
    pub commit_time: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    pub namespace: String,
    pub name: String,
    pub replica_identity: u8,
    pub columns: Vec<RelationColumn>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    pub flags: u8,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

/// One column value of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    Null,
    /// An unchanged TOASTed value (updates only); the value itself is not sent.
    UnchangedToast,
    Text(Vec<u8>),
    Binary(Vec<u8>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("pgoutput: empty message")]
    Empty,
    #[error("pgoutput: unknown message type {0:?}")]
    UnknownMessage(char),
    #[error("pgoutput: {what} truncated: needed {needed} more bytes at offset {offset}")]
    Truncated { what: &'static str, offset: usize, needed: usize },
    #[error("pgoutput: {what} is not a NUL-terminated string")]
    UnterminatedString { what: &'static str },
    #[error("pgoutput: {what} is not valid UTF-8")]
    InvalidUtf8 { what: &'static str },
    #[error("pgoutput: unknown tuple column kind {0:?}")]
    UnknownColumnKind(char),
    #[error("pgoutput: unexpected tuple marker {found:?} in {message}, expected {expected}")]
    UnexpectedMarker { message: &'static str, found: char, expected: &'static str },
    #[error("pgoutput: negative {what} {value}")]
    Negative { what: &'static str, value: i64 },
    #[error("pgoutput: {count} trailing bytes after {message}")]
    TrailingBytes { message: &'static str, count: usize },
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let rest = &self.buf[self.pos..];
        if rest.len() < n {
            return Err(DecodeError::Truncated { what, offset: self.pos, needed: n - rest.len() });
        }
        self.pos += n;
        Ok(&rest[..n])
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        Ok(self.u32(what)? as i32)
    }

    fn i16(&mut self, what: &'static str) -> Result<i16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn lsn(&mut self, what: &'static str) -> Result<Lsn, DecodeError> {
        Ok(Lsn(self.u64(what)?))
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        Ok(self.u64(what)? as i64)
    }

    fn cstr(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let rest = &self.buf[self.pos..];
        let nul =
            rest.iter().position(|&b| b == 0).ok_or(DecodeError::UnterminatedString { what })?;
        let s = std::str::from_utf8(&rest[..nul]).map_err(|_| DecodeError::InvalidUtf8 { what })?;
        self.pos += nul + 1;
        Ok(s.to_owned())
    }

    fn finish(&self, message: &'static str) -> Result<(), DecodeError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes { message, count }),
        }
    }

    fn tuple(&mut self) -> Result<Vec<Column>, DecodeError> {
        let n = self.i16("tuple column count")?;
        if n < 0 {
            return Err(DecodeError::Negative { what: "tuple column count", value: n.into() });
        }
        // No preallocation from untrusted counts beyond what the buffer could hold.
        let mut cols = Vec::with_capacity(usize::from(n as u16).min(self.buf.len() - self.pos));
        for _ in 0..n {
            let kind = self.u8("tuple column kind")?;
            cols.push(match kind {
                b'n' => Column::Null,
                b'u' => Column::UnchangedToast,
                b't' | b'b' => {
                    let len = self.i32("column length")?;
                    if len < 0 {
                        return Err(DecodeError::Negative {
                            what: "column length",
                            value: len.into(),
                        });
                    }
                    let bytes = self.take(len as usize, "column value")?.to_vec();
                    if kind == b't' {
                        Column::Text(bytes)
                    } else {
                        Column::Binary(bytes)
                    }
                }
                other => return Err(DecodeError::UnknownColumnKind(other as char)),
            });
        }
        Ok(cols)
    }
}

/// Decodes one pgoutput message (the payload of an XLogData message).
pub fn decode(buf: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader { buf, pos: 0 };
    let tag = *buf.first().ok_or(DecodeError::Empty)?;
    r.pos = 1;
    let msg = match tag {
        b'B' => {
            let m = Message::Begin(Begin {
                final_lsn: r.lsn("Begin final LSN")?,
                commit_time: r.i64("Begin commit time")?,
                xid: r.u32("Begin xid")?,
            });
            r.finish("Begin")?;
            m
        }
        b'C' => {
            let m = Message::Commit(Commit {
                flags: r.u8("Commit flags")?,
                commit_lsn: r.lsn("Commit LSN")?,
                end_lsn: r.lsn("Commit end LSN")?,
                commit_time: r.i64("Commit time")?,
            });
            r.finish("Commit")?;
            m
        }
        b'O' => {
            let m =
                Message::Origin { commit_lsn: r.lsn("Origin LSN")?, name: r.cstr("Origin name")? };
            r.finish("Origin")?;
            m
        }
        b'R' => {
            let oid = r.u32("Relation OID")?;
            let namespace = r.cstr("Relation namespace")?;
            let name = r.cstr("Relation name")?;
            let replica_identity = r.u8("Relation replica identity")?;
            let n = r.i16("Relation column count")?;
            if n < 0 {
                return Err(DecodeError::Negative {
                    what: "Relation column count",
                    value: n.into(),
                });
            }
            let mut columns = Vec::with_capacity(usize::from(n as u16).min(buf.len()));
            for _ in 0..n {
                columns.push(RelationColumn {
                    flags: r.u8("Relation column flags")?,
                    name: r.cstr("Relation column name")?,
                    type_oid: r.u32("Relation column type")?,
                    type_modifier: r.i32("Relation column type modifier")?,
                });
            }
            r.finish("Relation")?;
            Message::Relation(Relation { oid, namespace, name, replica_identity, columns })
        }
        b'Y' => {
            let m = Message::Type {
                oid: r.u32("Type OID")?,
                namespace: r.cstr("Type namespace")?,
                name: r.cstr("Type name")?,
            };
            r.finish("Type")?;
            m
        }
        b'I' => {
            let relation = r.u32("Insert relation")?;
            match r.u8("Insert marker")? {
                b'N' => {}
                found => {
                    return Err(DecodeError::UnexpectedMarker {
                        message: "Insert",
                        found: found as char,
                        expected: "'N'",
                    })
                }
            }
            let new = r.tuple()?;
            r.finish("Insert")?;
            Message::Insert { relation, new }
        }
        b'U' => {
            let relation = r.u32("Update relation")?;
            let mut old = None;
            let mut marker = r.u8("Update marker")?;
            if marker == b'K' || marker == b'O' {
                old = Some(r.tuple()?);
                marker = r.u8("Update marker")?;
            }
            if marker != b'N' {
                return Err(DecodeError::UnexpectedMarker {
                    message: "Update",
                    found: marker as char,
                    expected: "'K', 'O' or 'N'",
                });
            }
            let new = r.tuple()?;
            r.finish("Update")?;
            Message::Update { relation, old, new }
        }
        b'D' => {
            let relation = r.u32("Delete relation")?;
            match r.u8("Delete marker")? {
                b'K' | b'O' => {}
                found => {
                    return Err(DecodeError::UnexpectedMarker {
                        message: "Delete",
                        found: found as char,
                        expected: "'K' or 'O'",
                    })
                }
            }
            let old = r.tuple()?;
            r.finish("Delete")?;
            Message::Delete { relation, old }
        }
        b'T' => {
            let n = r.u32("Truncate relation count")?;
            let options = r.u8("Truncate options")?;
            let mut relations = Vec::with_capacity((n as usize).min(buf.len() / 4));
            for _ in 0..n {
                relations.push(r.u32("Truncate relation")?);
            }
            r.finish("Truncate")?;
            Message::Truncate { options, relations }
        }
        b'M' => {
            let flags = r.u8("Message flags")?;
            let lsn = r.lsn("Message LSN")?;
            let prefix = r.cstr("Message prefix")?;
            let len = r.u32("Message length")?;
            let content = r.take(len as usize, "Message content")?.to_vec();
            r.finish("Message")?;
            Message::Message { transactional: flags & 1 == 1, lsn, prefix, content }
        }
        other => return Err(DecodeError::UnknownMessage(other as char)),
    };
    Ok(msg)
}

/// Relations announced by the server, keyed by OID. pgoutput sends a Relation message before
/// the first change of a relation in a session and again whenever its definition changes, so
/// each one replaces what was cached.
#[derive(Debug, Default)]
pub struct RelationCache {
    relations: HashMap<u32, Relation>,
}

impl RelationCache {
    pub fn update(&mut self, relation: Relation) {
        self.relations.insert(relation.oid, relation);
    }

    pub fn get(&self, oid: u32) -> Option<&Relation> {
        self.relations.get(&oid)
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Encoders used to build byte fixtures, written independently of the decoder.

    pub fn cstr(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }

    pub fn relation(oid: u32, ns: &str, name: &str, cols: &[(&str, u32)]) -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend_from_slice(&oid.to_be_bytes());
        cstr(&mut m, ns);
        cstr(&mut m, name);
        m.push(b'd');
        m.extend_from_slice(&(cols.len() as i16).to_be_bytes());
        for (i, (col, ty)) in cols.iter().enumerate() {
            m.push(u8::from(i == 0));
            cstr(&mut m, col);
            m.extend_from_slice(&ty.to_be_bytes());
            m.extend_from_slice(&(-1i32).to_be_bytes());
        }
        m
    }

    pub fn tuple(out: &mut Vec<u8>, values: &[Option<&str>]) {
        out.extend_from_slice(&(values.len() as i16).to_be_bytes());
        for v in values {
            match v {
                None => out.push(b'n'),
                Some(v) => {
                    out.push(b't');
                    out.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    out.extend_from_slice(v.as_bytes());
                }
            }
        }
    }

    pub fn insert(oid: u32, values: &[Option<&str>]) -> Vec<u8> {
        let mut m = vec![b'I'];
        m.extend_from_slice(&oid.to_be_bytes());
        m.push(b'N');
        tuple(&mut m, values);
        m
    }

    pub fn begin(final_lsn: u64, xid: u32) -> Vec<u8> {
        let mut m = vec![b'B'];
        m.extend_from_slice(&final_lsn.to_be_bytes());
        m.extend_from_slice(&777i64.to_be_bytes());
        m.extend_from_slice(&xid.to_be_bytes());
        m
    }

    pub fn commit(commit_lsn: u64, end_lsn: u64) -> Vec<u8> {
        let mut m = vec![b'C', 0];
        m.extend_from_slice(&commit_lsn.to_be_bytes());
        m.extend_from_slice(&end_lsn.to_be_bytes());
        m.extend_from_slice(&777i64.to_be_bytes());
        m
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn begin_and_commit() {
        assert_eq!(
            decode(&begin(0x1_0000_0010, 42)).unwrap(),
            Message::Begin(Begin { final_lsn: Lsn(0x1_0000_0010), commit_time: 777, xid: 42 })
        );
        assert_eq!(
            decode(&commit(0x20, 0x48)).unwrap(),
            Message::Commit(Commit {
                flags: 0,
                commit_lsn: Lsn(0x20),
                end_lsn: Lsn(0x48),
                commit_time: 777
            })
        );
    }

    #[test]
    fn relation_and_insert() {
        let rel = decode(&relation(
            16384,
            "eventstore",
            "events",
            &[("global_position", 20), ("data", 3802)],
        ))
        .unwrap();
        let Message::Relation(rel) = rel else { panic!("not a relation: {rel:?}") };
        assert_eq!(rel.namespace, "eventstore");
        assert_eq!(rel.name, "events");
        assert_eq!(rel.columns[0].name, "global_position");
        assert_eq!(rel.columns[0].flags, 1);
        assert_eq!(rel.columns[1].type_oid, 3802);

        let ins = decode(&insert(16384, &[Some("7"), None])).unwrap();
        assert_eq!(
            ins,
            Message::Insert {
                relation: 16384,
                new: vec![Column::Text(b"7".to_vec()), Column::Null]
            }
        );
    }

    #[test]
    fn update_delete_truncate_origin_type_message() {
        let mut upd = vec![b'U', 0, 0, 0, 9, b'O'];
        tuple(&mut upd, &[Some("a")]);
        upd.push(b'N');
        upd.extend_from_slice(&[0, 2, b'u', b'b', 0, 0, 0, 1, 0xff]);
        assert_eq!(
            decode(&upd).unwrap(),
            Message::Update {
                relation: 9,
                old: Some(vec![Column::Text(b"a".to_vec())]),
                new: vec![Column::UnchangedToast, Column::Binary(vec![0xff])],
            }
        );

        let mut upd_new_only = vec![b'U', 0, 0, 0, 9, b'N'];
        tuple(&mut upd_new_only, &[None]);
        assert_eq!(
            decode(&upd_new_only).unwrap(),
            Message::Update { relation: 9, old: None, new: vec![Column::Null] }
        );

        let mut del = vec![b'D', 0, 0, 0, 9, b'K'];
        tuple(&mut del, &[Some("1")]);
        assert_eq!(
            decode(&del).unwrap(),
            Message::Delete { relation: 9, old: vec![Column::Text(b"1".to_vec())] }
        );

        let trunc = [b'T', 0, 0, 0, 2, 1, 0, 0, 0, 5, 0, 0, 0, 6];
        assert_eq!(
            decode(&trunc).unwrap(),
            Message::Truncate { options: 1, relations: vec![5, 6] }
        );

        let mut origin = vec![b'O'];
        origin.extend_from_slice(&5u64.to_be_bytes());
        cstr(&mut origin, "node_a");
        assert_eq!(
            decode(&origin).unwrap(),
            Message::Origin { commit_lsn: Lsn(5), name: "node_a".into() }
        );

        let mut ty = vec![b'Y', 0, 0, 0, 99];
        cstr(&mut ty, "public");
        cstr(&mut ty, "mood");
        assert_eq!(
            decode(&ty).unwrap(),
            Message::Type { oid: 99, namespace: "public".into(), name: "mood".into() }
        );

        let mut msg = vec![b'M', 1];
        msg.extend_from_slice(&8u64.to_be_bytes());
        cstr(&mut msg, "app");
        msg.extend_from_slice(&3u32.to_be_bytes());
        msg.extend_from_slice(b"hey");
        assert_eq!(
            decode(&msg).unwrap(),
            Message::Message {
                transactional: true,
                lsn: Lsn(8),
                prefix: "app".into(),
                content: b"hey".to_vec()
            }
        );
    }

    #[test]
    fn clear_errors_on_bad_input() {
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
        assert_eq!(decode(b"Z"), Err(DecodeError::UnknownMessage('Z')));
        assert!(matches!(
            decode(&[b'B', 0, 0]),
            Err(DecodeError::Truncated { what: "Begin final LSN", .. })
        ));
        let mut trailing = commit(1, 2);
        trailing.push(0);
        assert_eq!(
            decode(&trailing),
            Err(DecodeError::TrailingBytes { message: "Commit", count: 1 })
        );
        assert_eq!(
            decode(&[b'O', 0, 0, 0, 0, 0, 0, 0, 0, b'x']),
            Err(DecodeError::UnterminatedString { what: "Origin name" })
        );
        assert_eq!(
            decode(&[b'I', 0, 0, 0, 1, b'X']).unwrap_err().to_string(),
            "pgoutput: unexpected tuple marker 'X' in Insert, expected 'N'"
        );
        assert_eq!(
            decode(&[b'I', 0, 0, 0, 1, b'N', 0, 1, b'q']),
            Err(DecodeError::UnknownColumnKind('q'))
        );
        assert_eq!(
            decode(&[b'I', 0, 0, 0, 1, b'N', 0xff, 0xff]),
            Err(DecodeError::Negative { what: "tuple column count", value: -1 })
        );
    }

    #[test]
    fn relation_cache_replaces_by_oid() {
        let mut cache = RelationCache::default();
        let Message::Relation(a) = decode(&relation(1, "s", "t", &[("a", 23)])).unwrap() else {
            unreachable!()
        };
        let Message::Relation(b) = decode(&relation(1, "s", "t", &[("a", 23), ("b", 25)])).unwrap()
        else {
            unreachable!()
        };
        cache.update(a);
        assert_eq!(cache.get(1).unwrap().columns.len(), 1);
        cache.update(b);
        assert_eq!(cache.get(1).unwrap().columns.len(), 2);
        assert!(cache.get(2).is_none());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn any_known_tag_with_arbitrary_body_never_panics(
            tag in proptest::sample::select(b"BCORYIUDTM".to_vec()),
            body in proptest::collection::vec(any::<u8>(), 0..128),
        ) {
            let mut bytes = vec![tag];
            bytes.extend(body);
            let _ = decode(&bytes);
        }

        #[test]
        fn truncated_valid_messages_error_instead_of_panicking(cut in 0usize..64) {
            let full = insert(7, &[Some("12"), None, Some("{\"a\": 1}")]);
            let cut = cut.min(full.len() - 1);
            prop_assert!(decode(&full[..cut]).is_err());
        }
    }
}
