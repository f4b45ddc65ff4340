//! Raw-socket conformance tests: handshake variants, every command and flag, negative cases,
//! many requests in flight, multi-connection durability, DISC and shutdown draining.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use common::{Raw, Received, file_volume, pattern, start, volume_on};
use uvdo_io::sim::{CrashPlan, FaultEffect, FaultRule, SimStore, Trigger};
use uvdo_nbd::ServeConfig;
use uvdo_nbd::proto::flags;
use uvdo_nbd::proto::handshake::{FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES};
use uvdo_nbd::proto::option::{
    ClientOption, ExportQuery, MetaQuery, OPT_EXTENDED_HEADERS, OPT_STARTTLS, OptionHeader,
};
use uvdo_nbd::proto::option_reply::{
    ExportNameReply, INFO_NAME, InfoItem, OptionError, OptionReplyKind,
};
use uvdo_nbd::proto::reply::{BlockDescriptor, Chunk, STATE_HOLE, STATE_ZERO};
use uvdo_nbd::proto::request::{
    Command, FLAG_DF, FLAG_FAST_ZERO, FLAG_FUA, FLAG_NO_HOLE, FLAG_REQ_ONE,
};
use uvdo_nbd::proto::{BASE_ALLOCATION, NAME_BYTES_MAX, NbdErrno, OPTIONS_PER_SESSION_MAX};

const MIB: u64 = 1 << 20;
const EINVAL: u32 = 22;

fn setup() -> (
    tempfile::TempDir,
    Arc<uvdo::Volume>,
    uvdo_nbd::ServerHandle,
    std::path::PathBuf,
) {
    let dir = tempfile::tempdir().unwrap();
    let volume = file_volume(dir.path(), 64 * MIB, 128 * MIB);
    let (server, path) = start(&volume, dir.path(), ServeConfig::default());
    (dir, volume, server, path)
}

fn go(name: &str, requests: Vec<u16>) -> ClientOption {
    ClientOption::Go(ExportQuery {
        name: name.into(),
        requests,
    })
}

fn err_of(replies: &[OptionReplyKind]) -> Option<OptionError> {
    match replies.last() {
        Some(OptionReplyKind::Error { error, .. }) => Some(*error),
        _ => None,
    }
}

