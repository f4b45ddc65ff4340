//! Running out of physical space: the write that finds no free block fails with `NoSpace` and
//! changes nothing; the volume stays normal; trimming (once committed) makes room again.

mod common;

use common::{BLOCK_U64, assert_audit_clean, format_open, memory_store};
use common::{read_block, unique_block, write_block};
use uvdo::{OpenOptions, Volume, VolumeError};

/// Writes unique blocks to LBN 0, 1, ... until one fails; returns how many succeeded.
fn fill(volume: &Volume, limit: u64) -> u64 {
    for lbn in 0..limit {
        match volume.write(lbn * BLOCK_U64, &unique_block(lbn), false) {
            Ok(()) => {}
            Err(VolumeError::NoSpace { .. }) => return lbn,
            Err(e) => panic!("write of LBN {lbn}: {e}"),
        }
    }
    panic!("{limit} unique blocks fit: the store is bigger than the test thinks");
}

fn assert_no_space(result: Result<(), VolumeError>, what: &str) {
    match result {
        Err(VolumeError::NoSpace { .. }) => {}
        other => panic!("{what}: expected NoSpace, got {other:?}"),
    }
}

#[test]
fn full_volume_refuses_new_data_then_recovers_after_trim() {
    let store = memory_store(2 << 20);
    let config = common::tiny(4096);
    let summary = Volume::format(&*store, &config).expect("format");
    let volume =
        Volume::open(std::sync::Arc::clone(&store), &OpenOptions::default()).expect("open");
    let written = fill(&volume, 4096);
    assert!(written > 0);
    let full = volume.stats();
    let tree_blocks = full.overhead_blocks_used - summary.overhead_blocks;
    assert_eq!(
        written + tree_blocks,
        summary.data_blocks,
        "every data block holds data or a tree page once full: {full:#?}"
    );
    assert_eq!(full.free_blocks, 0, "{full:#?}");
    assert!(full.no_space_error_count > 0, "{full:#?}");
    assert_eq!(full.operating_mode, "normal");
    assert_eq!(volume.operating_mode(), uvdo::OperatingMode::Normal);

    // The failed LBN is still unmapped; an overwrite that needs a new block fails and leaves
    // the old contents; duplicates and zeros need no block and still succeed.
    assert_eq!(read_block(&volume, written), [0; 4096]);
    assert_no_space(
        volume.write(3 * BLOCK_U64, &unique_block(1 << 40), false),
        "overwrite of LBN 3",
    );
    assert!(read_block(&volume, 3) == unique_block(3), "LBN 3 changed");
    write_block(&volume, written, &unique_block(5));
    volume
        .write_zeroes((written + 1) * BLOCK_U64, BLOCK_U64)
        .expect("zeroes");
    for lbn in 0..written {
        assert!(read_block(&volume, lbn) == unique_block(lbn), "LBN {lbn}");
    }
    assert_audit_clean(&volume, "when full");

    // A trim frees nothing until it is committed.
    let trimmed = 4;
    volume
        .trim(10 * BLOCK_U64, trimmed * BLOCK_U64)
        .expect("trim");
    volume.flush().expect("flush");
    for i in 0..trimmed {
        let lbn = 10 + i;
        assert_eq!(read_block(&volume, lbn), [0; 4096], "trimmed LBN {lbn}");
        write_block(&volume, lbn, &unique_block((1 << 41) + i));
    }
    assert_no_space(
        volume.write(20 * BLOCK_U64, &unique_block(1 << 42), false),
        "write once the freed blocks are used again",
    );
    assert!(read_block(&volume, 20) == unique_block(20));
    volume.flush().expect("flush");
    assert_audit_clean(&volume, "after refilling");
    volume.close().expect("close");

    let volume = Volume::open(store, &OpenOptions::default()).expect("reopen");
    for lbn in 0..written {
        let want = match lbn {
            10..14 => unique_block((1 << 41) + lbn - 10),
            _ => unique_block(lbn),
        };
        assert!(read_block(&volume, lbn) == want, "LBN {lbn} after reopen");
    }
    assert!(read_block(&volume, written) == unique_block(5));
    assert_eq!(volume.stats().free_blocks, 0);
    assert_audit_clean(&volume, "after reopen");
    volume.close().expect("close");
}

