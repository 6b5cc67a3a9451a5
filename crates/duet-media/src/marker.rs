//! A machine-readable frame marker painted into video frames: frame number + capture timestamp.
//!
//! The marker is a strip across the top of the frame: 4 rows of 40 cells, each cell black (luma 16) or
//! white (luma 235), encoding 160 bits, most significant first, row by row:
//! the frame number (64 bits), the capture timestamp in microseconds (64 bits) and a CRC-32 over the text
//! `DUET` followed by those 16 bytes (32 bits).
//!
//! Cell edges are fractions of the frame size (column `c` spans `c*W/40 .. (c+1)*W/40`, row `r` spans
//! `r*H/22 .. (r+1)*H/22`), so the marker survives any uniform rescaling of the frame (the lower rungs of the
//! bitrate ladder) as well as lossy coding: at 640x360 a cell is 16x16 pixels, one VP8 macroblock. The reader
//! averages the central half of each cell, refuses cells whose brightness is ambiguous and checks the CRC, so
//! a damaged marker reads as `None`, never as a wrong number (a random strip passes with probability 2^-32).

use crate::{MediaError, VideoFrame};

const COLUMNS: u32 = 40;
const ROWS: u32 = 4;
/// The strip's rows are `1 / ROW_DIVISOR` of the frame height each (square cells at 16:9).
const ROW_DIVISOR: u32 = 22;
const PAYLOAD_BYTES: usize = 20;
const BLACK: u8 = 16;
const WHITE: u8 = 235;
/// Cell means at or below this read as 0.
const ZERO_MAX: u32 = 100;
/// Cell means at or above this read as 1; between the two the marker is unreadable.
const ONE_MIN: u32 = 150;
const CRC_PREFIX: &[u8] = b"DUET";

/// The smallest frame width that can carry a marker (4-pixel cells).
pub const MARKER_MIN_WIDTH: u32 = COLUMNS * 4;
/// The smallest frame height that can carry a marker (4-pixel cells).
pub const MARKER_MIN_HEIGHT: u32 = ROW_DIVISOR * 4;

/// What a marker carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Marker {
    /// The sender's frame counter, from 0.
    pub frame_number: u64,
    /// The frame's capture time in microseconds on the sender's [`MediaClock`](crate::MediaClock).
    pub timestamp_us: u64,
}

/// The number of luma rows at the top of a frame of this height that the marker covers.
#[must_use]
pub fn marker_height(height: u32) -> u32 {
    ROWS * height / ROW_DIVISOR
}

/// Paints `marker` into the top strip of `frame` (luma cells, neutral chroma under them).
///
/// Fails if the frame is smaller than [`MARKER_MIN_WIDTH`] x [`MARKER_MIN_HEIGHT`].
pub fn write_marker(frame: &mut VideoFrame, marker: Marker) -> Result<(), MediaError> {
    let (width, height) = (frame.width(), frame.height());
    if width < MARKER_MIN_WIDTH || height < MARKER_MIN_HEIGHT {
        return Err(MediaError::InvalidArgument(format!(
            "a {width}x{height} frame is too small for a marker (minimum {MARKER_MIN_WIDTH}x{MARKER_MIN_HEIGHT})"
        )));
    }
    let payload = encode_payload(marker);
    let chroma_rows = marker_height(height).div_ceil(2) as usize;
    let chroma_width = frame.chroma_width() as usize;
    let (y, u, v) = frame.planes_mut();
    for (index, cell) in cells(width, height).enumerate() {
        let value = if bit(&payload, index) { WHITE } else { BLACK };
        for row in cell.y0..cell.y1 {
            let start = row as usize * width as usize;
            y[start + cell.x0 as usize..start + cell.x1 as usize].fill(value);
        }
    }
    u[..chroma_rows * chroma_width].fill(128);
    v[..chroma_rows * chroma_width].fill(128);
    Ok(())
}

/// Reads the marker from `frame`; `None` if the frame has none, or it is too damaged to trust.
#[must_use]
pub fn read_marker(frame: &VideoFrame) -> Option<Marker> {
    let (width, height) = (frame.width(), frame.height());
    if width < MARKER_MIN_WIDTH || height < MARKER_MIN_HEIGHT {
        return None;
    }
    let y = frame.y();
    let mut payload = [0u8; PAYLOAD_BYTES];
    for (index, cell) in cells(width, height).enumerate() {
        let (ix0, ix1) = inner(cell.x0, cell.x1);
        let (iy0, iy1) = inner(cell.y0, cell.y1);
        let mut sum = 0u32;
        for row in iy0..iy1 {
            let start = row as usize * width as usize;
            sum += y[start + ix0 as usize..start + ix1 as usize].iter().map(|&p| u32::from(p)).sum::<u32>();
        }
        let mean = sum / ((ix1 - ix0) * (iy1 - iy0));
        if mean >= ONE_MIN {
            payload[index / 8] |= 0x80 >> (index % 8);
        } else if mean > ZERO_MAX {
            return None;
        }
    }
    decode_payload(&payload)
}

#[derive(Debug, Clone, Copy)]
struct Cell {
    x0: u32,
    x1: u32,
    y0: u32,
    y1: u32,
}

