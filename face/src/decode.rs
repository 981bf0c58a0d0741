//! Turning untrusted bytes into RGB pixels.
//!
//! Only JPEG, PNG and PGM/PPM are accepted. Dimensions are checked from the
//! header before any pixel is decoded, so a hostile file cannot make us
//! allocate gigabytes; grayscale, 16-bit and alpha images are converted to
//! 8-bit RGB (alpha composited over white); JPEG EXIF orientation is applied.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

use crate::error::DecodeError;

/// Largest accepted width or height.
pub const MAX_DIMENSION: u32 = 8192;
/// Smallest accepted width or height.
pub const MIN_DIMENSION: u32 = 16;
/// Cap on memory the decoder may allocate.
const MAX_ALLOC_BYTES: u64 = 512 * 1024 * 1024;

/// Decodes an encoded image (JPEG, PNG, PGM/PPM) into 8-bit RGB.
pub fn decode_image(bytes: &[u8]) -> Result<RgbImage, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    let format = image::guess_format(bytes).map_err(|_| DecodeError::UnknownFormat)?;
    let name = match format {
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Png => "PNG",
        ImageFormat::Pnm => "PNM",
        _ => return Err(DecodeError::UnknownFormat),
    };
    let corrupt = |e: image::ImageError| DecodeError::Corrupt { format: name, message: e.to_string() };
    if format == ImageFormat::Jpeg {
        check_jpeg_complete(bytes).map_err(|message| DecodeError::Corrupt { format: name, message })?;
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_DIMENSION);
    limits.max_image_height = Some(MAX_DIMENSION);
    limits.max_alloc = Some(MAX_ALLOC_BYTES);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| size_error(e, bytes, format).unwrap_or_else(&corrupt))?;
    let (width, height) = decoder.dimensions();
    check_dimensions(width, height)?;
    let orientation = decoder.orientation().map_err(corrupt)?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    image.apply_orientation(orientation);
    Ok(to_rgb(image))
}

/// Wraps a packed RGB buffer (a camera frame) after checking its size.
pub fn rgb_frame(width: u32, height: u32, data: Vec<u8>) -> Result<RgbImage, DecodeError> {
    check_dimensions(width, height)?;
    let expected = width as usize * height as usize * 3;
    let actual = data.len();
    RgbImage::from_raw(width, height, data).ok_or(DecodeError::FrameSize { width, height, expected, actual })
}

/// Walks the JPEG marker structure to the end-of-image marker. The pixel
/// decoder fills a truncated file with grey and reports success; a face cut in
/// half must be refused instead. Data after EOI (appended video, padding) is
/// allowed.
fn check_jpeg_complete(bytes: &[u8]) -> Result<(), String> {
    const TRUNCATED: &str = "truncated: the file ends before its end-of-image marker";
    let mut at = 2; // after SOI
    loop {
        // Find the next marker: 0xFF followed by a non-fill, non-zero byte.
        while at < bytes.len() && bytes[at] != 0xFF {
            at += 1;
        }
        while at < bytes.len() && bytes[at] == 0xFF {
            at += 1;
        }
        let Some(&marker) = bytes.get(at) else {
            return Err(TRUNCATED.into());
        };
        at += 1;
        match marker {
            0xD9 => return Ok(()),
            // Stuffed zero or restart markers inside entropy-coded data.
            0x00 | 0xD0..=0xD7 | 0x01 => continue,
            _ => {
                let (Some(&hi), Some(&lo)) = (bytes.get(at), bytes.get(at + 1)) else {
                    return Err(TRUNCATED.into());
                };
                let length = usize::from(u16::from_be_bytes([hi, lo]));
                if length < 2 {
                    return Err(format!("segment 0xFF{marker:02X} has an invalid length {length}"));
                }
                if at + length > bytes.len() {
                    return Err(TRUNCATED.into());
                }
                // After a segment header comes either the next marker or, for
                // SOS, entropy-coded data that the search above skips over.
                at += length;
            }
        }
    }
}

fn check_dimensions(width: u32, height: u32) -> Result<(), DecodeError> {
    if width > MAX_DIMENSION || height > MAX_DIMENSION {
        return Err(DecodeError::TooLarge { width, height, max: MAX_DIMENSION });
    }
    if width < MIN_DIMENSION || height < MIN_DIMENSION {
        return Err(DecodeError::TooSmall { width, height, min: MIN_DIMENSION });
    }
    Ok(())
}

/// The decoder refuses oversized images through its limits; report those as
/// `TooLarge` with the real dimensions rather than as corruption.
fn size_error(error: image::ImageError, bytes: &[u8], format: ImageFormat) -> Result<DecodeError, image::ImageError> {
    if !matches!(error, image::ImageError::Limits(_)) {
        return Err(error);
    }
    let dims = ImageReader::with_format(Cursor::new(bytes), format).into_dimensions();
    match dims {
        Ok((width, height)) => Ok(DecodeError::TooLarge { width, height, max: MAX_DIMENSION }),
        Err(_) => Err(error),
    }
}

