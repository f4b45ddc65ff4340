//! Requests and stores the engine must refuse, with the error each gets, and block status.

mod common;

use std::sync::Arc;

use common::{BLOCK_U64, format_open, memory_store, read_block, unique_block, write_block};
use uvdo::{Extent, ExtentKind, OpenOptions, Volume, VolumeError};
use uvdo_io::Storage;

const LOGICAL_BLOCKS: u64 = 64;
const END: u64 = LOGICAL_BLOCKS * BLOCK_U64;

fn assert_invalid<T: std::fmt::Debug>(result: Result<T, VolumeError>, what: &str) {
    match result {
        Err(e @ VolumeError::InvalidArgument { .. }) => assert_eq!(e.errno(), libc::EINVAL),
        other => panic!("{what}: expected InvalidArgument, got {other:?}"),
    }
}

fn open_volume() -> (Arc<dyn Storage>, Volume) {
    let store = memory_store(4 << 20);
    let volume = format_open(
        &store,
        &common::tiny(LOGICAL_BLOCKS),
        &OpenOptions::default(),
    );
    (store, volume)
}

#[test]
fn out_of_range_requests_are_invalid_and_change_nothing() {
    let (_store, volume) = open_volume();
    assert_eq!(volume.logical_bytes(), END);
    let block = unique_block(1);
    let mut buf = vec![0; 4096];
    assert_invalid(volume.write(END, &block, false), "write at the end");
    assert_invalid(
        volume.write(END - 2048, &block, false),
        "write across the end",
    );
    assert_invalid(
        volume.write(u64::MAX - 511, &block, false),
        "write at u64::MAX",
    );
    assert_invalid(volume.read(END, &mut buf), "read at the end");
    assert_invalid(volume.read(END - 512, &mut buf), "read across the end");
    assert_invalid(
        volume.trim(END - BLOCK_U64, 2 * BLOCK_U64),
        "trim across the end",
    );
    assert_invalid(volume.trim(u64::MAX - 511, 1024), "trim overflowing u64");
    assert_invalid(volume.write_zeroes(END, 512), "zeroes at the end");
    assert_invalid(volume.block_status(END, BLOCK_U64), "status at the end");
    // The last block itself is in range.
    volume
        .write(END - BLOCK_U64, &block, true)
        .expect("last block");
    assert!(read_block(&volume, LOGICAL_BLOCKS - 1) == block);
    let stats = volume.stats();
    assert_eq!(stats.logical_blocks_used, 1, "{stats:#?}");
    common::assert_audit_clean(&volume, "after refused requests");
    volume.close().expect("close");
}

#[test]
fn misaligned_requests_are_invalid() {
    let (_store, volume) = open_volume();
    let mut buf = vec![0; 4096];
    assert_invalid(volume.write(1, &[1; 512], false), "write at byte 1");
    assert_invalid(volume.write(0, &[1; 100], false), "write of 100 bytes");
    assert_invalid(volume.write(4096 + 256, &[1; 512], false), "write at 4352");
    assert_invalid(volume.read(7, &mut buf), "read at byte 7");
    assert_invalid(volume.read(0, &mut buf[..1000]), "read of 1000 bytes");
    assert_invalid(volume.trim(100, 4096), "trim at byte 100");
    assert_invalid(volume.trim(0, 4000), "trim of 4000 bytes");
    assert_invalid(volume.write_zeroes(511, 512), "zeroes at byte 511");
    assert_invalid(volume.block_status(3, 4096), "status at byte 3");
    assert_eq!(volume.stats().logical_blocks_used, 0);
    volume.close().expect("close");
}

#[test]
fn format_refuses_an_existing_volume_unless_forced() {
    let (store, volume) = open_volume();
    write_block(&volume, 3, &unique_block(3));
    volume.close().expect("close");
    let config = common::tiny(LOGICAL_BLOCKS);
    match Volume::format(&*store, &config) {
        Err(e @ VolumeError::AlreadyFormatted { .. }) => assert_eq!(e.errno(), libc::EEXIST),
        other => panic!("format over a volume: expected AlreadyFormatted, got {other:?}"),
    }
    // Refused means untouched: the old volume still opens with its data.
    let volume = Volume::open(Arc::clone(&store), &OpenOptions::default()).expect("reopen");
    assert!(read_block(&volume, 3) == unique_block(3));
    let old_uuid = volume.uuid();
    volume.close().expect("close");

    let forced = uvdo::FormatConfig {
        force: true,
        ..config
    };
    Volume::format(&*store, &forced).expect("forced format");
    let volume = Volume::open(store, &OpenOptions::default()).expect("open the new volume");
    assert_ne!(volume.uuid(), old_uuid);
    assert_eq!(read_block(&volume, 3), [0; 4096], "the new volume is empty");
    let stats = volume.stats();
    assert_eq!((stats.logical_blocks_used, stats.data_blocks_used), (0, 0));
    common::assert_audit_clean(&volume, "after the forced format");
    volume.close().expect("close");
}

