#![no_main]
//! A recovery journal block: any bytes decode or fail cleanly; valid blocks round-trip and
//! decode again at their own sequence.

use libfuzzer_sys::fuzz_target;
use uvdo_format::recovery_journal::{self, JournalRegion, RecoveryJournalBlock};
use uvdo_format::{BlockType, Pbn};

const REGION: JournalRegion = JournalRegion { start: Pbn(3), blocks: 64 };

fuzz_target!(|data: &[u8]| {
    let (block, expected) = uvdo_fuzz::shape(
        data,
        BlockType::RecoveryJournal,
        recovery_journal::VERSION,
        |sequence| REGION.pbn_of(sequence),
    );
    if let Ok(decoded) = RecoveryJournalBlock::decode(&block, expected, REGION) {
        let sequence = uvdo_fuzz::sequence(&block);
        assert!(RecoveryJournalBlock::decode_at(&block, expected, REGION, sequence).is_ok());
        uvdo_fuzz::assert_round_trip(&block, |out| decoded.encode(uvdo_fuzz::NONCE, REGION, out));
    }
});