fn to_rgb(image: DynamicImage) -> RgbImage {
    if !image.color().has_alpha() {
        return image.to_rgb8();
    }
    let rgba = image.to_rgba8();
    let (width, height) = rgba.dimensions();
    let mut out = RgbImage::new(width, height);
    for (dst, src) in out.pixels_mut().zip(rgba.pixels()) {
        let alpha = u32::from(src[3]);
        for c in 0..3 {
            let blended = (u32::from(src[c]) * alpha + 255 * (255 - alpha) + 127) / 255;
            dst[c] = blended as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, ImageEncoder, Luma, Rgba, RgbaImage};

    fn encode_png(image: &DynamicImage) -> Vec<u8> {
        let mut out = Vec::new();
        image.write_to(&mut Cursor::new(&mut out), ImageFormat::Png).unwrap();
        out
    }

    #[test]
    fn empty_bytes_are_refused() {
        assert!(matches!(decode_image(&[]), Err(DecodeError::Empty)));
    }

    #[test]
    fn text_is_not_an_image() {
        let err = decode_image(b"hello, this is not an image").unwrap_err();
        assert!(matches!(err, DecodeError::UnknownFormat), "{err}");
    }

    #[test]
    fn gif_is_refused_as_unknown_format() {
        assert!(matches!(decode_image(b"GIF89a\x01\x00\x01\x00\x00\x00\x00"), Err(DecodeError::UnknownFormat)));
    }

    #[test]
    fn truncated_png_is_corrupt() {
        let png = encode_png(&DynamicImage::ImageRgb8(RgbImage::new(64, 64)));
        let err = decode_image(&png[..png.len() / 2]).unwrap_err();
        assert!(matches!(err, DecodeError::Corrupt { format: "PNG", .. }), "{err}");
    }

    #[test]
    fn jpeg_with_data_after_its_end_marker_is_accepted() {
        let mut jpeg = Vec::new();
        DynamicImage::ImageRgb8(RgbImage::new(32, 32))
            .write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg)
            .unwrap();
        jpeg.extend_from_slice(b"appended motion-photo bytes \xFF\xDA");
        assert!(decode_image(&jpeg).is_ok());
        let cut = &jpeg[..jpeg.len() - 40];
        assert!(matches!(decode_image(cut), Err(DecodeError::Corrupt { format: "JPEG", .. })));
    }

    #[test]
    fn truncated_jpeg_header_is_corrupt() {
        let err = decode_image(&[0xFF, 0xD8, 0xFF, 0xE0, 0x00]).unwrap_err();
        assert!(matches!(err, DecodeError::Corrupt { format: "JPEG", .. }), "{err}");
    }

    #[test]
    fn grayscale_pgm_becomes_rgb() {
        let pgm = b"P5\n20 20\n255\n".iter().copied().chain(std::iter::repeat_n(77u8, 400)).collect::<Vec<_>>();
        let image = decode_image(&pgm).unwrap();
        assert_eq!(image.dimensions(), (20, 20));
        assert_eq!(image.get_pixel(3, 3).0, [77, 77, 77]);
    }

    #[test]
    fn transparent_png_is_composited_over_white() {
        let mut rgba = RgbaImage::new(32, 32);
        rgba.put_pixel(0, 0, Rgba([10, 20, 30, 255]));
        let image = decode_image(&encode_png(&DynamicImage::ImageRgba8(rgba))).unwrap();
        assert_eq!(image.get_pixel(0, 0).0, [10, 20, 30]);
        assert_eq!(image.get_pixel(5, 5).0, [255, 255, 255]);
    }

    #[test]
    fn tiny_image_is_refused() {
        let gray = GrayImage::from_pixel(4, 4, Luma([0]));
        let err = decode_image(&encode_png(&DynamicImage::ImageLuma8(gray))).unwrap_err();
        assert!(matches!(err, DecodeError::TooSmall { width: 4, .. }), "{err}");
    }

    #[test]
    fn huge_dimensions_are_refused_before_decoding() {
        // A valid PNG header claiming 20000x20000 pixels, with no pixel data.
        let mut header = Vec::new();
        image::codecs::png::PngEncoder::new(&mut header)
            .write_image(&[0u8; 3], 1, 1, image::ExtendedColorType::Rgb8)
            .unwrap();
        // Patch the IHDR width/height (bytes 16..24) and its CRC.
        header[16..20].copy_from_slice(&20000u32.to_be_bytes());
        header[20..24].copy_from_slice(&20000u32.to_be_bytes());
        let crc = crc32(&header[12..29]);
        header[29..33].copy_from_slice(&crc.to_be_bytes());
        let err = decode_image(&header).unwrap_err();
        assert!(matches!(err, DecodeError::TooLarge { width: 20000, .. }), "{err}");
    }

    #[test]
    fn raw_frame_of_wrong_length_is_refused() {
        let err = rgb_frame(32, 32, vec![0; 10]).unwrap_err();
        assert!(matches!(err, DecodeError::FrameSize { expected: 3072, actual: 10, .. }));
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &byte in data {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
}
