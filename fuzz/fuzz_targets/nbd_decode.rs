#![no_main]
//! NBD decoders: any bytes decode or fail cleanly (never panic); what decodes re-encodes to
//! something that decodes to the same value.

use libfuzzer_sys::fuzz_target;
use uvdo_nbd::proto::handshake::ClientFlags;
use uvdo_nbd::proto::option::{ClientOption, OPTION_HEADER_BYTES, OptionHeader};
use uvdo_nbd::proto::option_reply::OptionReply;
use uvdo_nbd::proto::request::{REQUEST_HEADER_BYTES, Request};

fuzz_target!(|data: &[u8]| {
    let _ = ClientFlags::decode(data);
    let _ = OptionReply::decode(data);
    if let Ok(header) = OptionHeader::decode(&data[..data.len().min(OPTION_HEADER_BYTES)]) {
        let _ = header;
    }
    // Option data for every option code the first byte picks.
    if let Some((&code, rest)) = data.split_first() {
        if let Ok(option) = ClientOption::decode(u32::from(code % 16), rest) {
            let mut out = Vec::new();
            option.encode(&mut out);
            let again = ClientOption::decode(option.code(), &out[OPTION_HEADER_BYTES..]);
            assert_eq!(again.as_ref(), Ok(&option));
        }
    }
    if let Ok(request) = Request::decode(&data[..data.len().min(REQUEST_HEADER_BYTES)]) {
        let mut out = Vec::new();
        request.encode(&mut out);
        assert_eq!(Request::decode(&out), Ok(request));
    }
});
