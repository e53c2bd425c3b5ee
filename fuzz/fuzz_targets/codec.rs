//! `fantasy_messages::decode` on arbitrary bytes, for every message type the
//! stack carries: it must return a `DecodeError`, never panic. What decodes
//! must encode, and decode again to the same value.
#![no_main]

use std::fmt::Debug;

use fantasy_messages::{
    Game, Message, ModelMetrics, ModelPublished, Outcome, Prediction, decode, encode,
};
use libfuzzer_sys::fuzz_target;

fn round_trip<M: Message + PartialEq + Debug>(bytes: &[u8]) {
    let first = match decode::<M>(bytes) {
        Ok(m) => m,
        Err(e) => {
            // The error's text and label are what consumers log and count.
            let _ = (e.to_string(), e.code());
            return;
        }
    };
    let encoded =
        encode(&first).unwrap_or_else(|e| panic!("a decoded {} does not encode: {e}", M::KIND));
    let again = decode::<M>(&encoded).unwrap_or_else(|e| {
        panic!(
            "an encoded {} does not decode: {e}\n{}",
            M::KIND,
            String::from_utf8_lossy(&encoded)
        )
    });
    assert_eq!(first, again, "{} changed on a round trip", M::KIND);
    assert!(!first.key().trim().is_empty(), "{}: empty key", M::KIND);
}

fuzz_target!(|data: &[u8]| {
    round_trip::<Game>(data);
    round_trip::<Outcome>(data);
    round_trip::<Prediction>(data);
    round_trip::<ModelPublished>(data);
    round_trip::<ModelMetrics>(data);
});