fn cells(width: u32, height: u32) -> impl Iterator<Item = Cell> {
    (0..ROWS).flat_map(move |row| {
        (0..COLUMNS).map(move |col| Cell {
            x0: col * width / COLUMNS,
            x1: (col + 1) * width / COLUMNS,
            y0: row * height / ROW_DIVISOR,
            y1: (row + 1) * height / ROW_DIVISOR,
        })
    })
}

/// The central half of `[start, end)`, at least one pixel wide.
fn inner(start: u32, end: u32) -> (u32, u32) {
    let quarter = (end - start) / 4;
    (start + quarter, (end - quarter).max(start + quarter + 1))
}

fn bit(payload: &[u8; PAYLOAD_BYTES], index: usize) -> bool {
    payload[index / 8] & (0x80 >> (index % 8)) != 0
}

fn encode_payload(marker: Marker) -> [u8; PAYLOAD_BYTES] {
    let mut payload = [0u8; PAYLOAD_BYTES];
    payload[..8].copy_from_slice(&marker.frame_number.to_be_bytes());
    payload[8..16].copy_from_slice(&marker.timestamp_us.to_be_bytes());
    let crc = marker_crc(&payload[..16]);
    payload[16..].copy_from_slice(&crc.to_be_bytes());
    payload
}

fn decode_payload(payload: &[u8; PAYLOAD_BYTES]) -> Option<Marker> {
    let (number, rest) = payload.split_first_chunk::<8>()?;
    let (timestamp, crc) = rest.split_first_chunk::<8>()?;
    let (frame_number, timestamp_us) = (u64::from_be_bytes(*number), u64::from_be_bytes(*timestamp));
    let crc = u32::from_be_bytes(*crc.first_chunk::<4>()?);
    (crc == marker_crc(&payload[..16])).then_some(Marker { frame_number, timestamp_us })
}

fn marker_crc(data: &[u8]) -> u32 {
    !CRC_PREFIX.iter().chain(data).fold(!0u32, |crc, &byte| crc32_byte(crc, byte))
}

/// One byte of CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320).
fn crc32_byte(mut crc: u32, byte: u8) -> u32 {
    crc ^= u32::from(byte);
    for _ in 0..8 {
        crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marked(width: u32, height: u32, marker: Marker) -> VideoFrame {
        let mut frame = VideoFrame::black(width, height, 0).unwrap();
        write_marker(&mut frame, marker).unwrap();
        frame
    }

    #[test]
    fn crc_matches_the_standard_check_value() {
        let crc = !b"123456789".iter().fold(!0u32, |crc, &b| crc32_byte(crc, b));
        assert_eq!(crc, 0xCBF4_3926);
    }

    #[test]
    fn round_trips_at_many_sizes() {
        let marker = Marker { frame_number: 0x0123_4567_89AB_CDEF, timestamp_us: u64::MAX - 12345 };
        for (w, h) in [(160, 88), (320, 180), (640, 360), (641, 361), (1280, 720), (1920, 1080), (640, 480)] {
            assert_eq!(read_marker(&marked(w, h, marker)), Some(marker), "{w}x{h}");
        }
    }

    #[test]
    fn too_small_frames_have_no_marker() {
        let mut frame = VideoFrame::black(159, 120, 0).unwrap();
        assert!(write_marker(&mut frame, Marker { frame_number: 1, timestamp_us: 1 }).is_err());
        assert_eq!(read_marker(&frame), None);
    }

    #[test]
    fn unmarked_and_damaged_frames_read_as_none() {
        assert_eq!(read_marker(&VideoFrame::black(640, 360, 0).unwrap()), None);
        let grey = VideoFrame::new(640, 360, 0, vec![128; VideoFrame::buffer_size(640, 360).unwrap()]).unwrap();
        assert_eq!(read_marker(&grey), None);

        let marker = Marker { frame_number: 77, timestamp_us: 123_456_789 };
        // Flip one cell: the CRC rejects it.
        let mut frame = marked(640, 360, marker);
        let (y, _, _) = frame.planes_mut();
        for row in 0..16 {
            for col in 0..16 {
                y[row * 640 + 39 * 16 + col] ^= WHITE ^ BLACK;
            }
        }
        assert_eq!(read_marker(&frame), None);
        // Grey out one cell: ambiguous, rejected before the CRC.
        let mut frame = marked(640, 360, marker);
        let (y, _, _) = frame.planes_mut();
        for row in 20..30 {
            y[row * 640 + 100..row * 640 + 110].fill(125);
        }
        assert_eq!(read_marker(&frame), None);
    }

    #[test]
    fn survives_mild_noise() {
        let marker = Marker { frame_number: 5, timestamp_us: 6 };
        let mut frame = marked(320, 180, marker);
        let (y, _, _) = frame.planes_mut();
        for (i, p) in y.iter_mut().enumerate() {
            let noise = (i * 7919 % 41) as i16 - 20;
            *p = (i16::from(*p) + noise).clamp(0, 255) as u8;
        }
        assert_eq!(read_marker(&frame), Some(marker));
    }
}
