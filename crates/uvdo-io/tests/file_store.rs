//! The file and io_uring stores on real files (and a loop device where allowed): request
//! checks, O_DIRECT bouncing, read-only mode, create, discard, resize, batches, engine choice.

mod loop_device;

use std::path::Path;

use uvdo_io::file::{FileKind, FileOptions, FileStore};
use uvdo_io::open::{Engine, EngineUsed, OpenOptions, open, open_store};
use uvdo_io::uring::{self, UringStore};
use uvdo_io::{IoError, IoOp, Storage};

const STORE_BYTES: u64 = 64 * 1024;

/// The engines to test here, saying so when io_uring is missing.
fn engines() -> Vec<Engine> {
    match uring::probe() {
        Ok(()) => vec![Engine::File, Engine::Uring],
        Err(e) => {
            println!("io_uring NOT AVAILABLE here, testing the file store only: {e}");
            vec![Engine::File]
        }
    }
}

fn create(path: &Path, engine: Engine, direct: bool) -> Option<Box<dyn Storage>> {
    let opts = OpenOptions {
        engine,
        direct,
        read_only: false,
        create_size: Some(STORE_BYTES),
    };
    match open(path, &opts) {
        Ok(store) => Some(Box::new(store)),
        Err(e) if direct && e.errno() == libc::EINVAL => {
            println!("O_DIRECT unsupported on the temp filesystem: {e}; skipped");
            None
        }
        Err(e) => panic!("cannot create {}: {e}", path.display()),
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from(i % 251).unwrap() ^ seed)
        .collect()
}

#[test]
fn o_direct_bounces_unaligned_buffers_and_offsets() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("direct");
        let Some(store) = create(&path, engine, true) else {
            return;
        };
        let base = pattern(3 * 4096, 1);
        store.write_at(4096, &base).unwrap();
        // One byte into a Vec: never 4096-aligned, so bounced; 512-aligned offsets inside a
        // block make it a read-modify-write that must keep the neighbours.
        let mut backing = vec![0_u8; 1024 + 1];
        backing[1..].copy_from_slice(&pattern(1024, 7));
        store.write_at(4096 + 512, &backing[1..]).unwrap();
        store.write_at_fua(2 * 4096 + 3584, &backing[1..]).unwrap();
        let mut expected = base.clone();
        expected[512..1536].copy_from_slice(&backing[1..]);
        expected[4096 + 3584..4096 + 4608].copy_from_slice(&backing[1..]);
        let mut read_backing = vec![0_u8; expected.len() + 3];
        store.read_at(4096, &mut read_backing[3..]).unwrap();
        assert_eq!(&read_backing[3..], &expected[..], "{engine:?}");
        let mut small = vec![0_u8; 512 + 5];
        store.read_at(4096 + 1024, &mut small[5..]).unwrap();
        assert_eq!(&small[5..], &expected[1024..1536], "{engine:?}");
        drop(store);
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(&on_disk[4096..4 * 4096], &expected[..], "{engine:?}");
        assert!(on_disk[..4096].iter().all(|&b| b == 0), "{engine:?}");
    }
}

#[test]
fn bad_ranges_give_the_right_errors() {
    for engine in engines() {
        for direct in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let Some(store) = create(&dir.path().join("s"), engine, direct) else {
                continue;
            };
            let mut buf = vec![0_u8; 1024];
            assert!(matches!(
                store.read_at(STORE_BYTES - 512, &mut buf),
                Err(IoError::OutOfRange { op: IoOp::Read, offset, len: 1024, size_bytes })
                    if offset == STORE_BYTES - 512 && size_bytes == STORE_BYTES
            ));
            assert!(matches!(
                store.write_at(u64::MAX - 511, &buf[..512]),
                Err(IoError::OutOfRange {
                    op: IoOp::Write,
                    ..
                })
            ));
            assert!(matches!(
                store.write_at_fua(100, &buf[..512]),
                Err(IoError::Misaligned {
                    op: IoOp::Write,
                    offset: 100,
                    len: 512
                })
            ));
            assert!(matches!(
                store.read_at(512, &mut buf[..100]),
                Err(IoError::Misaligned {
                    op: IoOp::Read,
                    offset: 512,
                    len: 100
                })
            ));
            assert!(matches!(
                store.discard(STORE_BYTES, 512),
                Err(IoError::OutOfRange {
                    op: IoOp::Discard,
                    ..
                })
            ));
            assert!(matches!(
                store.resize(1000),
                Err(IoError::Misaligned {
                    op: IoOp::Resize,
                    offset: 1000,
                    len: 0
                })
            ));
            // Nothing was written by the refused requests.
            store.read_at(0, &mut buf).unwrap();
            assert!(buf.iter().all(|&b| b == 0), "{engine:?} direct={direct}");
        }
    }
}

