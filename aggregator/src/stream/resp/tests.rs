use super::*;
use proptest::prelude::*;

/// A stream entry as a test writes it: its id and fields.
type RawEntry = (String, Option<Vec<(Vec<u8>, Vec<u8>)>>);

fn bulk(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

/// The RESP2 bytes Redis sends for an `XREADGROUP` over `streams`.
fn encode(streams: &[(String, Vec<RawEntry>)]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", streams.len()).into_bytes();
    for (key, entries) in streams {
        out.extend_from_slice(b"*2\r\n");
        bulk(&mut out, key.as_bytes());
        out.extend_from_slice(format!("*{}\r\n", entries.len()).as_bytes());
        for (id, fields) in entries {
            out.extend_from_slice(b"*2\r\n");
            bulk(&mut out, id.as_bytes());
            match fields {
                None => out.extend_from_slice(b"*-1\r\n"),
                Some(fields) => {
                    out.extend_from_slice(format!("*{}\r\n", fields.len() * 2).as_bytes());
                    for (k, v) in fields {
                        bulk(&mut out, k);
                        bulk(&mut out, v);
                    }
                }
            }
        }
    }
    out
}

/// What redis-rs' own parser and the generic reader make of `bytes`.
fn by_redis_rs(bytes: &[u8]) -> Vec<(String, Vec<Entry>)> {
    super::super::parse_reply(redis::parse_redis_value(bytes).expect("redis-rs parses it"))
}

/// Feeds `bytes` to a scan in pieces cut at `cuts`; the length it reports
/// and the number of pieces it needed.
fn scan_in_pieces(bytes: &[u8], cuts: &[usize]) -> (Option<usize>, usize) {
    let mut scan = Scan::default();
    let mut ends: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    ends.push(bytes.len());
    ends.sort_unstable();
    for (i, end) in ends.iter().enumerate() {
        if let Some(len) = scan.advance(&bytes[..*end]).expect("well formed") {
            return (Some(len), i + 1);
        }
    }
    (None, ends.len())
}

#[test]
fn reads_entries_including_trimmed_and_foreign_ones() {
    let streams = vec![(
        "crowd:{1}:reports".to_owned(),
        vec![
            (
                "1-0".to_owned(),
                Some(vec![(b"r".to_vec(), b"a\r\nbc".to_vec())]),
            ),
            ("2-0".to_owned(), None),
            ("3-0".to_owned(), Some(vec![(b"x".to_vec(), b"y".to_vec())])),
        ],
    )];
    let bytes = encode(&streams);
    assert_eq!(Scan::default().advance(&bytes), Ok(Some(bytes.len())));
    let read = parse(&bytes).expect("parses");
    assert_eq!(read, by_redis_rs(&bytes));
    assert_eq!(read[0].1[0].payload.as_deref(), Some(&b"a\r\nbc"[..]));
    assert_eq!(read[0].1[1].payload, None);
    assert_eq!(read[0].1[2].payload, None);
    assert_eq!(read[0].1[2].id, "3-0");
}

#[test]
fn nothing_to_read_is_a_null_array() {
    assert_eq!(Scan::default().advance(b"*-1\r\n"), Ok(Some(5)));
    assert_eq!(parse(b"*-1\r\n"), Ok(Vec::new()));
}

#[test]
fn an_error_line_is_the_servers_error() {
    let line = b"-NOGROUP No such key 'k' or consumer group 'g'\r\n";
    assert_eq!(Scan::default().advance(line), Ok(Some(line.len())));
    assert_eq!(
        parse(line),
        Err(ReplyError::Server(
            "NOGROUP No such key 'k' or consumer group 'g'".to_owned()
        ))
    );
}

#[test]
fn malformed_bytes_are_a_protocol_error_not_a_panic() {
    for bad in [
        &b"?1\r\n"[..],
        b"*1\n",
        b"*x\r\n",
        b"*1\r\n:5\r\n",
        b"*1\r\n*2\r\n$9\r\nab\r\n",
    ] {
        let scanned = Scan::default().advance(bad);
        let parsed = parse(bad);
        assert!(
            scanned.is_err() || matches!(parsed, Err(ReplyError::Protocol(_))),
            "{bad:?}: {scanned:?} / {parsed:?}"
        );
    }
}

fn entry() -> impl Strategy<Value = RawEntry> {
    let field = (
        prop_oneof![Just(b"r".to_vec()), Just(b"x".to_vec())],
        proptest::collection::vec(any::<u8>(), 0..40),
    );
    (
        (0u64..1 << 40, 0u64..9).prop_map(|(ms, seq)| format!("{ms}-{seq}")),
        proptest::option::weighted(0.9, proptest::collection::vec(field, 0..3)),
    )
}

fn reply() -> impl Strategy<Value = Vec<(String, Vec<RawEntry>)>> {
    proptest::collection::vec(
        (
            "crowd:\\{[0-9]{1,3}\\}:reports",
            proptest::collection::vec(entry(), 0..12),
        ),
        0..4,
    )
}

proptest! {
    /// Whatever the entries and however the bytes arrive, the scan finds
    /// the reply's end exactly when its last byte is in, and the reader
    /// agrees with redis-rs' parser.
    #[test]
    fn agrees_with_redis_rs_however_the_bytes_arrive(
        streams in reply(),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let bytes = encode(&streams);
        let (len, _) = scan_in_pieces(&bytes, &cuts);
        prop_assert_eq!(len, Some(bytes.len()));
        for cut in &cuts {
            let end = cut % bytes.len();
            prop_assert_eq!(Scan::default().advance(&bytes[..end]), Ok(None));
        }
        prop_assert_eq!(parse(&bytes).expect("parses"), by_redis_rs(&bytes));
    }
}
