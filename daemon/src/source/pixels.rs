//! Camera pixel formats to RGB: the part of camera support that can be
//! tested without a camera.

use facegate_face::RgbImage;

/// A raw camera buffer that does not match its declared format.
#[derive(Debug, thiserror::Error)]
pub enum PixelError {
    #[error("a {width}x{height} YUYV frame needs {expected} bytes, got {actual}")]
    Size { width: u32, height: u32, expected: usize, actual: usize },
    #[error("YUYV frames need an even width, got {0}")]
    OddWidth(u32),
}

/// Converts packed YUYV 4:2:2 (BT.601, limited range: what UVC cameras send)
/// to RGB.
pub fn yuyv_to_rgb(width: u32, height: u32, data: &[u8]) -> Result<RgbImage, PixelError> {
    if !width.is_multiple_of(2) {
        return Err(PixelError::OddWidth(width));
    }
    let expected = width as usize * height as usize * 2;
    if data.len() < expected {
        return Err(PixelError::Size { width, height, expected, actual: data.len() });
    }
    let mut rgb = Vec::with_capacity(width as usize * height as usize * 3);
    for quad in data[..expected].chunks_exact(4) {
        let (y0, u, y1, v) = (quad[0], quad[1], quad[2], quad[3]);
        rgb.extend_from_slice(&yuv_pixel(y0, u, v));
        rgb.extend_from_slice(&yuv_pixel(y1, u, v));
    }
    RgbImage::from_raw(width, height, rgb).ok_or(PixelError::Size { width, height, expected, actual: data.len() })
}

/// BT.601 limited-range YCbCr → RGB in fixed point.
fn yuv_pixel(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = (i32::from(y) - 16).max(0) * 298;
    let d = i32::from(u) - 128;
    let e = i32::from(v) - 128;
    let clamp = |x: i32| ((x + 128) >> 8).clamp(0, 255) as u8;
    [clamp(c + 409 * e), clamp(c - 100 * d - 208 * e), clamp(c + 516 * d)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuyv_black_white_and_red_convert_to_rgb() {
        // Y=16 is black, Y=235 white (limited range); red is Y=81 U=90 V=240.
        let data = [16, 128, 235, 128, 81, 90, 81, 240];
        let rgb = yuyv_to_rgb(4, 1, &data).unwrap();
        assert_eq!(rgb.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(rgb.get_pixel(1, 0).0, [255, 255, 255]);
        let red = rgb.get_pixel(2, 0).0;
        assert!(red[0] > 240 && red[1] < 15 && red[2] < 15, "{red:?}");
    }

    #[test]
    fn short_or_odd_yuyv_buffers_are_refused() {
        assert!(matches!(yuyv_to_rgb(4, 2, &[0; 10]), Err(PixelError::Size { expected: 16, .. })));
        assert!(matches!(yuyv_to_rgb(3, 2, &[0; 12]), Err(PixelError::OddWidth(3))));
    }
}
