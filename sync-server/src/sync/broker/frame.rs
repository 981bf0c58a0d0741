//! MQTT framing: where one control packet ends, from its fixed header (a
//! type byte and a variable-length "remaining length", MQTT 5 §2.1).

use bytes::{Bytes, BytesMut};

/// MQTT 5 control packet types (the fixed header's high nibble).
pub const CONNECT: u8 = 1;
pub const CONNACK: u8 = 2;
pub const PUBLISH: u8 = 3;
pub const PUBREL: u8 = 6;
pub const SUBSCRIBE: u8 = 8;
pub const SUBACK: u8 = 9;
pub const AUTH: u8 = 15;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the remaining length is longer than four bytes")]
    BadLength,
    #[error("a packet of {0} bytes is larger than allowed")]
    TooLarge(usize),
}

/// The packet type of a frame (its first byte's high nibble).
pub fn packet_type(frame: &[u8]) -> u8 {
    frame.first().map_or(0, |b| b >> 4)
}

/// The length of the first complete frame of `buf`, `None` while more
/// bytes are needed. A frame longer than `max` bytes is an error.
pub fn frame_length(buf: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
    let mut remaining = 0usize;
    for i in 0..4 {
        let Some(byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let total = 2 + i + remaining;
            if total > max {
                return Err(FrameError::TooLarge(total));
            }
            return Ok((buf.len() >= total).then_some(total));
        }
    }
    Err(FrameError::BadLength)
}

/// Takes the first complete frame off `buf`, if there is one.
pub fn next_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, FrameError> {
    Ok(frame_length(buf, max)?.map(|n| buf.split_to(n).freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_cut_at_their_remaining_length() {
        // PINGREQ, then a PUBACK split in the middle.
        let mut buf = BytesMut::from(&[0xc0, 0x00, 0x40, 0x02, 0x00][..]);
        assert_eq!(next_frame(&mut buf, 100).unwrap().as_deref(), Some(&[0xc0, 0x00][..]));
        assert_eq!(next_frame(&mut buf, 100).unwrap(), None);
        buf.extend_from_slice(&[0x07]);
        assert_eq!(next_frame(&mut buf, 100).unwrap().as_deref(), Some(&[0x40, 0x02, 0x00, 0x07][..]));
        assert!(buf.is_empty());
        assert_eq!(packet_type(&[0x40, 0x02]), 4);
    }

    #[test]
    fn multi_byte_lengths_and_limits() {
        // 321 = 0xc1 0x02: a 2 + 1 + 321 byte frame.
        let mut frame = vec![0x30, 0xc1, 0x02];
        frame.resize(3 + 321, 0);
        assert_eq!(frame_length(&frame, 1000), Ok(Some(324)));
        assert_eq!(frame_length(&frame[..200], 1000), Ok(None));
        assert_eq!(frame_length(&frame, 300), Err(FrameError::TooLarge(324)));
        assert_eq!(frame_length(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], usize::MAX), Err(FrameError::BadLength));
        assert_eq!(frame_length(&[0x30, 0xff], 1000), Ok(None));
    }
}
