//! The fanout's client frames: `protocol::parse_op` and `Channel::parse` on
//! arbitrary text (WebSocket text frames are UTF-8). Errors, never panics;
//! a parsed channel prints back to itself; the frames built from what a
//! client sent are JSON.
#![no_main]

use fantasy_fuzz::protocol::{
    Channel, ClientOp, OpError, error_frame, parse_op, pong_frame, subscribed_frame,
    unsubscribed_frame,
};
use libfuzzer_sys::fuzz_target;

fn is_json(frame: &str) {
    if let Err(e) = serde_json::from_str::<serde_json::Value>(frame) {
        panic!("frame is not JSON ({e}): {frame}");
    }
}

fn check_channel(s: &str) {
    let Some(channel) = Channel::parse(s) else {
        return;
    };
    let name = channel.name();
    assert_eq!(name, s, "a channel prints as it was written");
    assert_eq!(Channel::parse(&name), Some(channel.clone()));
    assert!(channel.allowed_by(&["*".to_owned()]));
    assert!(channel.allowed_by(std::slice::from_ref(&name)));
    is_json(unsubscribed_frame(&name).as_str());
    is_json(subscribed_frame(&name, true, &[3, -1, 7]).as_str());
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_channel(text);
    match parse_op(text) {
        Ok(ClientOp::Subscribe { channels, since }) => {
            channels.iter().for_each(|c| check_channel(c));
            for (channel, positions) in &since {
                check_channel(channel);
                assert!(positions.0.keys().all(|p| (0..1 << 16).contains(p)));
            }
        }
        Ok(ClientOp::Unsubscribe { channels }) => channels.iter().for_each(|c| check_channel(c)),
        Ok(ClientOp::Ping { id }) => is_json(pong_frame(id.as_ref()).as_str()),
        Err(OpError::Malformed(why)) => is_json(error_frame("malformed", &why).as_str()),
        Err(OpError::UnknownOp(op)) => {
            assert!(!matches!(op.as_str(), "subscribe" | "unsubscribe" | "ping"));
            is_json(error_frame("unknown_op", &op).as_str());
        }
    }
});