/// Overwrites free their old blocks only at commit; a volume that is full except for such
/// pending frees must get them back at the next flush, not leak them.
#[test]
fn overwrites_of_a_full_volume_reuse_blocks_after_flush() {
    let store = memory_store(2 << 20);
    let volume = format_open(&store, &common::tiny(4096), &OpenOptions::default());
    let written = fill(&volume, 4096);
    for round in 1..=3_u64 {
        // Trim half, flush, write the half again with new data: space must suffice each time.
        volume.trim(0, (written / 2) * BLOCK_U64).expect("trim");
        volume.flush().expect("flush");
        for lbn in 0..written / 2 {
            write_block(&volume, lbn, &unique_block((round << 32) + lbn));
        }
        volume.flush().expect("flush");
        assert_eq!(volume.stats().free_blocks, 0, "round {round}");
        assert_audit_clean(&volume, "after a round");
    }
    for lbn in 0..written {
        let want = if lbn < written / 2 {
            unique_block((3 << 32) + lbn)
        } else {
            unique_block(lbn)
        };
        assert!(read_block(&volume, lbn) == want, "LBN {lbn}");
    }
    volume.close().expect("close");
}

/// A write to an LBN whose block map pages do not exist yet needs a data block and then up
/// to four tree page pairs; on a nearly full volume any of those may be what runs out.
/// Whatever was allocated before the failure must be accounted for (the audit), the LBN must
/// stay unmapped, and the write must succeed once enough is freed.
#[test]
fn no_space_while_allocating_tree_pages_leaks_nothing() {
    // Past the first level-1 page (812 * 812 LBNs): a new level-1 page and a new leaf.
    let far = 812 * 812 + 5;
    let store = memory_store(2 << 20);
    let volume = format_open(&store, &common::tiny(far + 812), &OpenOptions::default());
    let written = fill(&volume, 4096);
    // Nothing to unmap, so a trim of a far LBN needs no page; zeroing one needs pages.
    volume
        .trim(far * BLOCK_U64, BLOCK_U64)
        .expect("trim of an unmapped far LBN");
    assert_no_space(
        volume.write_zeroes((far + 1) * BLOCK_U64, BLOCK_U64),
        "write-zeroes of a far LBN on a full volume",
    );
    assert_audit_clean(&volume, "after the refused write-zeroes");
    let data = unique_block(1 << 50);
    let mut freed = 0;
    loop {
        match volume.write(far * BLOCK_U64, &data, false) {
            Ok(()) => break,
            Err(VolumeError::NoSpace { .. }) => {}
            Err(e) => panic!("far write with {freed} blocks freed: {e}"),
        }
        let when = format!("after a refused far write with {freed} blocks freed");
        assert_eq!(read_block(&volume, far), [0; 4096], "{when}");
        assert_eq!(
            volume.operating_mode(),
            uvdo::OperatingMode::Normal,
            "{when}"
        );
        volume.flush().expect("flush");
        let stats = volume.stats();
        assert_eq!(
            stats.logical_blocks_used,
            written - freed,
            "{when}: {stats:#?}"
        );
        assert_audit_clean(&volume, &when);
        assert!(
            freed < 12,
            "12 freed blocks must hold one data block and two tree pairs"
        );
        volume
            .trim((100 + freed) * BLOCK_U64, BLOCK_U64)
            .expect("trim");
        volume.flush().expect("flush");
        freed += 1;
    }
    assert!(freed > 0, "the volume was not full");
    assert!(read_block(&volume, far) == data);
    volume.flush().expect("flush");
    assert_audit_clean(&volume, "after the far write");
    volume.close().expect("close");
    let volume = Volume::open(store, &OpenOptions::default()).expect("reopen");
    assert!(read_block(&volume, far) == data, "far LBN after reopen");
    for lbn in (0..written).filter(|l| !(100..100 + freed).contains(l)) {
        assert!(
            read_block(&volume, lbn) == unique_block(lbn),
            "LBN {lbn} after reopen"
        );
    }
    assert_audit_clean(&volume, "after reopen");
    volume.close().expect("close");
}

/// Blocks freed by a trim that is not committed yet come free when an allocation needs them:
/// the write that finds no free block commits first, instead of failing with `NoSpace`.
#[test]
fn a_full_volume_commits_to_reuse_blocks_freed_since_the_last_commit() {
    let store = memory_store(2 << 20);
    Volume::format(&*store, &common::tiny(4096)).expect("format");
    let volume =
        Volume::open(std::sync::Arc::clone(&store), &OpenOptions::default()).expect("open");
    let written = fill(&volume, 4096);
    volume.flush().expect("flush");
    assert_eq!(volume.stats().free_blocks, 0);
    volume.trim(10 * BLOCK_U64, 4 * BLOCK_U64).expect("trim");
    for i in 0..4 {
        write_block(&volume, 10 + i, &unique_block((1 << 43) + i));
    }
    assert_no_space(
        volume.write(written * BLOCK_U64, &unique_block(1 << 44), false),
        "a fifth new block",
    );
    for i in 0..4 {
        assert!(read_block(&volume, 10 + i) == unique_block((1 << 43) + i));
    }
    volume.flush().expect("flush");
    assert_audit_clean(&volume, "after reusing trimmed blocks");
    volume.close().expect("close");
}