#[test]
fn a_read_only_store_refuses_writes() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ro");
        let data = pattern(4096, 3);
        create(&path, engine, false)
            .unwrap()
            .write_at_fua(0, &data)
            .unwrap();
        let opts = OpenOptions {
            engine,
            read_only: true,
            ..OpenOptions::default()
        };
        let store = open(&path, &opts).unwrap();
        assert!(
            store.describe().contains("read-only"),
            "{}",
            store.describe()
        );
        let erofs = |result: Result<(), IoError>, op: IoOp| match result {
            Err(e @ IoError::Device { .. }) => {
                assert_eq!(e.errno(), libc::EROFS, "{engine:?} {op}");
                assert!(matches!(e, IoError::Device { op: o, .. } if o == op), "{e}");
            }
            other => panic!("{engine:?} {op}: expected EROFS, got {other:?}"),
        };
        erofs(store.write_at(0, &[9; 512]), IoOp::Write);
        erofs(store.write_at_fua(512, &[9; 512]), IoOp::Write);
        erofs(store.discard(0, 4096), IoOp::Discard);
        erofs(store.resize(2 * STORE_BYTES), IoOp::Resize);
        let mut buf = vec![0_u8; 4096];
        store.read_at(0, &mut buf).unwrap();
        assert_eq!(buf, data, "{engine:?}");
        store.flush().unwrap();
        assert_eq!(store.size_bytes(), STORE_BYTES);
    }
}

#[test]
fn creating_never_truncates_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("existing");
    std::fs::write(&path, vec![4_u8; 4096]).unwrap();
    let opts = FileOptions {
        create_size: Some(STORE_BYTES),
        ..FileOptions::default()
    };
    match FileStore::open(&path, &opts) {
        Err(IoError::Device {
            op: IoOp::Open,
            source,
            ..
        }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::AlreadyExists);
        }
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), vec![4_u8; 4096]);
    let odd = FileOptions {
        create_size: Some(1000),
        ..FileOptions::default()
    };
    assert!(matches!(
        FileStore::open(&dir.path().join("odd"), &odd),
        Err(IoError::Misaligned {
            op: IoOp::Open,
            len: 1000,
            ..
        })
    ));
    assert!(!dir.path().join("odd").exists());
}

#[test]
fn only_files_and_block_devices_open() {
    match FileStore::open(Path::new("/dev/null"), &FileOptions::default()) {
        Err(IoError::Device {
            op: IoOp::Open,
            source,
            ..
        }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::InvalidInput);
        }
        other => panic!("a character device opened: {other:?}"),
    }
    assert!(matches!(
        FileStore::open(Path::new("/nonexistent/uvdo"), &FileOptions::default()),
        Err(IoError::Device { op: IoOp::Open, .. })
    ));
}

#[test]
fn discard_punches_zeros_and_resize_changes_the_size() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let store = create(&path, engine, false).unwrap();
        store.write_at(0, &[0xaa; 16384]).unwrap();
        store.discard(4096, 8192).unwrap();
        let mut buf = vec![0_u8; 16384];
        store.read_at(0, &mut buf).unwrap();
        assert!(buf[..4096].iter().all(|&b| b == 0xaa), "{engine:?}");
        assert!(buf[4096..12288].iter().all(|&b| b == 0), "{engine:?}");
        assert!(buf[12288..].iter().all(|&b| b == 0xaa), "{engine:?}");
        store.discard(0, 0).unwrap();

        store.resize(2 * STORE_BYTES).unwrap();
        assert_eq!(store.size_bytes(), 2 * STORE_BYTES);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * STORE_BYTES);
        store.write_at(2 * STORE_BYTES - 512, &[1; 512]).unwrap();
        store.resize(4096).unwrap();
        assert_eq!(store.size_bytes(), 4096);
        assert!(matches!(
            store.read_at(4096, &mut buf[..512]),
            Err(IoError::OutOfRange {
                size_bytes: 4096,
                ..
            })
        ));
    }
}

#[test]
fn large_transfers_complete() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("large");
        let opts = OpenOptions {
            engine,
            create_size: Some(8 << 20),
            ..OpenOptions::default()
        };
        let store = open_store(&path, &opts).unwrap();
        let data = pattern(8 << 20, 9);
        store.write_at_fua(0, &data).unwrap();
        let mut back = vec![0_u8; 8 << 20];
        store.read_at(0, &mut back).unwrap();
        assert!(back == data, "{engine:?}");
    }
}