#[test]
fn format_refuses_an_ext4_signature_unless_forced() {
    let store = memory_store(4 << 20);
    let mut block = [0_u8; 4096];
    block[1080] = 0x53;
    block[1081] = 0xef;
    store.write_at(0, &block).expect("plant the ext4 magic");
    let config = common::tiny(LOGICAL_BLOCKS);
    match Volume::format(&*store, &config) {
        Err(VolumeError::AlreadyFormatted { what }) => {
            assert!(what.contains("ext"), "{what}");
        }
        other => panic!("format over ext4: expected AlreadyFormatted, got {other:?}"),
    }
    let mut after = [0_u8; 4096];
    store.read_at(0, &mut after).expect("read");
    assert!(after == block, "a refused format wrote to the store");
    Volume::format(
        &*store,
        &uvdo::FormatConfig {
            force: true,
            ..config
        },
    )
    .expect("forced format");
    Volume::open(store, &OpenOptions::default())
        .expect("open")
        .close()
        .expect("close");
}

#[test]
fn open_of_a_store_without_a_volume_is_not_a_volume() {
    let store = memory_store(4 << 20);
    match Volume::open(Arc::clone(&store), &OpenOptions::default()) {
        Err(e @ VolumeError::NotAVolume(_)) => assert_eq!(e.errno(), libc::EIO),
        other => panic!(
            "open of a zeroed store: expected NotAVolume, got {:?}",
            other.err()
        ),
    }
    store.write_at(0, &unique_block(9)).expect("garbage");
    match Volume::open(store, &OpenOptions::default()) {
        Err(VolumeError::NotAVolume(_)) => {}
        other => panic!(
            "open of garbage: expected NotAVolume, got {:?}",
            other.err()
        ),
    }
}

fn extent(first: u64, blocks: u64, kind: ExtentKind) -> Extent {
    Extent {
        offset: first * BLOCK_U64,
        len: blocks * BLOCK_U64,
        kind,
    }
}

#[test]
fn block_status_reports_unmapped_zero_and_data_runs() {
    let (store, volume) = open_volume();
    // 0..2 data, 2 zero (written zeros), 3 unmapped, 4..6 zero (write_zeroes), 6 data (a
    // partial write into an unmapped block), 7 zero (a partial trim of an unmapped block),
    // 8 unmapped (a trimmed data block), then unmapped to the end.
    let data: Vec<u8> = [unique_block(0), unique_block(1)].concat();
    volume.write(0, &data, false).expect("write");
    volume
        .write(2 * BLOCK_U64, &[0; 4096], false)
        .expect("zeros");
    volume
        .write_zeroes(4 * BLOCK_U64, 2 * BLOCK_U64)
        .expect("zeroes");
    volume
        .write(6 * BLOCK_U64 + 512, &[5; 512], false)
        .expect("partial");
    volume
        .trim(7 * BLOCK_U64 + 1024, 512)
        .expect("partial trim");
    write_block(&volume, 8, &unique_block(8));
    volume.trim(8 * BLOCK_U64, BLOCK_U64).expect("trim");
    let want = vec![
        extent(0, 2, ExtentKind::Data),
        extent(2, 1, ExtentKind::Zero),
        extent(3, 1, ExtentKind::Unmapped),
        extent(4, 2, ExtentKind::Zero),
        extent(6, 1, ExtentKind::Data),
        extent(7, 1, ExtentKind::Zero),
        extent(8, LOGICAL_BLOCKS - 8, ExtentKind::Unmapped),
    ];
    assert_eq!(volume.block_status(0, END).expect("status"), want);
    // A range starting and ending inside blocks reports byte-exact pieces.
    assert_eq!(
        volume
            .block_status(BLOCK_U64 + 512, 2 * BLOCK_U64)
            .expect("status"),
        vec![
            Extent {
                offset: BLOCK_U64 + 512,
                len: BLOCK_U64 - 512,
                kind: ExtentKind::Data
            },
            Extent {
                offset: 2 * BLOCK_U64,
                len: BLOCK_U64,
                kind: ExtentKind::Zero
            },
            Extent {
                offset: 3 * BLOCK_U64,
                len: 512,
                kind: ExtentKind::Unmapped
            },
        ]
    );
    volume.flush().expect("flush");
    assert_eq!(volume.stats().logical_blocks_used, 7);
    volume.close().expect("close");
    let volume = Volume::open(store, &OpenOptions::default()).expect("reopen");
    assert_eq!(
        volume.block_status(0, END).expect("status"),
        want,
        "after reopen"
    );
    volume.close().expect("close");
}