#[test]
fn go_advertises_flags_and_block_sizes() {
    let (_dir, _volume, _server, path) = setup();
    let mut c = Raw::connect(&path);
    assert_eq!(c.greet().flags, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
    c.client_flags(true);
    let replies = c.ask(&go("", vec![INFO_NAME]));
    assert!(replies.contains(&OptionReplyKind::Info(InfoItem::Export {
        size: 128 * MIB,
        flags: flags::for_export(false, false),
    })));
    assert!(replies.contains(&OptionReplyKind::Info(InfoItem::Name(String::new()))));
    assert!(
        replies.contains(&OptionReplyKind::Info(InfoItem::BlockSize {
            min: 512,
            preferred: 4096,
            max: 32 << 20,
        }))
    );
    let f = flags::for_export(false, false);
    assert_ne!(f & flags::CAN_MULTI_CONN, 0);
    assert_eq!(f & flags::SEND_DF, 0, "DF only with structured replies");
    assert_eq!(c.write(0, &[7; 4096], 0), 0);
    assert_eq!(c.read(0, 4096, 0).unwrap(), vec![7; 4096]);
}

#[test]
fn export_name_with_and_without_zeroes() {
    let (_dir, _volume, _server, path) = setup();
    for no_zeroes in [true, false] {
        let mut c = Raw::connect(&path);
        c.greet();
        c.client_flags(no_zeroes);
        c.option(&ClientOption::ExportName(String::new()));
        let mut buf = vec![0; if no_zeroes { 10 } else { 134 }];
        std::io::Read::read_exact(&mut c.s, &mut buf).unwrap();
        let reply = ExportNameReply::decode(&buf, !no_zeroes).unwrap();
        assert_eq!(reply.size, 128 * MIB);
        assert_eq!(c.write(4096, &[1; 512], FLAG_FUA), 0);
    }
    let mut c = Raw::connect(&path);
    c.greet();
    c.client_flags(true);
    c.option(&ClientOption::ExportName("nope".into()));
    assert!(c.closed(), "an unknown export ends the session");
}

#[test]
fn list_then_abort() {
    let (_dir, _volume, _server, path) = setup();
    let mut c = Raw::connect(&path);
    c.greet();
    c.client_flags(true);
    let replies = c.ask(&ClientOption::List);
    assert_eq!(
        replies,
        [OptionReplyKind::Server(String::new()), OptionReplyKind::Ack]
    );
    assert_eq!(c.ask(&ClientOption::Abort), [OptionReplyKind::Ack]);
    assert!(c.closed());
}

#[test]
fn unsupported_options_then_go_works() {
    let (_dir, _volume, _server, path) = setup();
    let mut c = Raw::connect(&path);
    c.greet();
    c.client_flags(true);
    for code in [OPT_STARTTLS, OPT_EXTENDED_HEADERS, 999] {
        let replies = c.ask(&ClientOption::Unsupported(code));
        assert_eq!(err_of(&replies), Some(OptionError::Unsup), "option {code}");
    }
    // Unknown option with data: the data is consumed, the session stays in sync.
    let mut out = Vec::new();
    OptionHeader { code: 77, len: 5 }.encode(&mut out);
    out.extend_from_slice(b"hello");
    c.s.write_all(&out).unwrap();
    assert_eq!(err_of(&c.option_replies()), Some(OptionError::Unsup));
    // INFO of an unknown export, then of the default one.
    let info = ClientOption::Info(ExportQuery {
        name: "other".into(),
        requests: vec![],
    });
    assert_eq!(err_of(&c.ask(&info)), Some(OptionError::Unknown));
    let info = ClientOption::Info(ExportQuery {
        name: String::new(),
        requests: vec![],
    });
    assert_eq!(c.ask(&info).last(), Some(&OptionReplyKind::Ack));
    assert_eq!(c.ask(&go("", vec![])).last(), Some(&OptionReplyKind::Ack));
    assert_eq!(c.write(0, &[3; 4096], 0), 0);
}

#[test]
fn malformed_options_get_errors_and_negotiation_goes_on() {
    let (_dir, _volume, _server, path) = setup();
    let mut c = Raw::connect(&path);
    c.greet();
    c.client_flags(true);
    let long = "n".repeat(NAME_BYTES_MAX + 1);
    assert_eq!(
        err_of(&c.ask(&go(&long, vec![]))),
        Some(OptionError::TooBig)
    );
    // STRUCTURED_REPLY with data is invalid.
    let mut out = Vec::new();
    OptionHeader { code: 8, len: 3 }.encode(&mut out);
    out.extend_from_slice(b"abc");
    c.s.write_all(&out).unwrap();
    assert_eq!(err_of(&c.option_replies()), Some(OptionError::Invalid));
    // GO whose request count overruns the data.
    let mut out = Vec::new();
    OptionHeader { code: 7, len: 6 }.encode(&mut out);
    out.extend_from_slice(&[0, 0, 0, 0, 0, 9]);
    c.s.write_all(&out).unwrap();
    assert_eq!(err_of(&c.option_replies()), Some(OptionError::Invalid));
    assert_eq!(c.ask(&go("", vec![])).last(), Some(&OptionReplyKind::Ack));
}

#[test]
fn hostile_handshakes_are_closed() {
    let (_dir, _volume, _server, path) = setup();
    // A huge option length: closed before anything is buffered.
    let mut c = Raw::connect(&path);
    c.greet();
    c.client_flags(true);
    let mut out = Vec::new();
    OptionHeader {
        code: 7,
        len: u32::MAX,
    }
    .encode(&mut out);
    c.s.write_all(&out).unwrap();
    assert!(c.closed());
    // Unknown client flags.
    let mut c = Raw::connect(&path);
    c.greet();
    c.s.write_all(&[0, 0, 0, 0x80]).unwrap();
    assert!(c.closed());
    // Too many options.
    let mut c = Raw::connect(&path);
    c.greet();
    c.client_flags(true);
    for _ in 0..OPTIONS_PER_SESSION_MAX {
        assert_eq!(c.ask(&ClientOption::List).len(), 2);
    }
    let mut out = Vec::new();
    ClientOption::List.encode(&mut out);
    // The server may have closed already (then the write fails): either way, no reply.
    let _ = c.s.write_all(&out);
    assert!(c.closed());
    // A legitimate client still gets in.
    let mut c = Raw::connect_go(&path, true, true);
    assert_eq!(c.write(0, &[1; 4096], 0), 0);
}

#[test]
fn a_handshake_that_never_finishes_is_closed() {
    let config = ServeConfig {
        handshake_timeout: Duration::from_millis(200),
        ..ServeConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let volume = file_volume(dir.path(), 64 * MIB, 128 * MIB);
    let (_server, path) = start(&volume, dir.path(), config);
    let mut c = Raw::connect(&path);
    c.greet();
    c.client_flags(true);
    // Trickle one byte of an option: the deadline covers the handshake, not each read.
    c.s.write_all(&[0x49]).unwrap();
    assert!(c.closed());
}

#[test]
fn meta_contexts() {
    let (_dir, _volume, _server, path) = setup();
    let mut c = Raw::connect(&path);
    c.greet();
    c.client_flags(true);
    let meta = |queries: Vec<&str>| MetaQuery {
        export: String::new(),
        queries: queries.into_iter().map(String::from).collect(),
    };
    let ours = OptionReplyKind::MetaContext {
        id: 1,
        name: BASE_ALLOCATION.into(),
    };
    let set = ClientOption::SetMetaContext(meta(vec![BASE_ALLOCATION]));
    assert_eq!(
        err_of(&c.ask(&set)),
        Some(OptionError::Invalid),
        "needs structured"
    );
    let listed = c.ask(&ClientOption::ListMetaContext(meta(vec![])));
    assert_eq!(listed, [ours.clone(), OptionReplyKind::Ack]);
    let listed = c.ask(&ClientOption::ListMetaContext(meta(vec!["base:"])));
    assert_eq!(listed, [ours.clone(), OptionReplyKind::Ack]);
    c.ask(&ClientOption::StructuredReply);
    let other = ClientOption::SetMetaContext(meta(vec!["qemu:dirty-bitmap:x"]));
    assert_eq!(c.ask(&other), [OptionReplyKind::Ack]);
    assert_eq!(c.ask(&set), [ours, OptionReplyKind::Ack]);
    let flags = match &c.ask(&go("", vec![]))[0] {
        OptionReplyKind::Info(InfoItem::Export { flags, .. }) => *flags,
        other => panic!("{other:?}"),
    };
    assert_ne!(flags & flags::SEND_DF, 0);
    c.send(Command::BlockStatus, 0, 0, 1 << 20, &[]);
    let replies = c.reply();
    let Received::Chunk { reply, .. } = &replies[0] else {
        panic!("{replies:?}")
    };
    let Chunk::BlockStatus {
        context_id,
        extents,
    } = &reply.chunk
    else {
        panic!("{reply:?}")
    };
    assert_eq!(*context_id, 1);
    assert_eq!(
        extents,
        &[BlockDescriptor {
            length: 1 << 20,
            flags: STATE_HOLE | STATE_ZERO
        }]
    );
}

fn extents_of(c: &mut Raw, offset: u64, len: u32, flags: u16) -> Vec<(u32, u32)> {
    c.send(Command::BlockStatus, flags, offset, len, &[]);
    let replies = c.reply();
    let Received::Chunk { reply, .. } = &replies[0] else {
        panic!("{replies:?}")
    };
    let Chunk::BlockStatus { extents, .. } = &reply.chunk else {
        panic!("{reply:?}")
    };
    extents.iter().map(|e| (e.length, e.flags)).collect()
}

#[test]
fn every_command_and_flag_with_structured_replies() {
    let (_dir, volume, _server, path) = setup();
    let mut c = Raw::connect_go(&path, true, true);
    let data = pattern(1, 64 << 10);
    assert_eq!(c.write(0, &data, 0), 0);
    assert_eq!(c.write(64 << 10, &data, FLAG_FUA), 0);
    assert_eq!(c.read(0, 64 << 10, 0).unwrap(), data);
    // Zeroes: plain, NO_HOLE, FAST_ZERO, FUA; all metadata-only.
    for flags in [0, FLAG_NO_HOLE, FLAG_FAST_ZERO, FLAG_FUA | FLAG_NO_HOLE] {
        c.send(Command::WriteZeroes, flags, 4096, 8192, &[]);
        assert_eq!(c.error_of(), 0, "flags {flags:#x}");
    }
    c.send(Command::Trim, FLAG_FUA, 32 << 10, 4096, &[]);
    assert_eq!(c.error_of(), 0);
    c.send(Command::Flush, 0, 0, 0, &[]);
    assert_eq!(c.error_of(), 0);
    c.send(Command::Cache, 0, 0, 4096, &[]);
    assert_eq!(c.error_of(), 0);
    let mut expect = data.clone();
    expect[4096..12288].fill(0);
    expect[32 << 10..36 << 10].fill(0);
    // A read over data and holes: hole chunks for the zeroed and trimmed blocks.
    c.send(Command::Read, 0, 0, 64 << 10, &[]);
    let replies = c.reply();
    let holes = replies
        .iter()
        .filter(|r| {
            matches!(r, Received::Chunk { reply, .. }
            if matches!(reply.chunk, Chunk::OffsetHole { .. }))
        })
        .count();
    assert_eq!(holes, 2, "{replies:?}");
    assert_eq!(common::assemble(0, 64 << 10, &replies).unwrap(), expect);
    // DF: one data chunk.
    c.send(Command::Read, FLAG_DF, 0, 64 << 10, &[]);
    let replies = c.reply();
    assert_eq!(replies.len(), 1);
    assert_eq!(common::assemble(0, 64 << 10, &replies).unwrap(), expect);
    // An unmapped range reads as a single hole.
    c.send(Command::Read, 0, 32 * MIB, 1 << 20, &[]);
    let replies = c.reply();
    assert_eq!(replies.len(), 1);
    assert!(matches!(&replies[0], Received::Chunk { reply, .. }
        if reply.chunk == Chunk::OffsetHole { offset: 32 * MIB, len: 1 << 20 }));
    // Block status, whole and REQ_ONE.
    let hz = STATE_HOLE | STATE_ZERO;
    let all = extents_of(&mut c, 0, 256 << 10, 0);
    assert_eq!(
        all,
        [
            (4096, 0),
            (8192, hz),
            (20480, 0),
            (4096, hz),
            (94208, 0),
            (131072, hz)
        ]
    );
    assert_eq!(extents_of(&mut c, 0, 256 << 10, FLAG_REQ_ONE), [(4096, 0)]);
    assert_eq!(extents_of(&mut c, 4096, 4096, 0), [(4096, hz)]);
    // DISC: the connection closes, and the data is in the volume.
    c.send(Command::Disc, 0, 0, 0, &[]);
    assert!(c.closed());
    let mut back = vec![0; 64 << 10];
    volume.read(0, &mut back).unwrap();
    assert_eq!(back, expect);
}

#[test]
fn simple_replies_for_every_command() {
    let (_dir, _volume, _server, path) = setup();
    let mut c = Raw::connect_go(&path, false, false);
    let data = pattern(2, 8192);
    assert_eq!(c.write(8192, &data, FLAG_FUA), 0);
    c.send(Command::WriteZeroes, FLAG_NO_HOLE, 8192, 4096, &[]);
    assert_eq!(c.error_of(), 0);
    c.send(Command::Trim, 0, 12288, 512, &[]);
    assert_eq!(c.error_of(), 0);
    c.send(Command::Flush, 0, 0, 0, &[]);
    assert_eq!(c.error_of(), 0);
    c.send(Command::Cache, 0, 0, 512, &[]);
    assert_eq!(c.error_of(), 0);
    let mut expect = data.clone();
    expect[..4096].fill(0);
    expect[4096..4608].fill(0);
    assert_eq!(c.read(8192, 8192, 0).unwrap(), expect);
    // Without structured replies: DF and BLOCK_STATUS are invalid, the session goes on.
    assert_eq!(c.read(0, 512, FLAG_DF), Err(EINVAL));
    c.send(Command::BlockStatus, 0, 0, 4096, &[]);
    assert_eq!(c.error_of(), EINVAL);
    assert_eq!(c.read(8192, 8192, 0).unwrap(), expect);
}

#[test]
fn bad_requests_get_einval_and_the_connection_survives() {
    let (_dir, _volume, _server, path) = setup();
    for structured in [false, true] {
        let mut c = Raw::connect_go(&path, structured, structured);
        let size = 128 * MIB;
        let cases: Vec<(Command, u16, u64, u32, Vec<u8>)> = vec![
            (Command::Read, 0, size, 512, vec![]),
            (Command::Read, 0, size - 512, 1024, vec![]),
            (Command::Read, 0, u64::MAX - 511, 1024, vec![]),
            (Command::Write, 0, size, 512, vec![9; 512]),
            (Command::Write, 0, 100, 512, vec![9; 512]),
            (Command::Write, 0, 0, 100, vec![9; 100]),
            (Command::Write, 1 << 5, 0, 512, vec![9; 512]),
            (Command::Trim, 0, size - 4096, 8192, vec![]),
            (Command::WriteZeroes, FLAG_DF, 0, 4096, vec![]),
            (Command::Trim, FLAG_NO_HOLE, 0, 4096, vec![]),
            (Command::Read, 0, 0, 0, vec![]),
            (Command::Read, 0, 0, (32 << 20) + 512, vec![]),
            (Command::Cache, 0, size, 4096, vec![]),
            (Command::Unknown(8), 0, 0, 0, vec![]),
            (Command::Unknown(4242), 0, 0, 4096, vec![]),
            (Command::Flush, 1 << 15, 0, 0, vec![]),
        ];
        for (command, flags, offset, len, data) in cases {
            c.send(command, flags, offset, len, &data);
            assert_eq!(
                c.error_of(),
                EINVAL,
                "{command:?} {flags:#x} {offset} {len}"
            );
            assert_eq!(c.write(0, &[5; 512], 0), 0, "after {command:?}");
            assert_eq!(c.read(0, 512, 0).unwrap(), vec![5; 512]);
        }
        assert_eq!(NbdErrno::from_code(EINVAL), NbdErrno::Inval);
    }
}

#[test]
fn fatal_requests_close_only_their_connection() {
    let (_dir, _volume, _server, path) = setup();
    let mut bystander = Raw::connect_go(&path, true, true);
    // A WRITE payload over 32 MiB: hang up before buffering it.
    let mut c = Raw::connect_go(&path, true, true);
    c.send(Command::Write, 0, 0, (32 << 20) + 4096, &[]);
    assert!(c.closed());
    // A bad request magic.
    let mut c = Raw::connect_go(&path, false, false);
    c.s.write_all(&[0xff; 28]).unwrap();
    assert!(c.closed());
    // A client that vanishes with big reads in flight.
    let mut c = Raw::connect_go(&path, true, false);
    for i in 0..4 {
        c.send(Command::Read, 0, i * (32 << 20), 32 << 20, &[]);
    }
    drop(c);
    assert_eq!(bystander.write(4096, &[8; 4096], 0), 0);
    assert_eq!(bystander.read(4096, 4096, 0).unwrap(), vec![8; 4096]);
    let mut c = Raw::connect_go(&path, true, true);
    assert_eq!(c.read(4096, 4096, 0).unwrap(), vec![8; 4096]);
}

#[test]
fn many_requests_in_flight_each_answered_once() {
    let (_dir, _volume, _server, path) = setup();
    let mut c = Raw::connect_go(&path, true, false);
    let n: u64 = 400;
    let mut sender = Raw::from_stream(c.s.try_clone().unwrap());
    // Writes first (each to its own block), then reads of the same blocks, all pipelined.
    let cookies = std::thread::spawn(move || {
        for i in 0..n {
            let data = pattern(i, 4096);
            sender.send_with(i, Command::Write, 0, i * 4096, 4096, &data);
        }
        for i in 0..n {
            sender.send_with(n + i, Command::Read, 0, (n - 1 - i) * 4096, 4096, &[]);
        }
        sender.send_with(2 * n, Command::Flush, 0, 0, 0, &[]);
    });
    let mut done = std::collections::HashSet::new();
    let mut order = Vec::new();
    while done.len() < usize::try_from(2 * n + 1).unwrap() {
        let r = c.receive().expect("every request is answered");
        if let Received::Chunk { reply, .. } = &r
            && let Chunk::Error { error, .. } = &reply.chunk
        {
            panic!("cookie {}: {error:?}", reply.cookie);
        }
        if let Received::Simple { error, cookie, .. } = &r {
            assert_eq!(*error, 0, "cookie {cookie}");
        }
        if r.done() {
            assert!(
                done.insert(r.cookie()),
                "cookie {} answered twice",
                r.cookie()
            );
            order.push(r.cookie());
        }
    }
    cookies.join().unwrap();
    // The writes were acknowledged before the reads were answered? Not required; but all
    // the data must be there now.
    for i in 0..n {
        assert_eq!(c.read(i * 4096, 4096, 0).unwrap(), pattern(i, 4096));
    }
    println!("first replies in order: {:?}", &order[..16]);
}

#[test]
fn flush_on_one_connection_makes_the_others_writes_durable() {
    let store = Arc::new(SimStore::with_seed(64 * MIB, 7));
    let volume = Arc::new(volume_on(store.clone(), 64 * MIB));
    let dir = tempfile::tempdir().unwrap();
    let (server, path) = start(&volume, dir.path(), ServeConfig::default());
    let mut a = Raw::connect_go(&path, true, false);
    let mut b = Raw::connect_go(&path, false, false);
    let blocks: u64 = 64;
    for i in 0..blocks {
        assert_eq!(a.write(i * 4096, &pattern(100 + i, 4096), 0), 0);
    }
    b.send(Command::Flush, 0, 0, 0, &[]);
    assert_eq!(b.error_of(), 0);
    // Power cut now: only what is durable survives.
    let crashed = Arc::new(store.crash(CrashPlan::KeepNone));
    drop((a, b));
    server.shutdown();
    drop(volume);
    let reopened = uvdo::Volume::open(crashed, &uvdo::OpenOptions::default()).unwrap();
    for i in 0..blocks {
        let mut back = vec![0; 4096];
        reopened.read(i * 4096, &mut back).unwrap();
        assert_eq!(
            back,
            pattern(100 + i, 4096),
            "block {i} (seed {})",
            store.seed()
        );
    }
    assert!(reopened.audit().unwrap().is_clean());
}

#[test]
fn engine_errors_map_to_nbd_errors() {
    let store = Arc::new(SimStore::with_seed(64 * MIB, 11));
    let volume = Arc::new(volume_on(store.clone(), 64 * MIB));
    let dir = tempfile::tempdir().unwrap();
    let (_server, path) = start(&volume, dir.path(), ServeConfig::default());
    let mut c = Raw::connect_go(&path, true, true);
    assert_eq!(c.write(0, &pattern(1, 4096), 0), 0);
    store.inject(FaultRule::new(Trigger::Always, FaultEffect::WriteError));
    store.inject(FaultRule::new(Trigger::Always, FaultEffect::FlushError));
    // The store fails: EIO (or EPERM once the volume has gone read-only).
    let first = c.write(8192, &pattern(2, 4096), FLAG_FUA);
    assert!(first == 5 || first == 1, "errno {first}");
    c.send(Command::Flush, 0, 0, 0, &[]);
    let flush = c.error_of();
    assert!(flush == 5 || flush == 1, "errno {flush}");
    assert_eq!(volume.operating_mode(), uvdo::OperatingMode::ReadOnly);
    assert_eq!(
        c.write(16384, &pattern(3, 4096), 0),
        1,
        "EPERM when read-only"
    );
    c.send(Command::Trim, 0, 0, 4096, &[]);
    assert_eq!(c.error_of(), 1);
    assert_eq!(
        c.read(0, 4096, 0).unwrap(),
        pattern(1, 4096),
        "reads still work"
    );
    // A new session sees a read-only export.
    let mut d = Raw::connect(&path);
    let flags = d.go(true, false);
    assert_ne!(flags & flags::READ_ONLY, 0);
}

#[test]
fn disc_and_shutdown_drain_in_flight_requests() {
    let dir = tempfile::tempdir().unwrap();
    let volume = file_volume(dir.path(), 64 * MIB, 128 * MIB);
    let (server, path) = start(&volume, dir.path(), ServeConfig::default());
    let n: u64 = 64;
    let mut c = Raw::connect_go(&path, false, false);
    let mut out = Vec::new();
    for i in 0..n {
        uvdo_nbd::proto::request::Request {
            flags: 0,
            command: Command::Write,
            cookie: i,
            offset: i * 8192,
            length: 8192,
        }
        .encode(&mut out);
        out.extend_from_slice(&pattern(500 + i, 8192));
    }
    uvdo_nbd::proto::request::Request {
        flags: 0,
        command: Command::Disc,
        cookie: n,
        offset: 0,
        length: 0,
    }
    .encode(&mut out);
    c.s.write_all(&out).unwrap();
    let mut answered = 0;
    while let Some(r) = c.receive() {
        assert!(matches!(r, Received::Simple { error: 0, .. }), "{r:?}");
        answered += 1;
    }
    assert_eq!(
        answered, n,
        "every write before DISC is answered before the close"
    );
    // Shutdown with a connection open: it sees end of stream; the server returns.
    let mut idle = Raw::connect_go(&path, true, true);
    server.shutdown();
    assert!(idle.closed());
    let volume = Arc::into_inner(volume).expect("the server dropped its references");
    volume.close().unwrap();
    let volume = common::reopen(dir.path());
    for i in 0..n {
        let mut back = vec![0; 8192];
        volume.read(i * 8192, &mut back).unwrap();
        assert_eq!(back, pattern(500 + i, 8192));
    }
}

#[test]
fn tcp_and_limits_on_connections() {
    let dir = tempfile::tempdir().unwrap();
    let volume = file_volume(dir.path(), 64 * MIB, 128 * MIB);
    let listener = uvdo_nbd::Listener::bind_tcp(0).unwrap();
    let uri = listener.uri().unwrap();
    let server = uvdo_nbd::serve(Arc::clone(&volume), listener, ServeConfig::default()).unwrap();
    assert_eq!(server.uri(), Some(uri.as_str()));
    let port: u16 = uri.rsplit(':').next().unwrap().parse().unwrap();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut g = [0; 18];
    std::io::Read::read_exact(&mut s, &mut g).unwrap();
    assert!(uvdo_nbd::proto::handshake::Greeting::decode(&g).is_ok());
    drop(s);
    server.shutdown();
}