#[test]
fn batches_larger_than_the_ring_complete() {
    if let Err(e) = uring::probe() {
        println!("io_uring NOT AVAILABLE here, batch test skipped: {e}");
        return;
    }
    for direct in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let opts = FileOptions {
            direct,
            create_size: Some(1 << 20),
            ..FileOptions::default()
        };
        let store = match UringStore::open(&dir.path().join("batch"), &opts) {
            Ok(store) => store,
            Err(e) if direct && e.errno() == libc::EINVAL => continue,
            Err(e) => panic!("{e}"),
        };
        let blocks: Vec<Vec<u8>> = (0..200_u8).map(|i| pattern(4096, i)).collect();
        let mut writes: Vec<(u64, &[u8])> = (0_u64..)
            .zip(&blocks)
            .map(|(i, block)| (i * 4096, block.as_slice()))
            .collect();
        // One unaligned buffer in the batch: bounced under O_DIRECT.
        let mut odd = vec![0_u8; 513];
        odd[1..].fill(0x5a);
        writes.push((200 * 4096 + 512, &odd[1..]));
        store.write_batch(&writes).unwrap();
        for (offset, data) in &writes {
            let mut back = vec![0_u8; data.len()];
            store.read_at(*offset, &mut back).unwrap();
            assert_eq!(&back[..], *data, "direct={direct} offset {offset}");
        }
        // A bad write anywhere in a batch refuses the whole batch before submitting.
        let zeros = [0_u8; 4096];
        let bad: Vec<(u64, &[u8])> = vec![(0, &zeros), (1 << 20, &zeros)];
        assert!(matches!(
            store.write_batch(&bad),
            Err(IoError::OutOfRange { offset, .. }) if offset == 1 << 20
        ));
        let mut back = vec![0_u8; 4096];
        store.read_at(0, &mut back).unwrap();
        assert_eq!(back, blocks[0], "direct={direct}");
    }
}

#[test]
fn auto_says_which_engine_it_chose() {
    let dir = tempfile::tempdir().unwrap();
    let opts = OpenOptions {
        create_size: Some(STORE_BYTES),
        ..OpenOptions::default()
    };
    let store = open(&dir.path().join("auto"), &opts).unwrap();
    println!("Engine::Auto chose: {}", store.describe());
    match uring::probe() {
        Ok(()) => {
            assert_eq!(store.engine(), EngineUsed::Uring);
            assert_eq!(store.uring_unavailable(), None);
        }
        Err(_) => {
            assert_eq!(store.engine(), EngineUsed::File);
            assert!(store.uring_unavailable().is_some());
        }
    }
    let file_opts = OpenOptions {
        engine: Engine::File,
        ..OpenOptions::default()
    };
    let file = open(&dir.path().join("auto"), &file_opts).unwrap();
    assert_eq!(file.engine(), EngineUsed::File);
    assert_eq!(file.describe(), "pread/pwrite");
}

#[test]
fn block_devices_report_size_and_discard_but_do_not_resize() {
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("backing");
    std::fs::File::create(&backing)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let device = match loop_device::LoopDevice::attach(&backing) {
        Ok(device) => device,
        Err(reason) => {
            println!("SKIPPED: no loop device: {reason}");
            return;
        }
    };
    for engine in engines() {
        let opts = FileOptions::default();
        let store: Box<dyn Storage> = match engine {
            Engine::Uring => Box::new(UringStore::open(&device.path, &opts).unwrap()),
            _ => {
                let store = FileStore::open(&device.path, &opts).unwrap();
                assert_eq!(store.kind(), FileKind::BlockDevice);
                Box::new(store)
            }
        };
        assert_eq!(store.size_bytes(), 4 << 20, "{engine:?}");
        store.write_at_fua(8192, &[7; 4096]).unwrap();
        let mut buf = vec![0_u8; 4096];
        store.read_at(8192, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 7), "{engine:?}");
        match store.discard(8192, 4096) {
            Ok(()) => {}
            Err(e) if e.errno() == libc::EOPNOTSUPP => println!("loop discard unsupported"),
            Err(e) => panic!("{engine:?} discard: {e}"),
        }
        assert!(matches!(
            store.resize(8 << 20),
            Err(IoError::Unsupported { op: IoOp::Resize })
        ));
    }
}
